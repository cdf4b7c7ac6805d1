"""Model compression from the command line: structured pruning and low-rank
decomposition (`minidlc compress`), and the trade-off table of `--report`.

Both are graph rewrites (passes/prune.py, passes/low_rank.py) that make the
model really smaller: fewer channels, or a product split in two thinner
ones. Neither trains: what they cost in accuracy is measured here, on data,
next to what they save (parameters, FLOPs, weight bytes, time on llvm).
"""
from __future__ import annotations

from dataclasses import dataclass

from .benchmarking import time_interleaved
from .ir import Graph
from .ir.cost import graph_flops
from .passes.manager import PassContext, build_pipeline
from .passes.options import constant_bytes
from .quant_report import Evaluation, outputs, score
from .quantization import BEFORE_QUANTIZE

PRUNE_SWEEP = (0.0, 0.1, 0.25, 0.5)
ENERGY_SWEEP = (1.0, 0.999, 0.99, 0.95, 0.9)


def compression_pass(prune: float | None = None, low_rank: float | None = None, criterion: str = "l1") -> str:
    """The pass spec of one setting: pruning `prune` of the channels, or low rank keeping `low_rank` energy."""
    if (prune is None) == (low_rank is None):
        raise ValueError("give one of prune (a ratio) or low_rank (an energy)")
    if prune is not None:
        return f"prune-channels{{ratio={prune} criterion={criterion}}}"
    return f"low-rank{{energy={low_rank}}}"


def compress(graph: Graph, spec: str, calibration=()) -> tuple[Graph, object]:
    """(the compressed graph, the compression pass, whose report says what it did)."""
    pipeline = build_pipeline(passes=BEFORE_QUANTIZE + [spec], context=PassContext(calibration=tuple(calibration)))
    return pipeline.run(graph.copy()), pipeline.passes[-1]


@dataclass
class Tradeoff:
    setting: str
    params: int  # float constants: weights, biases, scales
    mflops: float
    weight_kib: float
    ms: float
    sqnr_db: float
    accuracy: float | None


def measure(setting: str, graph: Graph, ev: Evaluation, threads: int | None = None) -> Tradeoff:
    """What a compressed graph costs and computes: its size, its llvm time, its
    output against the original's on the evaluation data."""
    import minidlc

    m = minidlc.compile(graph, target="llvm", threads=threads)
    feeds = ev.batches[0]
    ms = time_interleaved({"m": lambda: m.run(feeds)}, rounds=10, budget_s=5)["m"]
    weights = [n.attrs["value"] for n in graph.nodes if n.op == "Constant" and n.attrs["value"].dtype.kind == "f"]
    row = score(outputs(graph, ev.batches), ev)
    return Tradeoff(setting, int(sum(w.size for w in weights)), graph_flops(graph) / 1e6, constant_bytes(graph) / 1024,
                    ms, row.sqnr_db, row.accuracy)


def sweep(graph: Graph, kind: str, ev: Evaluation, calibration=(), criterion: str = "l1") -> list[Tradeoff]:
    """The trade-off rows of `--report`: pruning ratios or low-rank energies."""
    rows = []
    for value in PRUNE_SWEEP if kind == "prune" else ENERGY_SWEEP:
        spec = compression_pass(**({"prune": value, "criterion": criterion} if kind == "prune" else {"low_rank": value}))
        compressed, _ = compress(graph, spec, calibration)
        rows.append(measure(spec, compressed, ev))
    return rows


def format_tradeoffs(rows: list[Tradeoff]) -> str:
    width = max(len(r.setting) for r in rows)
    acc = rows[0].accuracy is not None
    head = f"{'setting':<{width}}  {'params':>8} {'MFLOPs':>8} {'weights KiB':>12} {'llvm ms':>8} {'SQNR dB':>8}"
    lines = [head + (f" {'top-1 %':>8}" if acc else "")]
    for r in rows:
        line = f"{r.setting:<{width}}  {r.params:>8} {r.mflops:>8.2f} {r.weight_kib:>12.1f} {r.ms:>8.3f} {r.sqnr_db:>8.1f}"
        lines.append(line + (f" {r.accuracy:>8.2f}" if acc else ""))
    return "\n".join(lines)
