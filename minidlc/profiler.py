"""Where a run's time goes: one row per kernel (and per NumPy fallback step).

The model is built again with one native call per kernel (`split=True`), so
each kernel can be timed from Python (the call overhead, a few microseconds,
is in each row). A row has the kernel's graph nodes, its median time and
share, its estimated FLOPs (ir/cost.py) and compulsory bytes (its parameters:
inputs, weights, outputs, each once), the GFLOP/s and GB/s it reached, and
the roofline bound from the machine's measured peaks (machine.py): compute
when its arithmetic intensity lets it reach the peak GFLOP/s, memory when
the bandwidth holds it back.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from .ir.cost import node_flops
from .ir.types import DTYPES
from .loops.lower import Device
from .loops.program import StepKind


@dataclass
class Row:
    name: str       # the kernel's name, or the node's for a host step
    computes: str   # its graph nodes and their source locations
    kind: str       # kernel | host
    seconds: float
    flops: int
    bytes: int


def profile(m, feeds: dict[str, np.ndarray], repeat: int = 20) -> list[Row]:
    """Time each step of compiled model `m` (llvm or numba) on `feeds`."""
    if not m.backend.runs_kernels:
        raise ValueError(f"--profile times kernels; target {m.target} interprets the graph (use llvm or numba)")
    if m.backend.device != Device.CPU:
        raise ValueError(f"--profile times CPU kernels against this host's peaks; target {m.target} has no "
                         "per-kernel profile yet (benchmarks/bench_gpu.py times whole models)")
    threads = getattr(m.executable, "threads", None)
    split = importlib.import_module(m.backend.module).build(m.program, threads=threads, split=True)
    arrays = [np.asarray(feeds[v.name]) for v in m.program.graph.inputs]
    rows = []
    for seg, seconds in split.time_steps(arrays, repeat):
        (step,) = seg
        if step.kind == StepKind.KERNEL:
            traffic = sum(b.param.size * np.dtype(DTYPES[b.param.dtype]).itemsize
                          for b in step.lowered.bindings if b.role != "scratch")
            rows.append(Row(step.lowered.kernel.name, step.computes(), "kernel", seconds, node_flops(step.node),
                            traffic))
        else:
            values = [v for v in list(step.node.inputs) + list(step.node.outputs) if v is not None]
            rows.append(Row(step.node.outputs[0].name, step.computes(), "host", seconds, node_flops(step.node),
                            sum(v.type.nbytes for v in values)))
    return rows


def roofline(row: Row, peaks: dict, threads: int) -> tuple[str, float]:
    """(the bound, compute or memory; the share of the attainable GFLOP/s reached)."""
    peak = peaks["gflops"] if threads > 1 else peaks["gflops_one_thread"]
    intensity = row.flops / max(row.bytes, 1)  # FLOP per byte
    attainable = min(peak, intensity * peaks["gbps"])
    reached = row.flops / row.seconds / 1e9 if row.seconds else 0.0
    return ("compute" if intensity * peaks["gbps"] >= peak else "memory"), reached / attainable if attainable else 0.0


def format_profile(rows: list[Row], peaks: dict, threads: int) -> str:
    total = sum(r.seconds for r in rows) or 1.0
    width = max([len(r.name) for r in rows] + [6])
    lines = [f"{'kernel':<{width}}  {'ms':>8}  {'share':>6}  {'GFLOP/s':>8}  {'GB/s':>7}  {'bound':>7}  "
             f"{'of roof':>7}  computes"]
    for r in sorted(rows, key=lambda r: -r.seconds):
        bound, share = roofline(r, peaks, threads)
        gflops, gbps = r.flops / r.seconds / 1e9, r.bytes / r.seconds / 1e9
        name = r.name + (" (NumPy)" if r.kind == "host" else "")
        lines.append(f"{name:<{width}}  {r.seconds * 1e3:8.3f}  {100 * r.seconds / total:5.1f}%  {gflops:8.2f}  "
                     f"{gbps:7.2f}  {bound:>7}  {100 * share:6.1f}%  {r.computes}")
    lines.append(f"{'total':<{width}}  {total * 1e3:8.3f}  (each kernel timed alone, {threads} thread(s); "
                 f"peaks {peaks['gflops']:.0f} GFLOP/s, {peaks['gbps']:.0f} GB/s: minidlc machine)")
    return "\n".join(lines)


def to_json(rows: list[Row], peaks: dict, threads: int) -> str:
    """The profile for tools: the rows, the machine, and a Chrome trace (chrome://tracing, Perfetto)."""
    events, t = [], 0.0
    for r in rows:
        events.append({"name": r.name, "cat": r.kind, "ph": "X", "ts": t * 1e6, "dur": r.seconds * 1e6,
                       "pid": 0, "tid": 0, "args": {"computes": r.computes, "flops": r.flops, "bytes": r.bytes}})
        t += r.seconds
    return json.dumps({"threads": threads, "machine": peaks, "rows": [asdict(r) for r in rows],
                       "traceEvents": events}, indent=1)
