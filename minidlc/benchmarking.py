"""Timing minidlc next to a peer, fairly, in one process.

Used by `minidlc demo`, `minidlc bench` and `benchmarks/`. Two rules:

- Same threads. onnxruntime gets the thread count minidlc runs with, and its
  spin-waiting is turned off: idle onnxruntime threads otherwise keep spinning
  for a while after each run and, on a machine with few cores, steal the cores
  minidlc's threads need (halving our speed in an interleaved run). Turning
  it off costs onnxruntime itself a few percent
  (`benchmarks/bench_models.py --ort-spinning` shows both).
- Interleaved. The runners take turns in short blocks, so both see the same
  machine state (frequency, other load), and each reports its median.
"""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np


def onnxruntime_session(model, threads: int | None = None, spinning: bool = False):
    """An onnxruntime CPU session for a path or serialized model bytes, with
    `threads` intra-op threads (default: all cores), spin-waiting off unless asked."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def time_interleaved(runners: dict[str, Callable[[], object]], rounds: int = 10, block: int = 3,
                     budget_s: float = 10.0) -> dict[str, float]:
    """Median milliseconds per call of each runner. Each runs once to warm up,
    then `rounds` times the runners take turns running `block` calls each;
    fewer rounds (at least two) if `budget_s` seconds run out."""
    for fn in runners.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    start = time.perf_counter()
    for r in range(rounds):
        if r >= 2 and time.perf_counter() - start > budget_s:
            break
        for name, fn in runners.items():
            for _ in range(block):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    return {name: 1e3 * float(np.median(ts)) for name, ts in times.items()}
