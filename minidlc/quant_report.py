"""Which layers int8 hurts: the sensitivity report of `minidlc quantize --report`.

Each quantizable layer is quantized alone (every other layer stays f32), and
the model's output on evaluation data is compared with the f32 model's:

    SQNR      10·log10(Σ ref² / Σ (ref − out)²) in dB: 40 dB is an error of 1%
              of the signal, each 6 dB about one more bit
    FLOPs     the layer's share of the model's arithmetic: what int8 buys there
    agree     how often the argmax of the output's last axis matches f32's
    top-1     accuracy against labels, when they are given

`choose_float_layers` is `--keep-float auto --max-drop X`: starting from the
fully quantized model, it keeps the least robust layer (lowest SQNR) in f32
until the drop in accuracy (or agreement, without labels) fits X points.
All evaluation runs the reference interpreter: the numbers describe the
quantized graph, whatever backend later runs it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ir import Graph, interpret
from .ir.cost import graph_flops, node_flops
from .passes.manager import PassContext, build_pipeline
from .passes.quantize import layer_name, weight_axis
from .quantization import BEFORE_QUANTIZE, quantize_spec


@dataclass
class Evaluation:
    """The f32 model's outputs on the evaluation data, and the labels if any."""

    batches: list[dict[str, np.ndarray]]
    reference: np.ndarray
    labels: np.ndarray | None = None


@dataclass
class Row:
    layer: str
    op: str
    flops_share: float
    sqnr_db: float
    agreement: float
    accuracy: float | None


def float_graph(graph: Graph) -> Graph:
    """The graph as the quantize pass sees it (cleaned up, BatchNorm folded)."""
    return build_pipeline(passes=BEFORE_QUANTIZE).run(graph.copy())


def outputs(graph: Graph, batches) -> np.ndarray:
    """The first output over all batches, concatenated along the first axis."""
    return np.concatenate([interpret(graph, [b[v.name] for v in graph.inputs])[0] for b in batches])


def quantized(graph: Graph, batches, options: dict) -> Graph:
    passes = [quantize_spec(options), "integer-ops"]
    return build_pipeline(passes=passes, context=PassContext(calibration=tuple(batches))).run(graph.copy())


def score(out: np.ndarray, ev: Evaluation, layer: str = "(all)", op: str = "", share: float = 1.0) -> Row:
    ref = ev.reference.astype(np.float64)
    noise = float(np.sum((ref - out) ** 2))
    sqnr = np.inf if noise == 0 else 10 * np.log10(max(float(np.sum(ref ** 2)), 1e-30) / noise)
    agree = float(np.mean(out.argmax(-1) == ref.argmax(-1)) * 100)
    acc = None if ev.labels is None else top1(out, ev.labels)
    return Row(layer, op, share, sqnr, agree, acc)


def top1(out: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in %. The evaluation may use fewer samples than labels (a
    last partial batch is dropped), never more."""
    if len(labels) < len(out):
        raise ValueError(f"{len(labels)} labels for {len(out)} evaluated samples")
    return float(np.mean(out.argmax(-1) == labels[:len(out)]) * 100)


def sensitivity(graph: Graph, calibration, ev: Evaluation, options: dict) -> list[Row]:
    """One row per quantizable layer (quantized alone), most sensitive first,
    and a last row for the whole model quantized."""
    g = float_graph(graph)
    total = max(graph_flops(g), 1)
    rows = []
    for node in [n for n in g.nodes if weight_axis(g, n) is not None]:
        out = outputs(quantized(g, calibration, {**options, "only": (layer_name(node),)}), ev.batches)
        rows.append(score(out, ev, layer_name(node), node.op, node_flops(node) / total))
    rows.sort(key=lambda r: r.sqnr_db)
    return rows + [score(outputs(quantized(g, calibration, options), ev.batches), ev)]


def drop(row: Row, ev: Evaluation) -> float:
    """Points lost against f32: top-1 accuracy with labels, else agreement."""
    if ev.labels is not None:
        return top1(ev.reference, ev.labels) - row.accuracy
    return 100.0 - row.agreement


def choose_float_layers(graph: Graph, calibration, ev: Evaluation, options: dict, rows: list[Row],
                        max_drop: float) -> tuple[list[str], Row]:
    """Layers to keep in f32, least robust first, until the drop fits `max_drop`."""
    g = float_graph(graph)
    keep: list[str] = []
    candidates = [r.layer for r in rows if r.layer != "(all)"]  # sorted by SQNR, lowest first
    while True:
        row = score(outputs(quantized(g, calibration, {**options, "keep_float": tuple(keep)}), ev.batches), ev)
        if drop(row, ev) <= max_drop or len(keep) == len(candidates):
            return keep, row
        keep.append(candidates[len(keep)])


def format_rows(rows: list[Row], ev: Evaluation) -> str:
    width = max([len(r.layer) for r in rows] + [5])
    head = f"{'layer':<{width}}  {'op':<6} {'FLOPs':>6} {'SQNR dB':>8} {'agree %':>8}"
    head += f" {'top-1 %':>8}" if ev.labels is not None else ""
    lines = [head]
    for r in rows:
        line = f"{r.layer:<{width}}  {r.op:<6} {r.flops_share * 100:>5.1f}% {r.sqnr_db:>8.1f} {r.agreement:>8.2f}"
        line += f" {r.accuracy:>8.2f}" if r.accuracy is not None else ""
        lines.append(line)
    if ev.labels is not None:
        lines.append(f"f32 top-1: {top1(ev.reference, ev.labels):.2f}%")
    return "\n".join(lines)
