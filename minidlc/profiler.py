"""Where a run's time goes: one row per kernel (and per NumPy fallback step).

The model is built again with one native call per kernel (`split=True`), so
each kernel can be timed from Python (the call overhead, a few microseconds,
is in each row). A row has the kernel's graph nodes, its median time and
share, its estimated FLOPs (ir/cost.py) and compulsory bytes (its parameters:
inputs, weights, outputs, each once), the GFLOP/s and GB/s it reached, and
the roofline bound from the machine's measured peaks (machine.py): compute
when its arithmetic intensity lets it reach the peak GFLOP/s, memory when
the bandwidth holds it back.

On cuda the executable's own launches are timed, each step's alone between
two CUDA events (the simulator's events read 0: there, the host's clock
times Python running the kernels). No GPU peaks are measured, so a GPU
profile has no roofline columns.
"""
from __future__ import annotations

import importlib
import json
import statistics
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
    """Time each step of compiled model `m` (llvm, numba or cuda) on `feeds`."""
    if not m.backend.runs_kernels:
        raise ValueError(f"--profile times kernels; target {m.target} interprets the graph (use llvm, numba or cuda)")
    arrays = [np.asarray(feeds[v.name]) for v in m.program.graph.inputs]
    if m.backend.device == Device.GPU:  # the executable's own launches, each step's timed alone by CUDA events
        ex = m.executable
        ex.feed(arrays)
        return [_row(step, statistics.median(ex.time_calls(calls) for _ in range(repeat)))
                for step, calls in ex.step_calls]
    threads = getattr(m.executable, "threads", None)
    split = importlib.import_module(m.backend.module).build(m.program, threads=threads, split=True)
    return [_row(step, seconds) for (step,), seconds in split.time_steps(arrays, repeat)]


def _row(step, seconds: float) -> Row:
    """A step's row: a kernel's traffic is its parameters, a host step's its node's values."""
    if step.kind == StepKind.KERNEL:
        traffic = sum(b.param.size * np.dtype(DTYPES[b.param.dtype]).itemsize
                      for b in step.lowered.bindings if b.role != "scratch")
        return Row(step.lowered.kernel.name, step.computes(), "kernel", seconds, node_flops(step.node), traffic)
    values = [v for v in list(step.node.inputs) + list(step.node.outputs) if v is not None]
    return Row(step.node.outputs[0].name, step.computes(), "host", seconds, node_flops(step.node),
               sum(v.type.nbytes for v in values))


def peaks_of(m) -> dict | None:
    """The roofline's peaks for model `m`'s target: this machine's measured
    ones (machine.py) for a CPU, none for a GPU (not measured)."""
    from . import machine

    return machine.peaks() if m.backend.device == Device.CPU else None


def roofline(row: Row, peaks: dict, threads: int) -> tuple[str, float]:
    """(the bound, compute or memory; the share of the attainable GFLOP/s reached)."""
    peak = peaks["gflops"] if threads > 1 else peaks["gflops_one_thread"]
    intensity = row.flops / max(row.bytes, 1)  # FLOP per byte
    attainable = min(peak, intensity * peaks["gbps"])
    reached = row.flops / row.seconds / 1e9 if row.seconds else 0.0
    return ("compute" if intensity * peaks["gbps"] >= peak else "memory"), reached / attainable if attainable else 0.0


def format_profile(rows: list[Row], peaks: dict | None, threads: int) -> str:
    """The rows as a table, slowest first; with no `peaks` (a GPU: none measured) no roofline columns."""
    total = sum(r.seconds for r in rows) or 1.0
    width = max([len(r.name) for r in rows] + [6])
    lines = [f"{'kernel':<{width}}  {'ms':>8}  {'share':>6}  {'GFLOP/s':>8}  {'GB/s':>7}  {'bound':>7}  "
             f"{'of roof':>7}  computes"]
    for r in sorted(rows, key=lambda r: -r.seconds):
        seconds = r.seconds or float("inf")  # (the simulator's clock may read 0 for a tiny step)
        gflops, gbps = r.flops / seconds / 1e9, r.bytes / seconds / 1e9
        bound, share = roofline(r, peaks, threads) if peaks else ("-", None)
        name = r.name + (" (NumPy)" if r.kind == "host" else "")
        roof = "      -" if share is None else f"{100 * share:6.1f}%"
        lines.append(f"{name:<{width}}  {r.seconds * 1e3:8.3f}  {100 * r.seconds / total:5.1f}%  {gflops:8.2f}  "
                     f"{gbps:7.2f}  {bound:>7}  {roof}  {r.computes}")
    where = (f"each kernel timed alone, {threads} thread(s); peaks {peaks['gflops']:.0f} GFLOP/s, "
             f"{peaks['gbps']:.0f} GB/s: minidlc machine" if peaks else
             "each step's launches timed alone; no roofline: no GPU peaks measured")
    lines.append(f"{'total':<{width}}  {total * 1e3:8.3f}  ({where})")
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
