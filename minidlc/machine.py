"""This host's limits, measured: peak f32 GFLOP/s (all threads and one) and
memory bandwidth, for the profiler's roofline (`minidlc machine`).

Peaks are what a tuned library reaches here, not datasheet numbers: a 1024³
f32 matmul through NumPy's BLAS (one thread in a child process, since BLAS
fixes its thread count at import), and a 256 MiB copy (read plus write).
The result is cached beside the compiled code, keyed by the host CPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from . import cpu
from .backends import cache

_GEMM_N = 1024
_COPY_BYTES = 256 << 20
_BEST_OF = 5


def _best(fn) -> float:
    fn()
    times = []
    for _ in range(_BEST_OF):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_gflops() -> float:
    a = np.random.default_rng(0).standard_normal((_GEMM_N, _GEMM_N)).astype(np.float32)
    return 2 * _GEMM_N ** 3 / _best(lambda: a @ a) / 1e9


def copy_gbps() -> float:
    src = np.ones(_COPY_BYTES // 4, np.float32)
    dst = np.empty_like(src)
    return 2 * src.nbytes / _best(lambda: np.copyto(dst, src)) / 1e9


def _one_thread_gflops() -> float:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = "from minidlc.machine import gemm_gflops; print(gemm_gflops())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def measure() -> dict:
    return {"cpu": cpu.describe(), "cores": os.cpu_count() or 1, "gflops": gemm_gflops(),
            "gflops_one_thread": _one_thread_gflops(), "gbps": copy_gbps()}


def peaks(remeasure: bool = False) -> dict:
    """The measured peaks, from the cache when this CPU has been measured."""
    folder = cache.directory()
    path = folder / "machine.json" if folder else None
    if path is not None and path.exists() and not remeasure:
        try:
            known = json.loads(path.read_text())
            if known.get("cpu") == cpu.describe():
                return known
        except (OSError, ValueError):
            pass  # a damaged entry is measured again
    result = measure()
    if path is not None:
        cache.write_atomic(path, json.dumps(result).encode())
    return result


def describe(p: dict) -> str:
    return (f"cpu: {p['cpu'].split()[1] if len(p['cpu'].split()) > 1 else p['cpu']}, {p['cores']} cores\n"
            f"peak f32: {p['gflops']:.1f} GFLOP/s on all cores, {p['gflops_one_thread']:.1f} on one "
            f"(a {_GEMM_N}^3 matmul through NumPy's BLAS)\n"
            f"memory bandwidth: {p['gbps']:.1f} GB/s (a {_COPY_BYTES >> 20} MiB copy)")
