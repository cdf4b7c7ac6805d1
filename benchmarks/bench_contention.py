"""Running while another process takes a core: the demo models on minidlc's
CPU targets and onnxruntime, each with as many threads as cores, first on an
idle machine and then with one busy-looping process per `--busy` core.

    python benchmarks/bench_contention.py [--models mlp,tfblock,convnet] [--targets llvm,numba]
                                          [--busy 1] [--threads N] [--rounds 20]

A parallel run is as slow as its slowest thread, if the others must wait
for it. The llvm backend's threads (a team, minidlc/backends/llvm/team.py)
share each stage out in claimed shares, so a late thread's shares go to the
others, and they spin while they wait (for a stage or the next run),
about 100 microseconds by default (`MINIDLC_SPIN_US`), then sleep on a futex, giving
the core back. Numba's OpenMP workers take fixed shares and spin
GOMP_SPINCOUNT rounds (set by minidlc). onnxruntime runs as minidlc
benchmarks it (spin-waiting off) and with its default spin-waiting (`ort
spin`). Each runner is timed by itself, one after the other.
`--threads 3 --targets llvm` on two cores shows what the backoff is for;
`MINIDLC_SPIN_US=1e9` turns it off.

Prints, per model and runner: median ms idle, median ms busy, and the
slowdown busy / idle; each minidlc runner's busy time against
onnxruntime's (ort/runner: above 1, minidlc is faster under contention);
and for llvm how often one of its threads slept in the busy phase.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
import minidlc  # noqa: E402
from minidlc.backends.llvm import team  # noqa: E402
from minidlc.benchmarking import onnxruntime_session, time_interleaved  # noqa: E402
from minidlc.demo_models import build_model  # noqa: E402

WARMUP_S = 0.2


def busy_loop() -> None:
    while True:
        pass


def runners(model, targets: list[str], threads: int) -> tuple[dict, dict]:
    """name -> zero-argument callable running the model once; and the llvm model, by name."""
    compiled = {t: minidlc.compile(model, target=t, threads=threads) for t in targets}
    feeds = compiled[targets[0]].random_inputs()
    out = {name: (lambda m=m: m.run(feeds)) for name, m in compiled.items()}
    data = model.SerializeToString()
    for name, spinning in (("ort", False), ("ort spin", True)):
        sess = onnxruntime_session(data, threads, spinning=spinning)
        out[name] = lambda s=sess: s.run(None, feeds)
    return out, {t: m for t, m in compiled.items() if t == "llvm"}


def timed(run: dict, rounds: int) -> dict[str, float]:
    """Each runner timed by itself, after running it for WARMUP_S: the idle
    threads of the runner before (onnxruntime's spin for a while after a run)
    would otherwise slow it down, and so would cores that were idle."""
    times = {}
    for name, fn in run.items():
        start = time.perf_counter()
        while time.perf_counter() - start < WARMUP_S:
            fn()
        times[name] = time_interleaved({name: fn}, rounds=rounds)[name]
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,tfblock,convnet")
    ap.add_argument("--targets", default="llvm,numba", help="numba needs NUMBA_NUM_THREADS >= --threads")
    ap.add_argument("--busy", type=int, default=1, help="busy-looping processes in the second phase")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of every runner")
    ap.add_argument("--rounds", type=int, default=20, help="turns each runner takes (3 runs per turn)")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}  threads: {args.threads}  busy processes: {args.busy}  "
          f"llvm spins before sleeping: {team.SPIN_MICROSECONDS:g} us")
    print(f"{'model':<9}{'runner':<10}{'idle ms':>9}{'busy ms':>9}{'slowdown':>10}{'ort/runner busy':>17}"
          f"{'sleeps busy':>13}")
    for name in args.models.split(","):
        run, llvm_models = runners(build_model(name), args.targets.split(","), args.threads)
        idle = timed(run, args.rounds)
        before = {k: m.executable.sleeps() for k, m in llvm_models.items()}
        hogs = [mp.Process(target=busy_loop, daemon=True) for _ in range(args.busy)]
        for h in hogs:
            h.start()
        try:
            busy = timed(run, args.rounds)
        finally:
            for h in hogs:
                h.terminate()
        for r in busy:
            ratio = f"{busy['ort'] / busy[r]:>17.2f}" if not r.startswith("ort") else f"{'':>17}"
            sleeps = f"{llvm_models[r].executable.sleeps() - before[r]:>13}" if r in llvm_models else ""
            print(f"{name:<9}{r:<10}{idle[r]:>9.3f}{busy[r]:>9.3f}{busy[r] / idle[r]:>9.2f}x{ratio}{sleeps}")


if __name__ == "__main__":
    main()
