"""The demo models on minidlc's CPU targets (llvm, numba) next to onnxruntime:
same thread count, interleaved in one process (see minidlc/benchmarking.py).

    python benchmarks/bench_models.py [--models mlp,tfblock,convnet,mobilenet,squeezenet,resnet]
                                      [--targets llvm,numba]
                                      [--threads N] [--rounds 20] [--ort-spinning]

Prints, per model: each target's compile time with a cold cache and ms per
run, onnxruntime's ms, ratio = onnxruntime_ms / target_ms (above 1: minidlc is
faster), and the geometric mean of each ratio over the models. Then the
memory plan (the loop program's, so the same for every target): the arena
against the lower bound of a perfect liveness plan (the largest total size of
tensors alive at one step), and the weight bytes the kernels read against the
model's constants (packed weights replace the originals).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
import numpy as np  # noqa: E402

import minidlc  # noqa: E402
from minidlc.backends import cache  # noqa: E402
from minidlc.benchmarking import onnxruntime_session, time_interleaved  # noqa: E402
from minidlc.demo_models import build_model  # noqa: E402
from minidlc.passes.options import constant_bytes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,tfblock,convnet,mobilenet,squeezenet,resnet")
    ap.add_argument("--targets", default="llvm,numba")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=20, help="turns each runner takes (3 runs per turn)")
    ap.add_argument("--ort-spinning", action="store_true",
                    help="also time onnxruntime alone with its spin-waiting threads on (column ort spin ms)")
    args = ap.parse_args()
    targets = args.targets.split(",")
    cache.CACHE_DIR = Path(tempfile.mkdtemp(prefix="minidlc-bench-"))  # a cold cache: real compile times
    print(f"threads: {args.threads}  cpu: {cpu_name()}")
    print(f"{'model':<9}" + "".join(f"{t + ' compile s':>17}{t + ' ms':>11}" for t in targets) + f"{'ort ms':>9}"
          + "".join(f"{'ort/' + t:>11}" for t in targets) + (f"{'ort spin ms':>13}" if args.ort_spinning else ""))
    ratios: dict[str, list[float]] = {t: [] for t in targets}
    plans = []
    for name in args.models.split(","):
        model = build_model(name)
        compiled, compile_s = {}, {}
        for t in targets:
            start = time.perf_counter()
            compiled[t] = minidlc.compile(model, target=t, threads=args.threads)
            compile_s[t] = time.perf_counter() - start
        sess = onnxruntime_session(model.SerializeToString(), args.threads)
        feeds = compiled[targets[0]].random_inputs()
        want = sess.run(None, feeds)
        for t, m in compiled.items():
            for got, ref in zip(m.run(feeds).values(), want):
                np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3, err_msg=f"{name} on {t}")
        runners = {t: (lambda m=m: m.run(feeds)) for t, m in compiled.items()}
        ms = time_interleaved({**runners, "ort": lambda: sess.run(None, feeds)}, rounds=args.rounds, budget_s=90)
        if args.ort_spinning:  # by itself: its spinning threads would slow whatever runs beside it
            spin = onnxruntime_session(model.SerializeToString(), args.threads, spinning=True)
            ms["ort spin"] = time_interleaved({"ort spin": lambda: spin.run(None, feeds)}, rounds=args.rounds)["ort spin"]
        for t in targets:
            ratios[t].append(ms["ort"] / ms[t])
        print(f"{name:<9}" + "".join(f"{compile_s[t]:>17.2f}{ms[t]:>11.3f}" for t in targets) + f"{ms['ort']:>9.3f}"
              + "".join(f"{ms['ort'] / ms[t]:>11.2f}" for t in targets)
              + (f"{ms['ort spin']:>13.3f}" if args.ort_spinning else ""))
        plans.append((name, compiled[targets[0]]))
    print(f"{'geomean':<9}" + " " * (28 * len(targets) + 9)
          + "".join(f"{math.prod(r) ** (1 / len(r)):>11.2f}" for r in ratios.values()))
    print(f"\n{'model':<9}{'arena KiB':>11}{'bound KiB':>11}{'weights KiB':>13}{'model KiB':>11}")
    for name, m in plans:
        plan = m.program.plan
        print(f"{name:<9}{plan.size / 1024:>11.0f}{plan.lower_bound() / 1024:>11.0f}"
              f"{m.program.weight_bytes() / 1024:>13.0f}{constant_bytes(m.source) / 1024:>11.0f}")


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
