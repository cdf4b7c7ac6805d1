"""The cuda target against the reference interpreter.

By default these run on Numba's CUDA simulator (conftest.py sets
NUMBA_ENABLE_CUDASIM=1), which runs every GPU thread as Python: small graphs
only. The tests marked gpu run on a real GPU (`pytest -m gpu`) and skip
without one. The ONNX node tests run on cuda in test_onnx_conformance.py.
"""
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import minidlc
from cuda_marks import gpu, gpu_present, needs_gpu, on_simulator
from graph_strategies import elementwise_graphs
from minidlc import compile_cache
from minidlc.backends.cuda import driver_launch
from minidlc.loops import gpu_gemm
from minidlc.loops.ir import Allocate, Barrier, Binary, For, Kernel, Load, LoopKind, Param, Scope, Store, Var, add, const, \
    mul, seq
from minidlc.loops.transform import stmt_exprs, walk_exprs, walk_stmts
from minidlc.loops.verify import LoopIRError, verify_kernel
from test_cpu_backends import check, matmul_graph

ROOT = Path(__file__).parents[1]


# ---- GEMM: whole tiles in shared memory, the edges one thread per element ------------------
@on_simulator
@pytest.mark.parametrize("m,k,n,tiled", [(7, 13, 17, False), (70, 20, 90, True), (64, 32, 64, True)])
def test_gemm_tiles_edges_and_k_tail(m, k, n, tiled):
    compiled = check(matmul_graph((), m, k, n), "cuda")
    loops = compiled.emit("loops")
    assert ("shared f32 a_tile" in loops and "__syncthreads();" in loops) == tiled
    assert (f"// product 1x{m}x{n}x{k}/1 f32 in " in loops and " tiles (heuristic)\n" in loops) == tiled
    assert "// blockIdx.x" in loops and "// threadIdx.x" in loops
    assert "max(" in loops  # bias and relu ran in the epilogue


@on_simulator
@pytest.mark.parametrize("tile", gpu_gemm.TILES, ids=str)
def test_every_tile_shape_on_a_matmul_and_a_conv(tile, monkeypatch):
    """Each tile shape the GPU lowering may choose (most only for products
    larger than the simulator can run), on small ones that overhang it and
    leave a k tail: a MatMul (a row's k contiguous) and a padded 3x3 Conv
    (its pixels contiguous, stored transposed; slabs of whole windows)."""
    chosen = _force_tile(tile, monkeypatch)
    for step in ("load", "store"):  # the compile cache's key does not know of the patch
        monkeypatch.setattr(compile_cache, step, lambda *args: None)
    used = []
    for g in (matmul_graph((), 20, 9, 21), _padded_3x3_conv((2, 3, 5, 6), 20, seed=3)):
        loops = check(g, "cuda").emit("loops")
        used.append(chosen[-1])
        assert f"shared f32 a_tile[{2 * used[-1].bk * used[-1].a_row}]" in loops
    assert used == [tile, gpu_gemm.with_window_slabs(tile, gpu_gemm.GemmShape(1, 60, 20, 27, 9, "f32"))]


@on_simulator
@pytest.mark.parametrize("product,splits", [("matmul", 2), ("conv", 4)])
def test_split_k_tiles_add_up_their_partial_products(product, splits, monkeypatch):
    """Split over k, each tile is computed by `splits` blocks over their runs
    of k slabs, and a second launch adds the partial tiles and applies the
    epilogue: a MatMul (4 slabs of 16, the last half past k = 56) and a
    padded 3x3 conv (k = 144: 4 slabs of four windows)."""
    chosen = _force_tile(gpu_gemm.GpuTile(64, 64, 16, 4, 4, splits), monkeypatch)
    for step in ("load", "store"):
        monkeypatch.setattr(compile_cache, step, lambda *args: None)
    g = matmul_graph((), 40, 56, 21) if product == "matmul" else _padded_3x3_conv((2, 16, 5, 6), 20, seed=5)
    loops = check(g, "cuda").emit("loops")
    assert chosen[-1].splits == splits and f"_tiles /*[{splits * 64 * 64}]*/" in loops
    assert loops.count("// blockIdx.x") == 2  # the splits' launch, then the sum and the epilogue


def test_split_k_is_a_candidate_where_the_tiles_are_too_few():
    """ResNet-50's last 3x3 convs at batch 32 (M = 1568 rows, N = 512): 128x128
    tiles give 52 blocks for 132 multiprocessors, so tuning also tries them
    split in 2, 4 and 8; a product with blocks enough gets no splits."""
    labels = [t.label for t in gpu_gemm.candidate_tiles(gpu_gemm.GemmShape(1, 1568, 512, 4608, 9, "f32"))]
    assert {"128x128x8_8x8", "128x128x8_8x8s2", "128x128x8_8x8s4", "128x128x8_8x8s8", "128x64x18_8x8s2",
            "64x64x36_4x4"} <= set(labels)
    assert not any(t.splits > 1 for t in gpu_gemm.candidate_tiles(gpu_gemm.GemmShape(1, 4096, 4096, 4096, 1, "f32")))


def _force_tile(tile, monkeypatch) -> list:
    """Every product tiled by `tile` (with whole-window slabs where it takes
    them), whatever it overhangs; the list the tiles chosen are added to."""
    chosen = []

    def forced(shape, tuned):
        chosen.append(gpu_gemm.with_window_slabs(tile, shape))
        return chosen[-1]
    monkeypatch.setattr(gpu_gemm, "choose_tile", forced)
    return chosen


def _padded_3x3_conv(x_shape: tuple[int, ...], channels: int, seed: int, dtype=np.float32):
    """A Conv of x_shape's input with random 3x3 weights, padded by one."""
    rng = np.random.default_rng(seed)
    g = minidlc.ir.Graph()
    x = g.add_input("x", minidlc.ir.TensorType(x_shape, minidlc.ir.types.dtype_name(dtype)))
    w = g.constant(rng.standard_normal((channels, x_shape[1], 3, 3)).astype(dtype), "w")
    g.outputs = [g.add("Conv", [x, w], {"pads": [1, 1, 1, 1]}).outputs[0]]
    return g


def _tiled_kernels(tile, monkeypatch, dtype=np.float32):
    """The GEMM kernels (loop IR, for the GPU) of a MatMul and of a padded
    3x3 Conv, both in `tile`."""
    from minidlc.backends import get_backend
    from minidlc.passes.manager import build_pipeline

    _force_tile(tile, monkeypatch)
    for g in (matmul_graph((), 256, 64, 256), _padded_3x3_conv((2, 8, 9, 9), 16, seed=4, dtype=dtype)):
        program = get_backend("cuda").program(build_pipeline(opt_level=2).run(g))
        yield next(s.lowered.kernel for s in program.steps if s.lowered is not None and "a_tile" in str(s.lowered.kernel))


@pytest.mark.parametrize("tile", gpu_gemm.TILES, ids=str)
def test_stores_into_the_shared_tiles_hit_every_bank_once(tile, monkeypatch):
    """A warp's stores of A and B into the shared tiles and its loads in the
    k loop, evaluated from the loop IR the lowering builds (a MatMul: A
    stored along k, transposed; a conv: along its pixels): no two of a
    warp's addresses share a bank (the same address twice is a broadcast).
    The k loop's loads read aligned runs of words (`row_run`, `col_run`),
    one vector load each, which the GPU serves 32 / run threads at a time:
    those threads' runs must then cover distinct banks. One exception, by design:
    a MatMul's warp stores A along k, and with BK 16 and runs of four its
    rows are padded to a multiple of four words (the runs' loads stay
    aligned), so its 16 k rows start in only 8 banks: twice each, once a slab."""
    from minidlc.loops.gpu_schedule import index_value

    for kernel, along_k in zip(_tiled_kernels(tile, monkeypatch), (True, False)):
        threads = next(x.var for x in walk_stmts(kernel.body) if isinstance(x, For) and x.kind == LoopKind.THREADS)
        accesses = [e for x in walk_stmts(kernel.body) for e in [x, *(y for top in stmt_exprs(x) for y in walk_exprs(top))]
                    if isinstance(e, (Store, Load)) and e.buf in ("a_tile", "b_tile")]
        unrolled = {x.var: int(x.extent.value) for x in walk_stmts(kernel.body) if isinstance(x, For) and x.kind == LoopKind.UNROLLED}
        assert any(isinstance(e, Store) for e in accesses) and any(isinstance(e, Load) for e in accesses)
        for access in accesses:
            others = [v for v in unrolled if v.name in str(access.index)]
            run = 1 if isinstance(access, Store) else tile.row_run if access.buf == "a_tile" else tile.col_run
            ways = -(-tile.bk * tile.row_run // 32) if along_k and isinstance(access, Store) and access.buf == "a_tile" \
                else 1
            combos = list(np.ndindex(*(unrolled[v] for v in others)))
            at = {(t, values): index_value(access.index, {threads: t, **dict(zip(others, values))})
                  for t in range(tile.threads) for values in combos}
            for values in combos:
                for first in range(0, tile.threads, 32 // run):  # the threads one vector load serves at once
                    starts = {at[t, values] // run * run for t in range(first, first + 32 // run)}
                    words = {w for s in starts for w in range(s, s + run)}
                    assert max(Counter(w % 32 for w in words).values()) <= ways, (access, values, sorted(words))
            for t in range(tile.threads):  # what a thread reads comes in whole aligned runs (one vector load each)
                read = {at[t, values] for values in combos}
                assert set(Counter(w // run for w in read).values()) == {run}, (access, t, sorted(read))


@pytest.mark.parametrize("tile", gpu_gemm.TILES, ids=str)
def test_f64_tiles_fit_in_a_blocks_shared_memory(tile, monkeypatch):
    """Whole-window slabs widen BK; in f64 they must still fit the 48 KB a
    block may declare (ptxas rejects more), as f32 ones do."""
    for kernel in _tiled_kernels(tile, monkeypatch, np.float64):
        shared = [x for x in walk_stmts(kernel.body) if isinstance(x, Allocate) and x.scope == Scope.SHARED]
        assert shared and sum(8 * x.size for x in shared) <= 48 * 1024, [(x.buf, x.size) for x in shared]


@on_simulator
def test_batched_matmul_with_both_operands_computed_at_run_time():
    check(matmul_graph((2,), 40, 24, 36, const_b=False), "cuda")


def _conv_model(depthwise: bool = False) -> "object":
    rng = np.random.default_rng(0)
    c, k = 4, 32
    inits = [numpy_helper.from_array(rng.standard_normal((k, c, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(k).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((k, 1, 3, 3)).astype(np.float32), "wd"),
             numpy_helper.from_array(rng.standard_normal((10, k)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "wd"], ["c2"], pads=[1, 1, 1, 1], group=k, strides=[2, 2]),
             helper.make_node("MaxPool", ["c2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
             helper.make_node("Softmax", ["y"], ["z"])]
    g = helper.make_graph(nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c, 12, 12])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 10])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime (the --check peer) reads, old or new
    return model


@on_simulator
def test_small_cnn_matches_the_reference():
    m = check(minidlc.load(_conv_model()), "cuda")
    loops = m.emit("loops")
    assert "a_tile" in loops  # the 32-channel conv took the tiled GEMM
    # its two images share the weight: one product of 2 x 144 rows, in 9 tiles
    # of 32 x 32 (per image, 144 rows would be 5 tiles, one overhanging)
    assert "for (blk0 = 0; blk0 < 9; blk0++) {  // blockIdx.x" in loops and "_tiles" not in loops
    assert "runs on NumPy" not in loops


@on_simulator
def test_a_batched_matmul_sharing_its_weight_is_one_stacked_product():
    loops = check(matmul_graph((2,), 24, 16, 20), "cuda").emit("loops")
    # 48 x 20 in two 32 x 32 tiles (the second overhanging), not one per matrix
    assert "for (blk0 = 0; blk0 < 2; blk0++) {  // blockIdx.x" in loops and "_tiles" in loops


def _rows_graph(op: str, shape: tuple[int, ...], attrs: dict):
    """One `op` node on an input of `shape` (LayerNormalization: with a scale and a bias)."""
    from minidlc.ir import Graph, TensorType

    rng = np.random.default_rng(1)
    g = Graph()
    inputs = [g.add_input("x", TensorType(shape))]
    if op == "LayerNormalization":
        inputs += [g.constant(rng.standard_normal(shape[-1:]).astype(np.float32), n) for n in "sb"]
    g.outputs = [g.add(op, inputs, attrs).outputs[0]]
    return g


@on_simulator
@pytest.mark.parametrize("op,shape,attrs,threads", [
    ("Softmax", (3, 128), {"axis": -1}, 32),                          # 4 elements a thread
    ("LayerNormalization", (2, 3, 784), {"axis": -1}, 28),            # a tree of 28: 12 folded first, then 16
    ("ReduceMean", (2, 3, 10, 10), {"axes": [2, 3]}, 25),             # two inner loops, fused
    ("ReduceMax", (5, 96, 2), {"axes": [1], "keepdims": 0}, 64),      # along a strided axis: 2 rows side by side
    ("ReduceSum", (128, 24), {"axes": [0]}, 256),                     # over the outer axis: 8 rows side by side
    ("ReduceSum", (2183, 7), {"axes": [0]}, 59),                      # 7 side by side leave 1 thread a row: 1 a block
    ("ReduceSum", (2, 4, 80), {"axes": [0, 2]}, 32),
    ("ArgMax", (2, 100), {"axis": 1}, None),                          # two accumulators: one thread per row
    ("ReduceMean", (40, 8), {"axes": [1]}, None),                     # short rows: one thread per row
    ("ReduceSum", (3, 70), {"axes": [1]}, None),                      # 70 = 2 x 5 x 7: no 16 threads divide it
])
def test_long_row_reductions_run_block_wide(op, shape, attrs, threads):
    loops = check(_rows_graph(op, shape, attrs), "cuda").emit("loops")
    if threads is None:
        assert "_red[" not in loops
    else:
        assert f"for (t = 0; t < {threads}; t++)" in loops and "_red[t + " in loops and "__syncthreads" in loops


@on_simulator
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_random_reductions_block_wide_or_side_by_side(data):
    """Reductions over random axes of random shapes (some rows long enough for
    a block, some contiguous across rows: lanes side by side), against the
    reference; the softmax-like map loop after a reduction too."""
    shape = tuple(data.draw(st.lists(st.sampled_from([1, 2, 3, 8, 16, 64, 96]), min_size=2, max_size=3)
                            .filter(lambda s: np.prod(s) <= 2048)))  # the simulator runs each thread as Python
    axes = sorted(data.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape) - 1)))
    op = data.draw(st.sampled_from(["ReduceSum", "ReduceMax", "ReduceMean", "Softmax"]))
    attrs = {"axis": axes[-1]} if op == "Softmax" else {"axes": axes, "keepdims": data.draw(st.sampled_from([0, 1]))}
    check(_rows_graph(op, shape, attrs), "cuda")


def _row_kernel(store_index) -> Kernel:
    """for i < 4: acc = sum of x's row i; for j < 128: y[store_index(i, j)] = x[i, j] / acc"""
    i, j, k = Var("i"), Var("j"), Var("k")
    x = lambda col: Load("x", add(mul(i, const(128)), col), "f32")  # noqa: E731
    acc = Load("acc", const(0), "f32")
    body = Allocate("acc", "f32", 1, seq(Store("acc", const(0), const(0.0, "f32")),
                                         For(k, const(128), Store("acc", const(0), Binary("+", acc, x(k)))),
                                         For(j, const(128), Store("y", store_index(i, j), Binary("/", x(j), acc)))))
    return Kernel("rows", (Param("x", "f32", 512), Param("y", "f32", 512)), For(i, const(4), body))


@pytest.mark.parametrize("store_index,block_wide", [
    (lambda i, j: i * 128 + j, True),
    (lambda i, j: i * 128 + (j % 64) * 2 + j / 64, True),    # a permutation of the row
    (lambda i, j: i * 128 + j / 2 * 2, False),                # two j's write one element: the last one wins
])
def test_a_row_goes_block_wide_only_when_its_stores_are_one_to_one(store_index, block_wide):
    from minidlc.loops.gpu_schedule import gpu_schedule

    class E:  # index arithmetic with Python operators, building loop IR
        def __init__(self, e):
            self.e = e

        def __add__(self, o): return E(Binary("+", self.e, _ir(o)))
        def __mul__(self, o): return E(Binary("*", self.e, _ir(o)))
        def __truediv__(self, o): return E(Binary("/", self.e, _ir(o)))
        def __mod__(self, o): return E(Binary("%", self.e, _ir(o)))

    def _ir(o):
        return o.e if isinstance(o, E) else const(o)

    kernel = gpu_schedule(_row_kernel(lambda i, j: store_index(E(i), E(j)).e))
    verify_kernel(kernel)
    assert any(isinstance(s, Allocate) and s.scope == Scope.SHARED for s in walk_stmts(kernel.body)) == block_wide


@on_simulator
@pytest.mark.parametrize("weight_at_run_time,blocks,threads", [
    (False, 1, 210),  # a weight (stored K x N): the 7 outputs side by side (lanes), 30 threads each along k
    (True, 7, 30),    # B an input, N x K (transB): a block per output, its threads along k read B's row
])
def test_a_gemv_splits_k_over_a_block(weight_at_run_time, blocks, threads):
    """A product too thin for tiles (M = 1): k shared by a block's threads,
    which read B's elements of adjacent outputs together."""
    from minidlc.ir import Graph, TensorType

    g = Graph()
    x = g.add_input("x", TensorType((1, 300)))
    w = g.add_input("w", TensorType((7, 300))) if weight_at_run_time else \
        g.constant(np.random.default_rng(2).standard_normal((7, 300)).astype(np.float32), "w")
    g.outputs = [g.add("Gemm", [x, w], {"transB": 1}).outputs[0]]
    loops = check(g, "cuda").emit("loops")
    assert f"for (blk = 0; blk < {blocks}; blk++)" in loops and f"for (t = 0; t < {threads}; t++)" in loops
    # the epilogue's store: one thread an output
    assert ("if (t == 0) {" if weight_at_run_time else "if (t < 7) {") in loops


@on_simulator
@settings(max_examples=8)
@given(g=elementwise_graphs(max_nodes=6))
def test_random_elementwise_graphs(g):
    check(g, "cuda")


@on_simulator
def test_emit_cuda_prints_one_function_per_launch():
    m = minidlc.compile(minidlc.load(_conv_model()), target="cuda")
    src = m.emit("cuda")
    assert "@cuda.jit(cache=True)  # grid" in src and "cuda.shared.array(" in src and "cuda.syncthreads()" in src
    assert src.count("def ") == len(m.executable.launches) - src.count(" again (grid")
    with pytest.raises(ValueError, match="--emit ptx needs a GPU"):
        m.emit("ptx")


@on_simulator
def test_an_op_without_a_gpu_lowering_is_a_counted_host_step():
    from minidlc.ir import Graph, TensorType
    from minidlc.loops.program import StepKind

    g = Graph()
    x = g.add_input("x", TensorType((3, 4), "i32"))
    y = g.add("Abs", [x]).output
    q = g.add("ReduceMean", [y], {"axes": [1]}).output  # of integers: no kernel anywhere
    g.outputs = [g.add("Neg", [q]).output]
    m = check(g, "cuda")
    assert m.program.count(StepKind.HOST) == 1 and m.program.count(StepKind.KERNEL) == 2
    assert "ReduceMean node %reducemean: runs on NumPy" in m.emit("loops")


@on_simulator
def test_gather_checks_its_indices_on_the_gpu():
    """The check flag lives in device memory; the executable reads it after the run."""
    from minidlc.ir import Graph, TensorType

    g = Graph()
    data = g.add_input("data", TensorType((6, 2)))
    idx = g.add_input("idx", TensorType((3,), "i64"))
    g.outputs = [g.add("Exp", [g.add("Gather", [data, idx], {"axis": 0}).output]).output]
    m = minidlc.compile(g, target="cuda")
    d = np.arange(12, dtype=np.float32).reshape(6, 2) / 10
    np.testing.assert_allclose(m.run({"data": d, "idx": np.array([5, -6, 0])})["exp"], np.exp(d[[5, 0, 0]]), rtol=1e-6)
    with pytest.raises(IndexError, match="Gather %gather: an index is out of range for an axis of 6"):
        m.run({"data": d, "idx": np.array([5, 6, 0])})
    np.testing.assert_allclose(m.run({"data": d, "idx": np.array([1, 2, 3])})["exp"], np.exp(d[[1, 2, 3]]), rtol=1e-6)


# ---- the loop IR's GPU constructs: printed and verified -----------------------------------
def _kernel(body) -> Kernel:
    return Kernel("k", (Param("y", "f32", 64),), body)


def test_gpu_loops_shared_memory_and_barriers_print_like_the_rest():
    from minidlc.loops.printer import print_kernel

    b, t = Var("b"), Var("t")
    body = For(b, const(2), Allocate("s", "f32", 32, For(t, const(32), Barrier(), LoopKind.THREADS), Scope.SHARED),
               LoopKind.BLOCKS)
    text = print_kernel(_kernel(body))
    assert "for (b = 0; b < 2; b++) {  // blockIdx.x" in text and "shared f32 s[32];" in text
    assert "for (t = 0; t < 32; t++) {  // threadIdx.x" in text and "__syncthreads();" in text
    verify_kernel(_kernel(body))


@pytest.mark.parametrize("body,error", [
    (Barrier(), "a barrier outside a loop over threads"),
    (For(Var("t"), const(4), Barrier(), LoopKind.THREADS), "not directly inside a loop over blocks"),
    (For(Var("b"), const(2), Allocate("a", "f32", 4, For(Var("t"), const(4), Barrier(), LoopKind.THREADS)),
         LoopKind.BLOCKS), "local buffer a is allocated outside a GPU thread"),
    (For(Var("i"), const(2), For(Var("b"), const(2), Barrier(), LoopKind.BLOCKS)), "not a top-level statement"),
    (For(Var("b"), const(2), For(Var("t"), const(4), Allocate("s", "f32", 4, Barrier(), Scope.SHARED),
                                 LoopKind.THREADS), LoopKind.BLOCKS), "is not between a loop over blocks"),
])
def test_verifier_checks_how_gpu_loops_nest(body, error):
    with pytest.raises(LoopIRError, match=error):
        verify_kernel(_kernel(body))


# ---- tuning: each product's candidate tiles timed, the fastest recorded per GPU --------------
def _fake_clock(monkeypatch, tiles, seconds, never_run=None) -> None:
    """Make `tune` time each candidate as `seconds(tile)`, the tile read off
    the name of the launch it prepared last (`..._<tile label>_<n>`); the
    kernels of `never_run` do not run (its outputs stay zero)."""
    from minidlc.backends.cuda import tuning

    timing, real = [], tuning.launcher

    def launcher(fn, launch, arrays):
        timing.append(next(t for t in tiles if f"_{t.label}_" in launch.name))
        return real(fn, launch, arrays)

    def fake_seconds(cuda, calls):
        if timing[-1] != never_run:
            for call in calls:
                call()
        return seconds(timing[-1])
    monkeypatch.setattr(tuning, "launcher", launcher)
    monkeypatch.setattr(tuning, "_seconds", fake_seconds)


@on_simulator
def test_tuning_records_the_fastest_tile_and_later_compiles_use_it(tmp_path, monkeypatch, capsys):
    """`tune` runs every candidate tile of a product and keeps the one that
    timed fastest: here a fake clock says 128x16, where the heuristic takes
    32x32. A later compile for this GPU lowers with it and computes the same;
    the CLI command does the same work."""
    from minidlc.backends import cache
    from minidlc.backends.cuda import tuning
    from minidlc.cli import main

    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    g = matmul_graph((), 64, 16, 32)
    program = minidlc.compile(g, target="cuda").program
    shape, = [p.shape for step in program.steps if step.lowered for p in step.lowered.gemms]
    fast, candidates = gpu_gemm.GpuTile(128, 16, 16, 8, 1), gpu_gemm.candidate_tiles(shape)
    assert gpu_gemm.choose_tile(shape) == gpu_gemm.GpuTile(32, 32, 16, 2, 2) and fast in candidates
    _fake_clock(monkeypatch, candidates, lambda tile: 0.5 if tile == fast else 1.0)
    trials = tuning.tune(program, out=sys.stdout, record=True)
    assert [t.tile for t in trials] == candidates
    out = capsys.readouterr().out
    assert "-> 128x16x16_8x1 (2.00x faster than the heuristic's 32x32x16_2x2)" in out
    assert f"recorded in {tmp_path / 'tuning' / 'cuda-simulator.json'}" in out
    assert tuning.tuned_tiles() == {shape.key: fast}
    loops = check(g, "cuda").emit("loops")
    assert f"shared f32 a_tile[{2 * fast.bk * fast.a_row}]" in loops
    assert "// product 1x64x32x16/1 f32 in 128x16x16_8x1 tiles (tuned)\n" in loops
    monkeypatch.undo()  # the real clock, through the CLI: on the simulator it records nothing
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / "cli")
    path = tmp_path / "mm.onnx"
    path.write_bytes(minidlc.compile(g, opt_level=0).to_onnx().SerializeToString())
    assert main(["tune", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tune 1/1: 1x64x32x16/1 f32: 64x64x16_4x4 " in out and "nothing recorded" in out
    assert tuning.tuned_tiles() == {}


@on_simulator
def test_tuning_never_keeps_a_tile_that_computes_something_else(tmp_path, monkeypatch, capsys):
    """A candidate whose outputs disagree with the heuristic tile's (here one
    whose kernels never ran: its output is still zeros) is reported and not
    recorded, though the clock says it is the fastest."""
    from minidlc.backends import cache
    from minidlc.backends.cuda import tuning

    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    program = minidlc.compile(matmul_graph((), 64, 16, 32), target="cuda").program
    shape, = [p.shape for step in program.steps if step.lowered for p in step.lowered.gemms]
    candidates, heuristic = gpu_gemm.candidate_tiles(shape), gpu_gemm.choose_tile(shape)
    broken = next(t for t in candidates if t != heuristic)
    fast = next(t for t in candidates if t not in (broken, heuristic))
    _fake_clock(monkeypatch, candidates, lambda tile: {broken: 0.25, fast: 0.5}.get(tile, 1.0), never_run=broken)
    trials = tuning.tune(program, out=sys.stdout, record=True)
    assert [t.tile for t in trials if not t.agrees] == [broken]
    out = capsys.readouterr().out
    assert f"{broken.label} 250.000 (WRONG)" in out and f"-> {fast.label} (2.00x faster" in out
    assert tuning.tuned_tiles() == {shape.key: fast}


def test_tiles_agree_within_float_reordering_not_beyond():
    from minidlc.backends.cuda.tuning import _agree

    want = np.linspace(-3, 3, 50, dtype=np.float32)
    assert _agree(want + np.float32(1e-4), want) and not _agree(want + np.float32(1e-2), want)
    bf16 = np.dtype(minidlc.ir.DTYPES["bf16"])
    assert _agree((want * 1.01).astype(bf16), want.astype(bf16))  # a step of bf16 (2^-7) apart
    assert _agree(np.array([3, 5], np.int8), np.array([4, 5], np.int8))
    assert not _agree(np.array([3, 5], np.int8), np.array([5, 5], np.int8))
    assert not _agree(np.array([True, False]), np.array([False, True]))


@on_simulator
def test_tuning_records_that_no_longer_fit_or_are_damaged_are_ignored(tmp_path, monkeypatch, caplog):
    from minidlc.backends import cache
    from minidlc.backends.cuda import tuning

    shape = gpu_gemm.GemmShape(1, 64, 32, 16, 1, "f32")
    assert gpu_gemm.choose_tile(shape, {shape.key: gpu_gemm.GpuTile(128, 128, 8, 8, 8)}) == gpu_gemm.choose_tile(shape)
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    (tmp_path / "tuning").mkdir(mode=0o700)
    (tmp_path / "tuning" / "cuda-simulator.json").write_text('{"tiles": {"a": [1, 2]}}')
    assert tuning.tuned_tiles() == {}
    assert "ignoring the damaged tuning records" in caplog.text


@on_simulator
def test_shipped_tuning_records_serve_a_gpu_of_their_name_and_own_records_override_them(tmp_path, monkeypatch):
    from minidlc.backends import cache
    from minidlc.backends.cuda import tuning

    shape = gpu_gemm.GemmShape(1, 64, 32, 16, 1, "f32")
    shipped, own = gpu_gemm.GpuTile(128, 16, 16, 8, 1), gpu_gemm.GpuTile(64, 64, 16, 4, 4)
    other = gpu_gemm.GemmShape(1, 128, 64, 32, 1, "f32")
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(tuning, "SHIPPED", tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    records = {"gpu": "simulator", "tiles": {shape.key: shipped, other.key: shipped}}
    (tmp_path / "shipped" / "cuda-simulator.json").write_text(tuning._dumps(records))
    (tmp_path / "shipped" / "cuda-simulator.json").chmod(0o666)  # shipped: not the cache's, so not held to its trust
    assert tuning.tuned_tiles() == {shape.key: shipped, other.key: shipped}
    (tmp_path / "cache" / "tuning" / "cuda-simulator.json").write_text(tuning._dumps({"tiles": {shape.key: own}}))
    assert tuning.tuned_tiles() == {shape.key: own, other.key: shipped}


def _h200_records() -> dict:
    import json

    from minidlc.backends.cuda import tuning

    return json.loads((tuning.SHIPPED / "cuda-NVIDIA-H200.json").read_text())


def _shape_of(key: str) -> gpu_gemm.GemmShape:
    """A GemmShape from its key: '1x1568x512x4608/9 f32'."""
    dims, dtype = key.split()
    sizes, window = dims.split("/")
    shape = gpu_gemm.GemmShape(*map(int, sizes.split("x")), int(window), dtype)
    assert shape.key == key
    return shape


def test_the_heuristic_comes_within_6_percent_of_the_h200s_tuned_tiles():
    """Untuned, the shape heuristic's tiles for sgemm's and ResNet-50's
    (batch 32) 22 products, by the step times tuning measured on an H200 for
    every candidate: within 6% of the fastest tiles' sum. (The heuristic
    before it learned from those times, 128 x 128 first and never split over
    k: 11.5% over.)"""
    ms = _h200_records()["ms"]
    chosen = sum(times[gpu_gemm.choose_tile(_shape_of(key)).label] for key, times in ms.items())
    fastest = sum(min(times.values()) for times in ms.values())
    assert chosen <= 1.06 * fastest, (chosen, fastest)


def test_the_shipped_h200_records_are_tiles_that_lowering_still_takes(monkeypatch):
    """Each record names a product's fastest tile on an H200. A change to the
    tiles' candidates or to what fits must re-tune (or drop) the records it
    strands: choose_tile would ignore them, and the speed they bought."""
    from minidlc.backends.cuda import tuning

    monkeypatch.setattr(tuning, "cuda_module", lambda: None)
    monkeypatch.setattr(tuning, "gpu_name", lambda cuda: "NVIDIA H200")
    monkeypatch.setattr(tuning, "records_path", lambda cuda: None)  # the shipped records alone
    tiles = tuning.tuned_tiles()
    assert len(tiles) == 22
    assert tiles == {key: gpu_gemm.GpuTile(*tile) for key, tile in _h200_records()["tiles"].items()}
    for key, tile in tiles.items():
        shape = _shape_of(key)
        assert tile in gpu_gemm.candidate_tiles(shape), key  # (else choose_tile ignores it)


# ---- errors ------------------------------------------------------------------------------
@pytest.mark.skipif(gpu_present(), reason="this machine has a GPU")
def test_without_a_gpu_the_error_says_how_to_use_the_simulator(tmp_path):
    """From Python, a DeviceError; from the command line, one line and exit status 2."""
    import onnx

    from minidlc.demo_models import build_model

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = "import minidlc, sys; sys.path.insert(0, 'tests'); from test_cpu_backends import matmul_graph; " \
           "minidlc.compile(matmul_graph((), 4, 4, 4), target='cuda')"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    message = ("target cuda: no CUDA GPU or driver found; to try the cuda target without a GPU, run with "
               "NUMBA_ENABLE_CUDASIM=1")
    assert r.returncode != 0 and f"DeviceError: {message}" in r.stderr
    onnx.save(build_model("mlp"), tmp_path / "mlp.onnx")
    for command in (["run", str(tmp_path / "mlp.onnx"), "--target", "cuda", "--random-inputs"],
                    ["tune", str(tmp_path / "mlp.onnx")]):
        r = subprocess.run([sys.executable, "-m", "minidlc.cli", *command], cwd=ROOT, env=env, capture_output=True,
                           text=True)
        assert r.returncode == 2 and r.stderr.startswith(f"minidlc: error: {message}") and "Traceback" not in r.stderr


# ---- on a real GPU (pytest -m gpu) ----------------------------------------------------------
@gpu
@needs_gpu
@pytest.mark.parametrize("name", ["mlp", "convnet", "tfblock"])
def test_demo_models_on_the_gpu(name):
    """Right, and every launch with no Numba dispatcher (a Numba CUDA
    whose internals moved would fall back to its dispatcher: slow, not wrong)."""
    from minidlc.demo_models import build_model

    from numba.cuda.cudadrv import driver

    from minidlc.backends.cuda import LaunchMode, launch_mode

    model = build_model(name)
    compiled = minidlc.compile(model, target="cuda")
    reference = minidlc.compile(model, target="reference")
    ex = compiled.executable
    assert ex.direct_launches == len(ex.launches)
    # numba-cuda launches through cuda.core, which captures a run's launches as one CUDA graph
    graph = not hasattr(driver, "launch_kernel") and launch_mode() is LaunchMode.GRAPH
    assert (ex.replay is not None) == graph and ex.queue == ([ex.replay] if graph else ex.calls)
    for seed in (0, 1):  # a second run on other inputs: a replay that computed nothing would leave the first's
        feeds = compiled.random_inputs(seed)
        got, want = compiled.run(feeds), reference.run(feeds)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-3, atol=1e-3 * float(np.abs(want[k]).max()))


@gpu
@needs_gpu
def test_gemm_shapes_on_the_gpu():
    for m, k, n in [(1, 1, 1), (7, 13, 17), (130, 70, 260), (1024, 300, 1100)]:
        check(matmul_graph((), m, k, n), "cuda")
    check(matmul_graph((3,), 100, 40, 70, const_b=False), "cuda")


@gpu
@needs_gpu
def test_tuning_on_the_gpu(tmp_path, monkeypatch):
    """Real timings: every candidate tile computes what the heuristic's does,
    the tile tune keeps is the fastest it measured, and a compile with it
    computes the same."""
    from minidlc.backends import cache
    from minidlc.backends.cuda import tuning

    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    g = matmul_graph((), 1024, 300, 1100)
    trials = tuning.tune(minidlc.compile(g, target="cuda").program)
    assert len(trials) >= 2 and all(t.seconds > 0 and t.agrees for t in trials)  # every tile computes the same
    best = min(trials, key=lambda t: t.seconds)
    assert tuning.tuned_tiles() == {best.shape.key: best.tile}
    check(g, "cuda")


@gpu
@needs_gpu
def test_cli_run_check_and_emit_ptx_on_the_gpu(tmp_path, capsys):
    import onnx

    from minidlc.cli import main

    path = tmp_path / "cnn.onnx"
    onnx.save(_conv_model(), path)
    assert main(["run", str(path), "--target", "cuda", "--random-inputs", "--check"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["compile", str(path), "--target", "cuda", "--emit", "ptx"]) == 0
    assert ".visible .entry" in capsys.readouterr().out
    assert main(["run", str(path), "--target", "cuda", "--random-inputs", "--profile"]) == 0
    table = capsys.readouterr().out
    assert "k_fused_conv_relu" in table and "launches timed alone" in table
    assert all(float(line.split()[1]) > 0 for line in table.splitlines() if line.startswith("k_"))  # CUDA events


def test_every_launch_of_the_demo_models_compiles_for_a_real_gpu():
    """The simulator runs Python; NVVM (no GPU needed) says whether Numba CUDA
    accepts the generated code: types, supported functions (bf16 weights: the
    conversion intrinsics; the lowerings no demo model uses). And static code quality: in sgemm's PTX the k
    loop is 80% FMAs or more (unsigned indices, 32-bit divisions, a counted
    loop; Numba's defaults gave 34%), its 16 shared words a k come in four
    16-byte loads (aligned shared tiles, runs of four a thread), and, where
    ptxas is installed, none of its registers spill."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    r = subprocess.run([sys.executable, "benchmarks/ptx_census.py", "mlp,convnet,tfblock,mlp:bf16,lowerings,sgemm",
                        "--only", "k_matmul_0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode == 77:
        pytest.skip(r.stdout.strip())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tfblock: 16 launches compile to PTX" in r.stdout and "mlp:bf16: 3 launches compile to PTX" in r.stdout
    # Div, Mod, bool reductions, 1-D MatMul, byte MaxPool, MaxPool Indices, f16 arithmetic and MatMul, Casts
    # f64 to f16, integer Pow, Round, run-time Conv and ConvInteger weights
    assert "lowerings: 31 launches compile to PTX" in r.stdout
    sgemm = r.stdout[r.stdout.index("sgemm: hot loops"):]
    share = int(re.search(r"k_matmul_0 .* fma \((\d+)%\)", sgemm).group(1))
    loads = int(re.search(r"k_matmul_0 .* fma \(\d+%\)[^;]*[:,] ld (\d+)", sgemm).group(1))
    assert share >= 80 and loads == 4, sgemm
    assert "SPILLS" not in sgemm


def test_device_functions_inline_in_nvvm_not_in_numbas_ir(monkeypatch):
    """The rt.* helpers must be inlined by NVVM. NVIDIA's numba-cuda spells
    that forceinline=True; its inline=True inlines in Numba's IR, re-running
    Numba's analyses over the whole kernel at each call (sgemm's kernel: 131 s
    on the H200 machine, 8 s in NVVM). Numba's built-in target has only
    inline=True, which inlines in NVVM there."""
    from minidlc.backends.cuda import support

    asked = []

    def numba_cuda_jit(func_or_sig=None, device=False, inline="never", forceinline=False):
        asked.append({"device": device, "inline": inline, "forceinline": forceinline})

    def builtin_jit(func_or_sig=None, device=False, inline=False):
        asked.append({"device": device, "inline": inline})

    for jit in (numba_cuda_jit, builtin_jit):
        monkeypatch.setattr(support.cuda, "jit", jit)
        support._device_function_decorator()
    assert asked == [{"device": True, "inline": "never", "forceinline": True}, {"device": True, "inline": True}]


def test_a_direct_launch_calls_the_driver_with_prepared_arguments_and_checks_its_status():
    """DirectLaunch calls the driver's cuLaunchKernel itself (here a C stub,
    as benchmarks/launch_overhead.py does: abs of the kernel handle, so a
    handle of 7 reads as CUDA error 7): success returns, an error raises
    naming the kernel. In a subprocess: the stub fakes Numba's driver."""
    code = """if True:
        import ctypes, sys
        from types import SimpleNamespace
        sys.path.insert(0, 'benchmarks')
        from launch_overhead import stub_driver
        from minidlc.backends.cuda import driver_launch
        from minidlc.runtime import DeviceError
        stub_driver()
        prepared = [ctypes.c_void_p(0), ctypes.c_ssize_t(3)]
        driver_launch('k_ok', SimpleNamespace(handle=ctypes.c_void_p(0)), 4, 32, prepared)()
        try:
            driver_launch('k_bad', SimpleNamespace(handle=ctypes.c_void_p(7)), 4, 32, prepared)()
        except DeviceError as e:
            print(e)
        """
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    if "needs Numba's ctypes driver binding" in r.stderr:
        pytest.skip("NVIDIA's numba-cuda: its launches go through cuda.core (the gpu tests check them)")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "cuda: launching k_bad failed with CUDA error 7"


def test_a_direct_launch_on_numba_cuda_calls_cuda_core_launch_once_configured(monkeypatch):
    """NVIDIA's numba-cuda has no `launch_kernel` (it launches through
    cuda.core): there DirectLaunch calls `cuda.core.launch(stream, config,
    kernel, *args)` with the stream and LaunchConfig made once. Faked here
    (no numba-cuda on CI): the call's arguments are what that API takes."""
    import types

    from minidlc.backends.cuda import DirectLaunch

    launched = _fake_cuda_core(monkeypatch)
    call = driver_launch("k_x", types.SimpleNamespace(kernel="kernel k_x"), 64, 224, [0, 0, 100, 4, 123456])
    assert isinstance(call, DirectLaunch) and call.via_cuda_core
    call()
    call()
    config = {"grid": 64, "block": 224, "shmem_size": 0}
    assert launched == [("stream 0", config, "kernel k_x", 0, 0, 100, 4, 123456)] * 2


def _fake_cuda_core(monkeypatch, capture_fails: bool = False) -> list:
    """A cuda.core whose launch, graph builder and graph record what they are
    asked (no numba-cuda on CI): the calls land in the returned list."""
    import types

    import numba.cuda.cudadrv as cudadrv

    log = []

    class Builder:
        stream = "capture stream"

        def begin_building(self, mode):
            log.append(("begin", mode))
            return self

        def end_building(self):
            if capture_fails:
                raise RuntimeError("capture invalidated")
            return self

        def complete(self):
            return types.SimpleNamespace(launch=lambda stream: log.append(("graph", stream)))

    device = types.SimpleNamespace(set_current=lambda: log.append("set_current"), create_graph_builder=Builder)
    core = types.SimpleNamespace(LaunchConfig=lambda **kw: kw, launch=lambda *args: log.append(args),
                                 Device=lambda: device)
    monkeypatch.setitem(sys.modules, "cuda", types.SimpleNamespace(core=core))
    monkeypatch.setitem(sys.modules, "cuda.core", core)
    monkeypatch.setattr(cudadrv, "driver", types.SimpleNamespace(_to_core_stream=lambda handle: f"stream {handle}"),
                        raising=False)
    return log


def test_a_runs_launches_are_captured_once_into_a_cuda_graph_and_replayed_by_one_call(monkeypatch, caplog):
    """On numba-cuda the launches are captured into one CUDA graph (on the
    graph builder's stream, with their prepared arguments), and a replay is
    one `Graph.launch` on the stream the launches used. Where capture fails,
    or a call is not a cuda.core launch, each launch goes by itself."""
    import types

    import contextlib

    from minidlc.backends.cuda import _warn_once, graph_replay

    log = _fake_cuda_core(monkeypatch)
    cuda = types.SimpleNamespace(defer_cleanup=lambda: contextlib.nullcontext(log.append("frees deferred")))
    calls = [driver_launch(f"k_{i}", types.SimpleNamespace(kernel=f"kernel {i}"), 8 * i, 128, [i, 100])
             for i in (1, 2)]
    replay = graph_replay(calls, cuda)
    config = lambda i: {"grid": 8 * i, "block": 128, "shmem_size": 0}  # noqa: E731
    assert log == ["set_current", "frees deferred", ("begin", "thread_local"),
                   ("capture stream", config(1), "kernel 1", 1, 100), ("capture stream", config(2), "kernel 2", 2, 100)]
    log.clear()
    replay()
    replay()
    assert log == [("graph", "stream 0")] * 2
    assert graph_replay([*calls, lambda: None], cuda) is None and graph_replay([], cuda) is None  # a host step
    log = _fake_cuda_core(monkeypatch, capture_fails=True)
    _warn_once.cache_clear()  # (a warning is given once a process)
    with caplog.at_level("WARNING"):
        assert graph_replay(calls, cuda) is None
    assert "not as one CUDA graph (RuntimeError: capture invalidated)" in caplog.text


def test_the_launch_mode_comes_from_the_environment(monkeypatch):
    from minidlc.backends.cuda import LaunchMode, launch_mode

    monkeypatch.delenv("MINIDLC_CUDA_LAUNCH", raising=False)
    assert launch_mode() is LaunchMode.GRAPH
    monkeypatch.setenv("MINIDLC_CUDA_LAUNCH", "direct")
    assert launch_mode() is LaunchMode.DIRECT
    monkeypatch.setenv("MINIDLC_CUDA_LAUNCH", "graphs")
    with pytest.raises(ValueError, match="MINIDLC_CUDA_LAUNCH='graphs': expected one of graph, direct, dispatcher"):
        launch_mode()


def test_the_readmes_gpu_tables_come_from_a_benchmark_runs_json(monkeypatch):
    """What the next GPU session pastes into the README: the rows bench_gpu.py
    wrote, each goal's row saying whether it was met."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from gpu_table import tables

    model = {"minidlc_ms": 0.05, "eager_ms": 0.18, "eager_f32_ms": 0.18, "compile_ms": None, "eager_ratio": 3.6,
             "compile_ratio": None, "compile_s": 0.9, "launches": 3, "host_steps": 0, "rel_err": 1e-7}
    text = tables({"sgemm": {"n": 4096, "minidlc_gflops": 30000.0, "torch_gflops": 48000.0, "ratio": 0.625},
                   "models": [{**model, "model": "mlp", "batch": 1, "graph": True, "one_by_one_ms": 0.07},
                              {**model, "model": "resnet50", "batch": 32, "eager_ratio": 0.3}]})  # (an older run's)
    assert "| sgemm 4096³ f32, GFLOP/s (torch.matmul, TF32 off) | 30,000 | 48,000 | 0.62 | ≥ 0.5: met |" in text
    assert "| mlp | 1 | 0.050 | 0.070 | 0.180 | 0.180 | – | 3.60 | – | 0.9 | 3 | ≥ 1: met |" in text
    assert "| ResNet-50 | 32 | 0.050 | – | 0.180 | 0.180 | – | 0.30 | – | 0.9 | 3 | ≥ 0.5: not met |" in text


def test_the_gpu_benchmark_runs_the_models_in_the_order_given(monkeypatch):
    """gpu_session.sh puts the goals' rows first: MODEL:BATCH runs that batch
    alone, a bare MODEL each of --batches."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_gpu import model_runs

    assert model_runs("resnet50:32,mlp:1,convnet", "32,1") == [("resnet50", 32), ("mlp", 1), ("convnet", 32),
                                                                ("convnet", 1)]


@on_simulator
def test_profile_times_each_step_of_the_cuda_executable(tmp_path, capsys):
    """A row per step the executable runs (the tiled GEMM's and, its tiles
    overhanging C, its epilogue's launches in one row), with the step's
    FLOPs; on the simulator the times are Python's, so only their presence
    is checked. The CLI prints the table with no roofline columns."""
    from minidlc.cli import main
    from minidlc.profiler import format_profile, profile

    m = minidlc.compile(matmul_graph((), 40, 24, 36), target="cuda")
    rows = profile(m, m.random_inputs(0), repeat=2)
    assert [r.name for r in rows] == [step.lowered.kernel.name for step, _ in m.executable.step_calls]
    assert rows[0].flops >= 2 * 40 * 24 * 36 and all(r.seconds > 0 for r in rows)
    assert "no roofline: no GPU peaks measured" in format_profile(rows, None, 1)
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], [w])
    path = tmp_path / "mm.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    assert main(["run", str(path), "--target", "cuda", "--random-inputs", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "k_matmul" in out and "launches timed alone; no roofline" in out


@pytest.mark.parametrize("reads_own_element", [True, False])
def test_a_map_loop_reads_the_buffer_it_writes_only_at_its_own_element(reads_own_element):
    """Softmax scales its output in place: y[i, j] = y[i, j] / acc keeps the row
    block-wide (each thread reads what it wrote); y[i, j] = y[i, 127 - j] / acc
    reads another thread's element, which the barrier does not order."""
    from minidlc.loops.gpu_schedule import gpu_schedule

    i, j, k = Var("i"), Var("j"), Var("k")
    row = lambda col: add(mul(i, const(128)), col)  # noqa: E731
    acc = Load("acc", const(0), "f32")
    read = row(j) if reads_own_element else row(Binary("-", const(127), j))
    body = Allocate("acc", "f32", 1, seq(
        Store("acc", const(0), const(0.0, "f32")),
        For(k, const(128), Store("acc", const(0), Binary("+", acc, Load("x", row(k), "f32")))),
        For(j, const(128), Store("y", row(j), Binary("/", Load("y", read, "f32"), acc)))))
    kernel = gpu_schedule(Kernel("rows", (Param("x", "f32", 512), Param("y", "f32", 512)), For(i, const(4), body)))
    verify_kernel(kernel)
    shared = any(isinstance(s, Allocate) and s.scope == Scope.SHARED for s in walk_stmts(kernel.body))
    assert shared == reads_own_element
