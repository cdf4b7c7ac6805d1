"""Memory over time: compiling many models and running one many times in one
process keeps the resident memory flat (no leaked arenas, engines, pointer
tables or compiled modules)."""
import gc
from pathlib import Path

import numpy as np
import pytest

import minidlc
from minidlc.ir import Graph, TensorType

STATM = Path("/proc/self/statm")


def resident_mib() -> float:
    return int(STATM.read_text().split()[1]) * 4096 / 2**20


SHAPE = (256, 1024)  # a 1 MiB input: 200 leaked arenas would be hundreds of MiB


def small_model(i: int) -> Graph:
    g = Graph()
    x = g.add_input("x", TensorType(SHAPE))
    g.outputs = [g.add("Relu", [g.add("Add", [x, g.constant(np.full(SHAPE[1], i, np.float32))]).output]).output]
    return g


@pytest.mark.skipif(not STATM.exists(), reason="reads /proc/self/statm (Linux)")
@pytest.mark.parametrize("target", ["llvm", "numba"])
def test_200_compiles_and_10000_runs_keep_memory_flat(target):
    for i in range(10):  # warm up: imports, Numba's first compile, allocator pools
        minidlc.compile(small_model(i), target=target)
    gc.collect()
    before = resident_mib()
    for i in range(200):
        m = minidlc.compile(small_model(i), target=target)
    x = {"x": np.ones(SHAPE, np.float32)}
    for _ in range(10000):
        m.run(x)
    np.testing.assert_array_equal(m.run(x)["relu"], np.full(SHAPE, 200.0, np.float32))
    gc.collect()
    assert resident_mib() - before < 24, f"{resident_mib() - before:.1f} MiB more after 200 compiles and 10000 runs"
