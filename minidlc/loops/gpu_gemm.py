"""MatMul, Gemm and Conv for a GPU: shared-memory tiles and register blocks.

The product is the same `GemmSpec` the CPU lowering builds (gemm.py); only
the loop nest differs. C is cut into BM x BN tiles, one per block of the
grid (`LoopKind.BLOCKS`), each computed by the block's threads
(`LoopKind.THREADS`):

    for tile in blockIdx.x:                  // one block per BM x BN tile of C
      shared As[BK * BM], Bs[BK * BN]        // one k-slab of A's rows and B's columns
      for t in threadIdx.x:                  // each thread owns TM x TN of the tile
        acc[TM * TN] = 0                     // in registers (constant indices)
        for kt < K / BK:
          As, Bs <- A, B                     // every thread loads a few elements
          __syncthreads()
          for kk < BK: acc[i, j] += As[kk, row i] * Bs[kk, col j]   (unrolled)
          __syncthreads()
        C[rows, cols] = epilogue(acc)        // bias, activation, residual: fused

A thread's rows and columns are strided by BM/TM and BN/TN, so a warp reads
consecutive shared-memory words (no bank conflicts) and stores consecutive
elements of C. Only whole tiles go to this kernel; the rows and columns
past the last whole tile (and products too small for one tile) take a plain
kernel, one thread per element of C with a serial k loop, so every access is
in bounds by construction and the verifier proves it. A k that BK does not
divide reads zeros past k (clamped loads).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ir import Node
from ..ir.types import dtype_name
from .gemm import CONFIG, GEMM_OPS, GemmSpec, _widened, epilogue_chain, gemm_spec, is_depthwise, lower_depthwise, \
    store_result
from .ir import (Allocate, Barrier, Binary, Compare, Const, Expr, For, Load, LoopKind, Scope, Select, Stmt, Store, add,
                 const, mul, row_major, seq)
from .lower import Device, Lowerer, register_lowering, unflatten


@dataclass(frozen=True)
class GpuTile:
    """A block computes BM x BN of C, BK of k at a time; a thread TM x TN of it."""

    bm: int
    bn: int
    bk: int
    tm: int
    tn: int

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)


# Largest first; a product takes the largest tile that still gives the GPU
# enough blocks to fill it (FILL_BLOCKS), else the smallest that fits.
TILES = (GpuTile(128, 128, 8, 8, 8), GpuTile(64, 64, 16, 4, 4), GpuTile(32, 32, 16, 2, 2))
FILL_BLOCKS = 132  # an H100/H200 has 132 multiprocessors


def choose_tile(batch: int, m: int, n: int) -> GpuTile | None:
    """The tile for a product, or None when not even the smallest fits (all plain kernel)."""
    fitting = [t for t in TILES if m >= t.bm and n >= t.bn]
    for t in fitting:
        if batch * (m // t.bm) * (n // t.bn) >= FILL_BLOCKS:
            return t
    return fitting[-1] if fitting else None


def unpacked_b(spec: GemmSpec) -> np.ndarray:
    """B' as a plain (*b_batch, K, N) array, from the CPU's NR-wide panels."""
    p = spec.b_packed
    return np.ascontiguousarray(np.swapaxes(p, -3, -2).reshape(p.shape[:-3] + (spec.k, -1))[..., :spec.n])


@register_lowering(*GEMM_OPS, devices=(Device.GPU,))
def lower_gemm_gpu(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    if is_depthwise(node):
        return lower_depthwise(lw, node, done)  # a stencil: the GPU schedule spreads it over threads
    spec = gemm_spec(lw, node)
    dt, m, k, n = spec.acc_dtype, spec.m, spec.k, spec.n
    grid, k_shape = spec.row_shape or (m,), spec.k_shape or (k,)
    nb = math.prod(spec.batch)
    if spec.b_packed is not None:
        b_dt = dtype_name(spec.b_packed.dtype)
        bp = lw.constant_param(node.inputs[1].name + "_kn", unpacked_b(spec), b_dt)

    def read_a(bidx: list[Expr], row: Expr, kg: Expr) -> Expr:
        return _widened(spec.a(bidx, unflatten(row, grid), unflatten(kg, k_shape)), dt)

    def read_b(bidx: list[Expr], kg: Expr, col: Expr) -> Expr:
        bb = spec.b_index(bidx)
        if spec.b_packed is None:  # computed at run time: read in place (panel, column within it)
            value = spec.b(bb, unflatten(kg, k_shape), Binary("/", col, const(CONFIG.nr)),
                           Binary("%", col, const(CONFIG.nr)))
        else:
            flat = add(mul(add(mul(_flat(bb, spec.b_batch), const(k)), kg), const(n)), col)
            value = Load(bp, flat, b_dt)
        return _widened(value, dt)

    out, chain = epilogue_chain(lw, node)
    buf = lw.buffer_for(out)

    def result(bidx: list[Expr], row: Expr, col: Expr, value: Expr) -> Stmt:
        return store_result(lw, spec, node, out, buf, spec.out(bidx, unflatten(row, grid), col), value)

    tile = choose_tile(nb, m, n)
    stages: list[Stmt] = [spec.prologue] if spec.prologue is not None else []
    mf, nf = (m - m % tile.bm, n - n % tile.bn) if tile else (0, 0)
    if mf and nf:
        stages.append(_tiled(lw, spec, tile, mf // tile.bm, nf // tile.bn, read_a, read_b, result))
    # the rest of C, one thread per element: the rows below the tiles, then the columns right of them
    for r0, r1, c0, c1 in ((mf, m, 0, n), (0, mf, nf, n)):
        if r1 > r0 and c1 > c0:
            stages.append(_plain(lw, spec, nb, (r0, r1), (c0, c1), read_a, read_b, result))
    lw.buffers[id(out)] = buf
    done.update(id(nd) for nd in chain)  # they ran in the epilogue
    return seq(*stages)


def _flat(index: list[Expr], shape: tuple[int, ...]) -> Expr:
    return row_major(index, shape) if shape else const(0)


def _tiled(lw: Lowerer, spec: GemmSpec, tile: GpuTile, tiles_m: int, tiles_n: int, read_a, read_b, result) -> Stmt:
    """The whole tiles of C: one block each (see the module's docstring)."""
    dt, k = spec.acc_dtype, spec.k
    bm, bn, bk, tm, tn, threads = tile.bm, tile.bn, tile.bk, tile.tm, tile.tn, tile.threads
    blk, t = lw.var("blk"), lw.var("t")
    bidx = unflatten(Binary("/", blk, const(tiles_m * tiles_n)), spec.batch)
    rest = Binary("%", blk, const(tiles_m * tiles_n))
    row0, col0 = mul(Binary("/", rest, const(tiles_n)), const(bm)), mul(Binary("%", rest, const(tiles_n)), const(bn))
    # which of the tile's rows (columns) a thread owns: consecutive threads take
    # consecutive elements along C's contiguous axis, so their stores coalesce
    across_rows, across_cols = bm // tm, bn // tn
    if spec.rows_contiguous:
        tr, tc = Binary("%", t, const(across_rows)), Binary("/", t, const(across_rows))
    else:
        tr, tc = Binary("/", t, const(across_cols)), Binary("%", t, const(across_cols))
    a_s, b_s, acc = lw.fresh("a_tile"), lw.fresh("b_tile"), lw.fresh("acc")
    kt, kk, ld, i, j = lw.var("kt"), lw.var("kk"), lw.var("l"), lw.var("i"), lw.var("j")

    def k_at(kk_: Expr) -> tuple[Expr, Expr]:
        """The k of slab row kk_, clamped into [0, k), and whether it is real."""
        kg = add(mul(kt, const(bk)), kk_)
        return (kg, None) if k % bk == 0 else (Binary("min", kg, const(k - 1)), Compare("<", kg, const(k)))

    def guarded(value: Expr, real: Expr | None) -> Expr:
        return value if real is None else Select(real, value, Const(0, dt))

    # loads: element e = l * threads + t of each slab. A's slab runs along k
    # (MatMul: A's rows are contiguous in k) or along the rows (Conv: neighbouring
    # pixels are neighbours in the input too), B's along its columns
    e = add(mul(ld, const(threads)), t)
    r, kr = (Binary("%", e, const(bm)), Binary("/", e, const(bm))) if spec.rows_contiguous else \
        (Binary("/", e, const(bk)), Binary("%", e, const(bk)))
    kg_a, real_a = k_at(kr)
    load_a = For(ld, const(bm * bk // threads), Store(a_s, add(mul(kr, const(bm)), r),
                                                       guarded(read_a(bidx, add(row0, r), kg_a), real_a)),
                 LoopKind.UNROLLED)
    kb, c = Binary("/", e, const(bn)), Binary("%", e, const(bn))
    kg_b, real_b = k_at(kb)
    load_b = For(ld, const(bn * bk // threads), Store(b_s, add(mul(kb, const(bn)), c),
                                                       guarded(read_b(bidx, kg_b, add(col0, c)), real_b)),
                 LoopKind.UNROLLED)
    cell = add(mul(i, const(tn)), j)
    row_i, col_j = add(tr, mul(i, const(across_rows))), add(tc, mul(j, const(across_cols)))
    fma = Store(acc, cell, add(Load(acc, cell, dt), mul(Load(a_s, add(mul(kk, const(bm)), row_i), dt),
                                                         Load(b_s, add(mul(kk, const(bn)), col_j), dt))))
    over_cells = lambda body: For(i, const(tm), For(j, const(tn), body, LoopKind.UNROLLED), LoopKind.UNROLLED)  # noqa: E731
    body = seq(over_cells(Store(acc, cell, Const(0, dt))),
               For(kt, const(-(-k // bk)), seq(load_a, load_b, Barrier(),
                                               For(kk, const(bk), over_cells(fma), LoopKind.UNROLLED), Barrier())),
               over_cells(result(bidx, add(row0, row_i), add(col0, col_j), Load(acc, cell, dt))))
    per_thread = For(t, const(threads), Allocate(acc, dt, tm * tn, body), LoopKind.THREADS)
    shared = Allocate(a_s, dt, bk * bm, Allocate(b_s, dt, bk * bn, per_thread, Scope.SHARED), Scope.SHARED)
    return For(blk, const(math.prod(spec.batch) * tiles_m * tiles_n), shared, LoopKind.BLOCKS)


def _plain(lw: Lowerer, spec: GemmSpec, nb: int, rows: tuple[int, int], cols: tuple[int, int], read_a, read_b,
           result) -> Stmt:
    """C[rows, cols] one element per iteration, k serial: a loop nest the GPU
    schedule spreads over threads (consecutive iterations along C's contiguous axis)."""
    dt = spec.acc_dtype
    (r0, r1), (c0, c1) = rows, cols
    f, kg, acc = lw.var("f"), lw.var("k"), lw.fresh("acc")
    nr, nc = r1 - r0, c1 - c0
    bidx = unflatten(Binary("/", f, const(nr * nc)), spec.batch)
    rest = Binary("%", f, const(nr * nc))
    if spec.rows_contiguous:
        row, col = add(const(r0), Binary("%", rest, const(nr))), add(const(c0), Binary("/", rest, const(nr)))
    else:
        row, col = add(const(r0), Binary("/", rest, const(nc))), add(const(c0), Binary("%", rest, const(nc)))
    zero = const(0)
    body = seq(Store(acc, zero, Const(0, dt)),
               For(kg, const(spec.k), Store(acc, zero, add(Load(acc, zero, dt),
                                                          mul(read_a(bidx, row, kg), read_b(bidx, kg, col))))),
               result(bidx, row, col, Load(acc, zero, dt)))
    return For(f, const(nb * nr * nc), Allocate(acc, dt, 1, body))
