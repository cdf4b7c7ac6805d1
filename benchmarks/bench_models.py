"""The demo models on minidlc's llvm target next to onnxruntime, same thread count, interleaved.

    python benchmarks/bench_models.py [--models mlp,tfblock,convnet] [--threads N] [--repeat 20]

Prints compile time, ms per run for each, and ratio = onnxruntime_ms / minidlc_ms
(above 1: minidlc is faster).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))
import minidlc  # noqa: E402


def main() -> None:
    import onnxruntime as ort
    from models import build_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,tfblock,convnet")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    print(f"{'model':<10}{'compile s':>10}{'minidlc ms':>12}{'ort ms':>10}{'ratio':>8}")
    for name in args.models.split(","):
        model = build_model(name)
        t = time.perf_counter()
        m = minidlc.compile(model, target="llvm", threads=args.threads)
        compile_s = time.perf_counter() - t
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feeds = m.random_inputs()
        ours, theirs = m.run(feeds), sess.run(None, feeds)
        for got, want in zip(ours.values(), theirs):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
        tm, to = [], []
        for _ in range(args.repeat):  # interleaved, so both see the same machine state
            t = time.perf_counter()
            m.run(feeds)
            tm.append(time.perf_counter() - t)
            t = time.perf_counter()
            sess.run(None, feeds)
            to.append(time.perf_counter() - t)
        ms_m, ms_o = 1e3 * float(np.median(tm)), 1e3 * float(np.median(to))
        print(f"{name:<10}{compile_s:>10.2f}{ms_m:>12.3f}{ms_o:>10.3f}{ms_o / ms_m:>8.2f}")


if __name__ == "__main__":
    main()
