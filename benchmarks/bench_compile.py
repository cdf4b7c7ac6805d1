"""Compile times of the full-size layouts (ResNet-50, DenseNet-121) on llvm,
by stage, next to onnxruntime's session creation in the same run.

    python benchmarks/bench_compile.py [--models resnet50,densenet121] [--jobs N]

Per model, three compiles, each in a fresh process so that nothing is
remembered in memory:
  cold  an empty cache directory: every kernel is compiled
  warm  the cache that the cold compile filled: the object code is loaded
and `ort` is onnxruntime building its session (graph optimizations at their
default level) for the same model. Each row splits minidlc's time as
`--time-passes` does: the pass pipeline, lowering (with the memory plan) and
LLVM (code generation and compilation, or loading from the cache); `total` is
their sum, which is what the issue's goals count (loading the .onnx file is
apart: `load`). `--jobs` sets MINIDLC_COMPILE_JOBS (default: all cores).
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
m = minidlc.compile(graph, target="llvm")
print(json.dumps({"load": load, **m.compile_seconds, "summary": m.executable.compile_summary()}))
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
    print(f"{'model':<12}{'compile':<7}{'load s':>8}{'passes s':>10}{'lowering s':>12}{'llvm s':>9}{'total s':>9}  modules")
    for name in args.models.split(","):
        path = work / f"{name}.onnx"
        onnx.save(build_model(name), path)
        for kind in ("cold", "warm"):
            t = json.loads(run(_ONE, path, env))
            total = t["passes"] + t["lowering"] + t["backend"]
            print(f"{name:<12}{kind:<7}{t['load']:8.2f}{t['passes']:10.2f}{t['lowering']:12.2f}{t['backend']:9.2f}"
                  f"{total:9.2f}  {t['summary']}")
        print(f"{name:<12}{'ort':<7}{'':8}{'':10}{'':12}{'':9}{float(run(_ORT, path, env)):9.2f}  (session creation)")


if __name__ == "__main__":
    main()
