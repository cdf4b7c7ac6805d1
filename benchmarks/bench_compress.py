"""Compressed models on llvm, next to the originals, in one process.

    python benchmarks/bench_compress.py [--models digits,mlp,convnet,tfblock] [--threads N] [--rounds 20]

For each model: the original, prune-channels{ratio=0.25} and low-rank{energy=0.9},
each compiled for llvm and timed interleaved. Prints ms per run, the speed-up
over the original, and what shrank: float parameters and MFLOPs. What the
compression costs in accuracy is measured on real data by `minidlc compress
--report` and tests/test_prune.py, tests/test_low_rank.py (the digits CNN).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

import minidlc  # noqa: E402
from minidlc.benchmarking import time_interleaved  # noqa: E402
from minidlc.compression import compress, compression_pass  # noqa: E402
from minidlc.demo_models import build_model  # noqa: E402
from minidlc.ir.cost import graph_flops  # noqa: E402
from minidlc.quantization import BEFORE_QUANTIZE  # noqa: E402
from minidlc.passes.manager import build_pipeline  # noqa: E402

# low-rank at 0.9: at the default 0.99 no layer of these models has a rank that pays
SETTINGS = {"prune 0.25": {"prune": 0.25}, "low-rank 0.9": {"low_rank": 0.9}}


def load(name: str):
    if name == "digits":
        import digits

        return minidlc.load(str(digits.model_path()), input_shapes={"x": (64, 1, 8, 8)})
    return minidlc.load(build_model(name))


def params(graph) -> int:
    return sum(n.attrs["value"].size for n in graph.nodes if n.op == "Constant" and n.attrs["value"].dtype.kind == "f")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="digits,mlp,convnet,tfblock")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    print(f"threads: {args.threads}")
    print(f"{'model':<9}{'setting':<15}{'params':>10}{'MFLOPs':>10}{'llvm ms':>10}{'speed-up':>10}")
    for name in args.models.split(","):
        graph = load(name)
        variants = {"original": build_pipeline(passes=BEFORE_QUANTIZE).run(graph.copy())}
        for label, setting in SETTINGS.items():
            variants[label] = compress(graph, compression_pass(**setting))[0]
        compiled = {k: minidlc.compile(g, target="llvm", threads=args.threads) for k, g in variants.items()}
        feeds = compiled["original"].random_inputs()
        ms = time_interleaved({k: (lambda m=m: m.run(feeds)) for k, m in compiled.items()}, rounds=args.rounds,
                              budget_s=60)
        for k, g in variants.items():
            print(f"{name:<9}{k:<15}{params(g):>10}{graph_flops(g) / 1e6:>10.2f}{ms[k]:>10.3f}"
                  f"{ms['original'] / ms[k]:>9.2f}x")


if __name__ == "__main__":
    main()
