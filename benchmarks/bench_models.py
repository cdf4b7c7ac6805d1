"""The demo models on minidlc's llvm target next to onnxruntime: same thread
count, interleaved in one process (see minidlc/benchmarking.py).

    python benchmarks/bench_models.py [--models mlp,tfblock,convnet] [--threads N] [--rounds 20]

Prints, per model: compile time with a cold cache, ms per run for each,
ratio = onnxruntime_ms / minidlc_ms (above 1: minidlc is faster), the arena
size against the lower bound of a perfect liveness plan (the largest total
size of tensors alive at one step), and the weight bytes the kernels read
against the model's constants (packed weights replace the originals).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
import numpy as np  # noqa: E402

import minidlc  # noqa: E402
import minidlc.backends.llvm.jit as llvm_jit  # noqa: E402
from minidlc.benchmarking import onnxruntime_session, time_interleaved  # noqa: E402
from minidlc.demo_models import build_model  # noqa: E402
from minidlc.passes.options import constant_bytes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,tfblock,convnet")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=20, help="turns each runner takes (3 runs per turn)")
    ap.add_argument("--ort-spinning", action="store_true",
                    help="also time onnxruntime alone with its spin-waiting threads on (column ort spin ms)")
    args = ap.parse_args()
    llvm_jit.CACHE_DIR = Path(tempfile.mkdtemp(prefix="minidlc-bench-"))  # a cold cache: real compile times
    print(f"threads: {args.threads}  cpu: {cpu_name()}")
    print(f"{'model':<9}{'compile s':>10}{'minidlc ms':>12}{'ort ms':>9}{'ratio':>7}"
          f"{'arena KiB':>11}{'bound KiB':>11}{'weights KiB':>13}{'model KiB':>11}"
          + (f"{'ort spin ms':>15}" if args.ort_spinning else ""))
    for name in args.models.split(","):
        model = build_model(name)
        t = time.perf_counter()
        m = minidlc.compile(model, target="llvm", threads=args.threads)
        compile_s = time.perf_counter() - t
        sess = onnxruntime_session(model.SerializeToString(), args.threads)
        feeds = m.random_inputs()
        for got, want in zip(m.run(feeds).values(), sess.run(None, feeds)):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
        ms = time_interleaved({"minidlc": lambda: m.run(feeds), "ort": lambda: sess.run(None, feeds)},
                              rounds=args.rounds, budget_s=60)
        if args.ort_spinning:  # by itself: its spinning threads would slow whatever runs beside it
            spin = onnxruntime_session(model.SerializeToString(), args.threads, spinning=True)
            ms["ort spin"] = time_interleaved({"ort spin": lambda: spin.run(None, feeds)}, rounds=args.rounds)["ort spin"]
        plan = m.program.plan
        model_bytes = constant_bytes(m.source)
        print(f"{name:<9}{compile_s:>10.2f}{ms['minidlc']:>12.3f}{ms['ort']:>9.3f}{ms['ort'] / ms['minidlc']:>7.2f}"
              f"{plan.size / 1024:>11.0f}{plan.lower_bound() / 1024:>11.0f}{m.program.weight_bytes() / 1024:>13.0f}"
              f"{model_bytes / 1024:>11.0f}" + (f"{ms['ort spin']:>15.3f}" if args.ort_spinning else ""))


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
