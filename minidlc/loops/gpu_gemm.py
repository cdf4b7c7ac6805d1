"""MatMul, Gemm and Conv for a GPU: shared-memory tiles and register blocks.

The product is the same `GemmSpec` the CPU lowering builds (gemm.py); only
the loop nest differs. C is cut into BM x BN tiles, one per block of the
grid (`LoopKind.BLOCKS`), each computed by the block's threads
(`LoopKind.THREADS`):

    for tile in blockIdx.x:                  // one block per BM x BN tile of C
      shared As[2][BK * BM], Bs[2][BK * BN]  // two k-slabs of A's rows and B's columns
      for t in threadIdx.x:                  // each thread owns TM x TN of the tile
        acc[TM * TN] = 0                     // in registers (constant indices)
        As[0], Bs[0] <- slab 0 of A, B; __syncthreads()
        for kt < K / BK:
          if kt + 1 < K / BK: next <- slab kt + 1 of A, B     // into registers: in flight...
          for kk < BK: acc[i, j] += As[kt % 2][kk, row i] * Bs[kt % 2][kk, col j]   // ...while these run
          if kt + 1 < K / BK: As, Bs[(kt + 1) % 2] <- next    // (read last in slab kt - 1)
          __syncthreads()
        C[rows, cols] = epilogue(acc)        // bias, activation, residual: fused

The shared tiles are double-buffered: a thread's loads of the next slab are
issued before the k loop over this one and stored after it, so their latency
hides behind the FMAs, and one barrier per slab suffices. A thread's rows and
columns come in runs of four (of TM, TN if less), the runs BM/TM and BN/TN
threads apart: each run is one 16-byte load from the shared tile, and a
warp's loads take consecutive runs (no bank conflicts; A's slab rows are
padded so that its stores have none either). When
the tiles overhang C (M or N not a multiple of the tile), the overhang reads
clamped (real) elements, the tiles store the raw product into a padded
scratch C, and a second launch applies the epilogue to the real elements:
every store is in bounds by construction, which the verifier proves. A k
that BK does not divide reads zeros past k. A conv's slabs hold whole kernel
windows where they can (`with_window_slabs`: BK 18 or 36 for 3x3), so each
thread reads the same kernel cells in every slab and works out their
offsets and padding tests once, before the k loop. A batch of products that share
B (a conv's images, a MatMul against one weight) is tiled as one product of
the batch's rows stacked. Products too thin for any tile (M or N under 16,
say a batch-1 Gemm) take a plain loop nest, one iteration per element of C
and k serial inside, which the GPU schedule gives a block per element whose
threads share k (gpu_schedule.py).

Which tile: `choose_tile`'s heuristic (by how well the tiles fill the GPU
and how much they overhang C), unless `minidlc tune` has timed the
product's candidates on this GPU (`candidate_tiles`; backends/cuda/tuning.py).
Tiles split over k (split-K, `split_k`) serve products whose tiles are too
few to fill the GPU: tuning tries every split, the heuristic only a large
product's 8 x 8 tile, split just enough to fill the GPU. Their blocks each
compute a tile over a run of k slabs into the padded scratch C (one per
split), and the second launch adds the partial tiles up before the epilogue.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..ir import DTYPES, Node
from ..ir.types import dtype_name
from .gemm import GEMM_OPS, GemmSpec, epilogue_chain, gemm_spec, is_depthwise, lower_depthwise, \
    store_result
from .ir import (Allocate, Barrier, Binary, Compare, Const, Expr, For, If, Load, LoopKind, Scope, Select, Stmt, Store,
                 add, cast, const, mul, row_major, seq)
from .lower import Device, Lowerer, register_lowering, unflatten


@dataclass(frozen=True)
class GpuTile:
    """A block computes BM x BN of C, BK of k at a time; a thread TM x TN of
    it. With `splits` > 1 (split-K), that many blocks share each tile, each
    over its own run of k slabs, and a second launch adds up their partial
    tiles: more blocks for a product whose tiles are too few to fill the GPU."""

    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    splits: int = 1

    @property
    def label(self) -> str:
        """BMxBNxBK_TMxTN, and s4 for four splits of k (tuning names candidates so)."""
        return f"{self.bm}x{self.bn}x{self.bk}_{self.tm}x{self.tn}" + (f"s{self.splits}" if self.splits > 1 else "")

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def row_run(self) -> int:
        """How many consecutive rows of the tile a thread owns (a run one
        vector load of the shared tile reads; `_owned`)."""
        return math.gcd(self.tm, VECTOR)

    @property
    def col_run(self) -> int:
        return math.gcd(self.tn, VECTOR)

    @property
    def a_row(self) -> int:
        """A shared row of A's slab: BM and 32 / BK words of padding (at least
        one), rounded up to a whole row run so that the runs' vector loads
        stay aligned. A MatMul's warp stores its A elements along k (BK of
        them, for 32 / BK rows): rows that far apart start in different
        banks, so the store hits 32 banks, not 32 / BK of them four or two
        times (at BK 16 with runs of four the rounding leaves two: its 16
        rows start in 8 banks; a store a slab, against 16 vector loads)."""
        return self.bm + -(-max(1, 32 // self.bk) // self.row_run) * self.row_run

    def shared_bytes(self, dtype: str) -> int:
        """Both halves of both shared tiles, of `dtype` elements."""
        return np.dtype(DTYPES[dtype]).itemsize * 2 * self.bk * (self.a_row + self.bn)


# A product takes the first tile here that overhangs it by at most MAX_WASTE
# and gives the GPU enough blocks to fill it (FILL_BLOCKS), or, for an 8 x 8
# one and a product of SPLIT_MIN_FLOPS or more, does so split over k; failing
# that, the one with the most blocks that overhangs it by at most twice that;
# failing that (M or N tiny), the plain kernel. The 8 x 8 register blocks read
# 16 shared words for 64 FMAs, the 4 x 4 ones 8 for 16 (in 4 and 2 vector
# loads; shared bandwidth, not FMAs, then bounds a 4 x 4 block's k loop), so
# the 8 x 8 tiles come first, 64 x 128 before 128 x 64 as a conv's A slab
# (index arithmetic, padding selects) costs more per element than B's. The
# order follows what tuning measured on an H200 (2026-11-30, the records in
# backends/cuda/tuned/): 128 x 128 was never the fastest of sgemm's and
# ResNet-50's 22 products, 64 x 128 was in 8 and within 10% in 14, and
# where M is small (ResNet-50's 7x7 maps) an 8 x 8 tile split over k beat the
# 64 x 64 one unsplit by 1.5x. The last, 32 x 32 in 4 x 4 blocks (64 threads),
# the heuristic never takes (it ties with the one before); tuning tries it,
# and it was the fastest in 7 of the 22.
TILES = (GpuTile(64, 128, 8, 8, 8), GpuTile(128, 64, 8, 8, 8), GpuTile(128, 128, 8, 8, 8), GpuTile(64, 64, 16, 4, 4),
         GpuTile(128, 16, 16, 8, 1), GpuTile(32, 32, 16, 2, 2), GpuTile(32, 32, 16, 4, 4))
FILL_BLOCKS = 132  # an H100/H200 has 132 multiprocessors
MAX_SLAB_LOADS = 24  # a thread's loads of A's or B's slab (registers that hold the next slab while this one runs)
WIDE_SLABS_MAX_TILE = 128 * 64  # larger tiles keep their BK: with 3x3 windows (BK 18), a 128x128 tile's
                                # threads took 144 registers (ptxas, sm_90), one block a multiprocessor, not two
MAX_SHARED_BYTES = 48 * 1024  # what a block may declare statically
MAX_WASTE = 1.25
MIN_SPLIT_SLABS = 8  # a split's run of k slabs (fewer, and the loads of its first slab are not hidden)
SPLIT_MIN_FLOPS = 1e9  # the heuristic splits only products this large (30 us at 30 TFLOP/s): a split adds a launch
VECTOR_BYTES = 16  # the most one shared-memory load moves (ld.shared.v4.f32); the renderer aligns shared arrays so
VECTOR = VECTOR_BYTES // 4  # a thread's run of rows (columns): f32 words one such load moves


@dataclass(frozen=True)
class GemmShape:
    """What a product's tile is chosen by: `batch` products of M x N over K
    (a batch sharing B already stacked into one), whose k runs over
    (channel, `window` kernel cells), of `dtype`."""

    batch: int
    m: int
    n: int
    k: int
    window: int
    dtype: str

    @property
    def key(self) -> str:
        """How tuning records name it (backends/cuda/tuning.py)."""
        return f"{self.batch}x{self.m}x{self.n}x{self.k}/{self.window} {self.dtype}"

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.n * self.k

    def blocks(self, t: GpuTile) -> int:
        return self.batch * -(-self.m // t.bm) * -(-self.n // t.bn) * t.splits

    def waste(self, t: GpuTile) -> float:
        """C's elements the tiles compute, over those it has (1: no overhang)."""
        return -(-self.m // t.bm) * t.bm * -(-self.n // t.bn) * t.bn / (self.m * self.n)


@dataclass(frozen=True)
class TiledProduct:
    """A product as lowered: its shape, its tile, and whether the tile was
    tuned on this GPU or is the heuristic's (`--emit loops` says which)."""

    shape: GemmShape
    tile: GpuTile
    tuned: bool

    def __str__(self) -> str:
        return f"{self.shape.key} in {self.tile.label} tiles ({'tuned' if self.tuned else 'heuristic'})"


def choose_tile(shape: GemmShape, tuned: Mapping[str, GpuTile] = MappingProxyType({})) -> GpuTile | None:
    """The tile for a product, or None for the plain kernel: the one tuned
    for its shape on this GPU (`tuned`: GemmShape.key -> tile, see
    backends/cuda/tuning.py) if that is still a candidate, else the heuristic's."""
    t = tuned.get(shape.key)
    if t is not None and t in candidate_tiles(shape):
        return t
    for t in TILES:
        if shape.waste(t) > MAX_WASTE:
            continue
        t = with_window_slabs(t, shape)
        if shape.blocks(t) >= FILL_BLOCKS:
            return t
        if t.tm * t.tn == 64 and shape.flops >= SPLIT_MIN_FLOPS:
            filling = [s for s in split_k(t, shape) if shape.blocks(s) >= FILL_BLOCKS]
            if filling:
                return filling[0]
    fitting = _fitting(shape)
    return with_window_slabs(max(fitting, key=lambda t: (shape.blocks(t), -shape.waste(t))), shape) \
        if fitting else None


def _fitting(shape: GemmShape) -> list[GpuTile]:
    """The tiles that overhang the product by at most 2 x MAX_WASTE."""
    return [t for t in TILES if shape.waste(t) <= 2 * MAX_WASTE]


def candidate_tiles(shape: GemmShape) -> list[GpuTile]:
    """What tuning tries: each tile that overhangs the product by at most
    2 x MAX_WASTE, with its own BK and with slabs of whole kernel windows
    (whatever its size), and, where its tiles are too few to fill the GPU,
    split over k in 2, 4 or 8 (`split_k`). The heuristic's choice is always
    among them."""
    tiles = dict.fromkeys(c for t in _fitting(shape) for c in (t, _window_slabs(t, shape)))
    return list(dict.fromkeys(c for t in tiles for c in (t, *split_k(t, shape))))


def split_k(tile: GpuTile, shape: GemmShape) -> list[GpuTile]:
    """`tile` split over k in 2, 4 or 8 runs of slabs, where it gives fewer
    than FILL_BLOCKS blocks: splits that divide the slabs evenly, leave each
    run MIN_SPLIT_SLABS or more, and give at most 4 x FILL_BLOCKS blocks."""
    slabs = -(-shape.k // tile.bk)
    if shape.blocks(tile) >= FILL_BLOCKS:
        return []
    return [replace(tile, splits=s) for s in (2, 4, 8) if slabs % s == 0 and slabs // s >= MIN_SPLIT_SLABS
            and shape.blocks(tile) * s <= 4 * FILL_BLOCKS]


def with_window_slabs(tile: GpuTile, shape: GemmShape) -> GpuTile:
    """`tile` with BK a multiple of a conv's kernel window (its k runs over
    (channel, kernel cell)), when the slabs' loads stay at most MAX_SLAB_LOADS
    a thread: then a thread's elements of A sit at the same kernel cells in
    every slab, so their cells, padding tests and offsets are computed once,
    before the k loop (the simplifier splits (kt * BK + r) / window into
    kt * BK / window + r / window), and each slab only moves on by channels.
    Those offsets and tests take registers: the largest tiles keep their BK.
    With a BK of 8 or 16 against a 3x3 window, every element of every slab
    divided its k again: a quarter of a 3x3 conv's instructions."""
    return tile if tile.bm * tile.bn > WIDE_SLABS_MAX_TILE else _window_slabs(tile, shape)


def _window_slabs(tile: GpuTile, shape: GemmShape) -> GpuTile:
    """`tile` with the least BK from its own up that is a multiple of the
    window and fits the limits (loads a thread, shared memory), if any."""
    window = shape.window
    if window == 1 or tile.bk % window == 0:
        return tile
    for bk in range(-(-tile.bk // window) * window, MAX_SLAB_LOADS * tile.threads // max(tile.bm, tile.bn) + 1,
                    window):  # the multiples of the window from BK up
        wide = replace(tile, bk=bk)
        if tile.bm * bk % tile.threads == 0 and tile.bn * bk % tile.threads == 0 and \
                wide.shared_bytes(shape.dtype) <= MAX_SHARED_BYTES:
            return wide
    return tile


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
        return cast(spec.a(bidx, unflatten(row, grid), unflatten(kg, k_shape)), dt)

    def read_b(bidx: list[Expr], kg: Expr, col: Expr) -> Expr:
        bb = spec.b_index(bidx)
        if spec.b_packed is None:  # computed at run time: read in place (panel, column within it)
            value = spec.b(bb, unflatten(kg, k_shape), Binary("/", col, const(spec.block.nr)),
                           Binary("%", col, const(spec.block.nr)))
        else:
            value = Load(bp, row_major(bb + [kg, col], spec.b_batch + (k, n)), b_dt)
        return cast(value, dt)

    out, chain = epilogue_chain(lw, node)
    buf = lw.buffer_for(out)

    def result(bidx: list[Expr], row: Expr, col: Expr, value: Expr) -> Stmt:
        return store_result(lw, spec, node, out, buf, spec.out(bidx, unflatten(row, grid), col), value)

    product = spec  # the product the tiles compute
    if nb > 1 and math.prod(spec.b_batch) == 1:
        # every product of the batch has the same B (a conv's weight, a MatMul's
        # shared right operand): one product of the batch's rows stacked, whose
        # tiles are larger and fewer (ResNet-50's 7x7 maps at batch 32: M = 1568
        # in 128-row tiles rather than 32 products of M = 49 in 32-row tiles)
        def unstack(row: Expr, rows: int = m) -> tuple[list[Expr], Expr]:
            return unflatten(Binary("/", row, const(rows)), spec.batch), Binary("%", row, const(rows))

        read_a, result = _stacked(read_a, unstack), _stacked(result, unstack)
        read_b = _shared(read_b, len(spec.batch))
        product, nb, m = replace(spec, batch=(), m=nb * m), 1, nb * m
    shape = GemmShape(nb, m, n, k, math.prod(k_shape[1:]), dt)
    tile = choose_tile(shape, lw.tiles)
    if tile is not None:
        lw.gemms.append(TiledProduct(shape, tile, lw.tiles.get(shape.key) == tile))
    stages: list[Stmt] = [spec.prologue] if spec.prologue is not None else []
    if tile is None:
        stages.append(_plain(lw, product, nb, read_a, read_b, result))
    elif m % tile.bm == 0 and n % tile.bn == 0 and tile.splits == 1:
        stages.append(_tiled(lw, product, tile, read_a, read_b, lambda _, *element: result(*element)))
    else:  # overhanging or split tiles: raw products into a padded C (one a split), then the epilogue on C's elements
        mp, np_ = -(-m // tile.bm) * tile.bm, -(-n // tile.bn) * tile.bn
        c_pad = lw.scratch(node.outputs[0].name + "_tiles", dt, tile.splits * nb * mp * np_)

        def padded_at(part: Expr, bidx: list[Expr], row: Expr, col: Expr) -> Expr:
            return row_major([part, *bidx, row, col], (tile.splits, *product.batch, mp, np_))
        stages.append(_tiled(lw, product, tile, read_a, read_b,
                             lambda part, bidx, row, col, value: Store(c_pad, padded_at(part, bidx, row, col), value)))
        f, count, bidx, row, col = _elements(lw, product, nb)
        total = Load(c_pad, padded_at(const(0), bidx, row, col), dt)
        for part in range(1, tile.splits):
            total = add(total, Load(c_pad, padded_at(const(part), bidx, row, col), dt))
        stages.append(For(f, const(count), result(bidx, row, col, total)))
    lw.buffers[id(out)] = buf
    done.update(id(nd) for nd in chain)  # they ran in the epilogue
    return seq(*stages)


def _stacked(at, unstack):
    """`at(bidx, row, ...)` of a batch of products, as a function of the row of
    their stacked product (`unstack(row)`: the batch index and the row in it)."""
    def stacked(_: list[Expr], row: Expr, *rest):
        bidx, row_in = unstack(row)
        return at(bidx, row_in, *rest)
    return stacked


def _shared(read_b, axes: int):
    """`read_b(bidx, k, col)` of a batch whose B is one matrix (B's batch axes
    all have size 1), for the stacked product: at batch index 0."""
    return lambda _, kg, col: read_b([const(0)] * axes, kg, col)


def _tiled(lw: Lowerer, spec: GemmSpec, tile: GpuTile, read_a, read_b, store) -> Stmt:
    """C in tiles, one block each (see the module's docstring), or `tile.splits`
    blocks each, over runs of k slabs; `store(part, bidx, row, col, value)`
    writes an element of split `part`'s product (rows and columns past C's are
    the overhang)."""
    dt, m, k, n = spec.acc_dtype, spec.m, spec.k, spec.n
    tiles_m, tiles_n = -(-m // tile.bm), -(-n // tile.bn)
    bm, bn, bk, tm, tn, threads = tile.bm, tile.bn, tile.bk, tile.tm, tile.tn, tile.threads
    blk, t = lw.var("blk"), lw.var("t")
    n_tiles = math.prod(spec.batch) * tiles_m * tiles_n
    part, blk_c = (Binary("/", blk, const(n_tiles)), Binary("%", blk, const(n_tiles))) if tile.splits > 1 else \
        (const(0), blk)  # which run of k, and which tile of C
    bidx = unflatten(Binary("/", blk_c, const(tiles_m * tiles_n)), spec.batch)
    rest = Binary("%", blk_c, const(tiles_m * tiles_n))
    row0, col0 = mul(Binary("/", rest, const(tiles_n)), const(bm)), mul(Binary("%", rest, const(tiles_n)), const(bn))
    # which of the tile's rows (columns) a thread owns: consecutive threads take
    # consecutive elements along C's contiguous axis, so their stores coalesce
    across_rows, across_cols = bm // tm, bn // tn
    if spec.rows_contiguous:
        tr, tc = Binary("%", t, const(across_rows)), Binary("/", t, const(across_rows))
    else:
        tr, tc = Binary("/", t, const(across_cols)), Binary("%", t, const(across_cols))
    a_s, b_s, acc = lw.fresh("a_tile"), lw.fresh("b_tile"), lw.fresh("acc")
    a_next, b_next = lw.fresh("a_next"), lw.fresh("b_next")
    kt, kk, ld, i, j = lw.var("kt"), lw.var("kk"), lw.var("l"), lw.var("i"), lw.var("j")
    assert -(-k // bk) % tile.splits == 0, (tile, k)  # (split_k: the runs are even)
    slabs = -(-k // bk) // tile.splits  # a split's run
    first = mul(part, const(slabs))  # its first slab

    def k_at(slab: Expr, kk_: Expr) -> tuple[Expr, Expr]:
        """The k of row kk_ of a slab, clamped into [0, k), and whether it is real."""
        kg = add(mul(slab, const(bk)), kk_)
        return (kg, None) if k % bk == 0 else (Binary("min", kg, const(k - 1)), Compare("<", kg, const(k)))

    def guarded(value: Expr, real: Expr | None) -> Expr:
        return value if real is None else Select(real, value, Const(0, dt))

    # loads: element e = l * threads + t of each slab. A's slab runs along k
    # (MatMul: A's rows are contiguous in k) or along the rows (Conv: neighbouring
    # pixels are neighbours in the input too), B's along its columns
    e = add(mul(ld, const(threads)), t)
    r, kr = (Binary("%", e, const(bm)), Binary("/", e, const(bm))) if spec.rows_contiguous else \
        (Binary("/", e, const(bk)), Binary("%", e, const(bk)))
    kb, c = Binary("/", e, const(bn)), Binary("%", e, const(bn))
    a_row = tile.a_row
    a_size, b_size, a_loads, b_loads = bk * a_row, bk * bn, bm * bk // threads, bn * bk // threads
    assert tile.shared_bytes(dt) <= MAX_SHARED_BYTES, tile

    def fetch(slab: Expr) -> Stmt:
        """This thread's elements of a slab of A and of B, from global memory into registers."""
        (kg_a, real_a), (kg_b, real_b) = k_at(slab, kr), k_at(slab, kb)
        return seq(For(ld, const(a_loads), Store(a_next, ld, guarded(read_a(bidx, _clamped(add(row0, r), m), kg_a),
                                                                          real_a)), LoopKind.UNROLLED),
                   For(ld, const(b_loads), Store(b_next, ld, guarded(read_b(bidx, kg_b, _clamped(add(col0, c), n)),
                                                                          real_b)), LoopKind.UNROLLED))

    def stash(half: Expr) -> Stmt:
        """The registers into one half of the shared tiles."""
        return seq(For(ld, const(a_loads), Store(a_s, add(mul(half, const(a_size)), add(mul(kr, const(a_row)), r)),
                                                 Load(a_next, ld, dt)), LoopKind.UNROLLED),
                   For(ld, const(b_loads), Store(b_s, add(mul(half, const(b_size)), add(mul(kb, const(bn)), c)),
                                                 Load(b_next, ld, dt)), LoopKind.UNROLLED))

    half = Binary("%", kt, const(2))
    cell = add(mul(i, const(tn)), j)
    row_i, col_j = _owned(tr, i, across_rows, tile.row_run), _owned(tc, j, across_cols, tile.col_run)
    fma = Store(acc, cell, add(Load(acc, cell, dt),
                               mul(Load(a_s, add(mul(half, const(a_size)), add(mul(kk, const(a_row)), row_i)), dt),
                                   Load(b_s, add(mul(half, const(b_size)), add(mul(kk, const(bn)), col_j)), dt))))
    over_cells = lambda body: For(i, const(tm), For(j, const(tn), body, LoopKind.UNROLLED), LoopKind.UNROLLED)  # noqa: E731
    more = Compare("<", add(kt, const(1)), const(slabs))  # a next slab to fetch
    body = seq(over_cells(Store(acc, cell, Const(0, dt))),
               fetch(first), stash(const(0)), Barrier(),
               For(kt, const(slabs), seq(If(more, fetch(add(first, add(kt, const(1))))),
                                         For(kk, const(bk), over_cells(fma)),
                                         If(more, stash(Binary("%", add(kt, const(1)), const(2)))), Barrier())),
               over_cells(store(part, bidx, add(row0, row_i), add(col0, col_j), Load(acc, cell, dt))))
    registers = Allocate(acc, dt, tm * tn, Allocate(a_next, dt, a_loads, Allocate(b_next, dt, b_loads, body)))
    per_thread = For(t, const(threads), registers, LoopKind.THREADS)
    shared = Allocate(a_s, dt, 2 * a_size, Allocate(b_s, dt, 2 * b_size, per_thread, Scope.SHARED), Scope.SHARED)
    return For(blk, const(tile.splits * n_tiles), shared, LoopKind.BLOCKS)


def _owned(thread: Expr, i: Expr, across: int, run: int) -> Expr:
    """The tile row (or column) of a thread's `i`-th, for `across` threads
    along it: runs of `run` consecutive ones, `across` runs apart. A run is
    one vector load from the shared tile (the renderer aligns shared arrays
    to 16 bytes, so NVVM merges the loads); consecutive threads read
    consecutive runs, which a quarter-warp's 16-byte loads take from 32
    banks without conflict. (Their stores into C are `run` words apart; the
    L2 cache merges them.)"""
    if run == 1:
        return add(thread, mul(i, const(across)))
    return add(add(mul(Binary("/", i, const(run)), const(across * run)), mul(thread, const(run))),
               Binary("%", i, const(run)))


def _clamped(index: Expr, size: int) -> Expr:
    """A row or column of an overhanging tile, as a real one (read, then discarded)."""
    return Binary("min", index, const(size - 1))


def _elements(lw: Lowerer, spec: GemmSpec, nb: int) -> tuple:
    """(f, count, bidx, row, col): one loop over C's elements, consecutive
    iterations along C's contiguous axis (so a warp's stores coalesce)."""
    m, n = spec.m, spec.n
    f = lw.var("f")
    bidx = unflatten(Binary("/", f, const(m * n)), spec.batch)
    rest = Binary("%", f, const(m * n))
    if spec.rows_contiguous:
        row, col = Binary("%", rest, const(m)), Binary("/", rest, const(m))
    else:
        row, col = Binary("/", rest, const(n)), Binary("%", rest, const(n))
    return f, nb * m * n, bidx, row, col


def _plain(lw: Lowerer, spec: GemmSpec, nb: int, read_a, read_b, result) -> Stmt:
    """C one element per iteration, k serial: a loop nest the GPU schedule
    spreads over threads."""
    dt = spec.acc_dtype
    f, count, bidx, row, col = _elements(lw, spec, nb)
    kg, acc, zero = lw.var("k"), lw.fresh("acc"), const(0)
    body = seq(Store(acc, zero, Const(0, dt)),
               For(kg, const(spec.k), Store(acc, zero, add(Load(acc, zero, dt),
                                                          mul(read_a(bidx, row, kg), read_b(bidx, kg, col))))),
               result(bidx, row, col, Load(acc, zero, dt)))
    return For(f, const(count), Allocate(acc, dt, 1, body))
