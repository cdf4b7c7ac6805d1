"""Compile times of the full-size layouts (ResNet-50, DenseNet-121) on llvm,
by stage, next to onnxruntime's session creation in the same run.

    python benchmarks/bench_compile.py [--models resnet50,densenet121] [--jobs N]

Per model, three compiles, each in a fresh process so that nothing is
remembered in memory:
  cold  an empty cache directory: the passes run, the kernels are lowered and
        compiled, and the compile cache stores the program
  warm  the cache that the cold compile filled: the compile cache gives the
        program, and the kernels' object code is loaded
and `ort` is onnxruntime building its session (graph optimizations at their
default level) for the same model. Each row splits minidlc's time by stage
(`CompiledModel.compile_seconds`): the compile cache (the key, a hash of the
graph and its weights; then loading the program, or storing it after a miss),
the pass pipeline, lowering (with the memory plan) and LLVM (code generation
and compilation, or loading from the cache); `total` is their sum, which is
what the issue's goals count. `wall` is the whole `minidlc.compile` call,
which also imports minidlc's compiler modules (a fresh process), and `load`
is reading the .onnx file before it. `--jobs` sets MINIDLC_COMPILE_JOBS
(default: all cores).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parents[1]

_ONE = """
import json, sys, time
import minidlc
clock = time.perf_counter()
graph = minidlc.load(sys.argv[1])
load = time.perf_counter() - clock
clock = time.perf_counter()
m = minidlc.compile(graph, target="llvm")
wall = time.perf_counter() - clock
print(json.dumps({"load": load, "wall": wall, "stages": m.compile_seconds, "summary": m.executable.compile_summary()}))
"""

_ORT = """
import sys, time
import onnxruntime as ort
clock = time.perf_counter()
ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
print(time.perf_counter() - clock)
"""


def run(code: str, path: Path, env: dict) -> str:
    r = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        sys.exit(r.stderr[-2000:])
    return r.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,densenet121")
    ap.add_argument("--jobs", type=int, default=None, help="MINIDLC_COMPILE_JOBS (default: all cores)")
    args = ap.parse_args()
    import onnx

    from minidlc.demo_models import build_model

    work = Path(tempfile.mkdtemp(prefix="minidlc-compile-"))
    env = {**os.environ, "MINIDLC_CACHE": str(work / "cache"), "PYTHONPATH": str(ROOT)}
    if args.jobs:
        env["MINIDLC_COMPILE_JOBS"] = str(args.jobs)
    stages = {"cache": "cache s", "passes": "passes s", "lowering": "lowering s", "backend": "llvm s"}
    print(f"{'model':<12}{'compile':<8}{'load s':>7}" + "".join(f"{h:>11}" for h in stages.values())
          + f"{'total s':>9}{'wall s':>8}  modules")
    for name in args.models.split(","):
        path = work / f"{name}.onnx"
        onnx.save(build_model(name), path)
        for kind in ("cold", "warm"):
            t = json.loads(run(_ONE, path, env))
            cells = "".join(f"{t['stages'][k]:11.2f}" if k in t["stages"] else f"{'-':>11}" for k in stages)
            print(f"{name:<12}{kind:<8}{t['load']:7.2f}{cells}{sum(t['stages'].values()):9.2f}{t['wall']:8.2f}"
                  f"  {t['summary']}")
        print(f"{name:<12}{'ort':<8}{'':7}{'':44}{float(run(_ORT, path, env)):9.2f}{'':8}  (session creation)")


if __name__ == "__main__":
    main()
