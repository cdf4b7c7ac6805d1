"""Lowering of MatMul, Gemm and Conv to a packed, register-blocked loop nest
(and of depthwise convs, too short in k for a GEMM, to a direct stencil).

C = A @ B is computed block by block: an MR x NR block of C lives in a local
accumulator (`acc`, which LLVM keeps in vector registers once the loops over
it are unrolled), and each step of the k loop adds the outer product of an
MR-column of A and an NR-row of B with fused multiply-adds. B is repacked so
that those NR-rows are contiguous: panel p holds columns [p*NR, (p+1)*NR) as
Bp[p][k][0:NR], zero-padded past N. Weights are constants, so their packing
happens once, at compile time; a B computed at run time is packed by a first
loop nest of the kernel. The block comes from the host (`host_gemm_config`);
a product whose columns fill its panels takes a wider one (`host_wide_config`).

The epilogue (Gemm's alpha/beta/C, a bias add, an activation, a residual
add: the elementwise consumers the fuse pass put in the group) is applied to
the accumulator while it is still in registers, and stored once.

A MatMul or Gemm on f16 sums in f32 and rounds the sum once, as NumPy's
matmul does; its epilogue then rounds after each op (lower.widen_f16).

MatMulInteger and ConvInteger take the same path with an i32 accumulator.
When B is a constant int8 weight with a zero zero point (what symmetric
quantizers write) and A's zero point is known, the k loop steps by words
(IntWords): A' is packed into i32 words of consecutive k (u8; an s8 A is
shifted by 128 into u8), B' at compile time into words of as many k per
column. On a VNNI host a word holds four bytes and each step is one `dot4`
(vpdpbusd: 64 multiply-adds per instruction, four times the f32 FMA's);
elsewhere it holds two i16 halves and each step is one `dot2` (pmaddwd, twice
the FMA's on AVX2, exact). The zero point (and the 128 shift) come out in the
epilogue: sum (a - z) b = sum a b - z colsum(b).
Otherwise each operand is widened to i32 and its zero point subtracted as
it is read; a constant B is packed already centred (B - zero point).

The outer (parallel) loop runs over column panels of B, so a panel is read
from memory once and reused, from cache, by every row block of A. A
product's long k loop (more than K_CHUNK steps; not a conv's), over up to
256 f32 rows, runs in chunks, each over every row block before the next: a block
keeps its partial sums in C's place between chunks and applies the
epilogue after the last, and the panel's chunk stays in L1 for all row
blocks (a lone MatMul 10% faster at k = 512 to 2048 on one thread, the
mlp 6%). Full
blocks and the edge blocks (M % MR rows, N % NR columns) are separate loops
with static extents, so every access is provably in bounds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .. import cpu
from ..ir import Kind, Node, Value
from ..ir.types import dtype_name
from .ir import (Allocate, Binary, Call, Cast, Const, Expr, For, If, Load, LoopKind, Select, Stmt, Store, Compare, add, cast,
                 const, loop_nest, mul, row_major, seq)
from .lower import (Device, Lowerer, interior_test, padded_copy, pads_in_place, read_padded, register_lowering,
                    row_by_borders, unflatten, window_index, window_interior)
from .rules import FLOATS, RULES, STORAGE_DTYPES, WIDENED, Unsupported, broadcast_index

GEMM_OPS = ("MatMul", "Gemm", "Conv", "MatMulInteger", "ConvInteger")
INTEGER_OPS = ("MatMulInteger", "ConvInteger")  # u8/i8 operands, i32 products
PARALLEL_MIN_FLOPS = 1 << 20  # below this (~15 us on one core) handing work to idle threads costs more than it saves
PARALLEL_MIN_SHARES = 8  # a GEMM's parallel loop over fewer column panels than this also shares out rows
DIRECT_MIN_CHANNELS = 8  # a Conv with fewer output channels per group uses im2col
DIRECT_MIN_K = 64  # below this k (channels per group x kernel size), a stride-1 Conv reads its pixels in place
ROW_BLOCKS_MIN_WIDTH = 24  # a direct Conv with output rows this wide blocks pixels within a row
NARROW_WIDE_MIN_K = 256  # ... one with narrower rows takes the wide block from this k (channels x kernel size)
# A product's k loop longer than this (a MatMul's, Gemm's or MatMulInteger's, but for
# the dot4 path) runs in chunks of at most this many steps (`_k_chunk`), each over
# every row block: a chunk of a panel of B, 32 KiB at 32 f32 columns, then stays in
# L1 for all of them (a whole panel of a long k would not)
K_CHUNK = 256
# ... when A's chunk (every row's) fits in this: it is read from L2 for each panel,
# and a larger one (512 f32 rows and more) ran 10 to 25% slower chunked
CHUNK_MAX_A_BYTES = 1 << 18


@dataclass(frozen=True)
class GemmConfig:
    """Register block: MR rows x NR columns of C (NR a multiple of the vector width).
    `rolled_window`: the block leaves no register spare, so a conv's loops over its
    kernel window are kept rolled (LoopKind.ROLLED). Unrolled, neighbouring
    taps read the same pixels, LLVM loads them once for all the taps and
    spills accumulators to the stack to hold them: on AVX2 (6 x 16: 12
    accumulators, 2 B vectors and a broadcast of the 16 registers) a 3x3
    conv of 16 channels ran 1.9x slower so. A k loop of its own (a MatMul's,
    a 1x1 conv's) shares nothing between steps and stays LLVM's to unroll."""

    mr: int = 6
    nr: int = 16
    rolled_window: bool = False


def host_gemm_config(features: dict[str, bool] | None = None) -> GemmConfig:
    """The register block for this CPU, from its features (llvmlite's, of the
    host the JIT targets; compiled code is cached per CPU and feature string).
    NR is 16 f32 columns: one AVX-512 register, two AVX2 or NEON ones (a
    product whose columns fill wider panels takes host_wide_config's). MR takes as many rows as keep the FMA
    units fed without running out of registers: 8 rows of one register each
    with AVX-512 (8 accumulators of its 32 registers: two FMA pipes of four
    cycles' latency), 6 rows of two registers each otherwise (12 of 16, which
    leaves none spare: `rolled_window`)."""
    avx512 = _features(features).get("avx512f", False)
    return GemmConfig(mr=8, nr=16) if avx512 else GemmConfig(mr=6, nr=16, rolled_window=True)


def host_wide_config(features: dict[str, bool] | None = None) -> GemmConfig:
    """The register block of an f32 product whose columns fill panels of 32
    (a MatMul's or Gemm's columns, a Conv's output channels or pixels, see
    `_conv_spec`), on a backend that takes it (`CpuChoices.wide_blocks`):
    with AVX-512, 8 rows of two registers, 8 x 32 (16 accumulators of the
    32 registers). Each step of k then loads 8 + 2 values for 16 FMAs, where
    8 x 16 loads 9 for 8: on a Rocket Lake, whose loads bound 8 x 16, one
    thread, resnet and squeezenet ran 1.11x faster than with 8 x 16, and the
    mlp and tfblock 1.05x and 1.06x than with 6 x 32 (a direct conv's
    transposed stores also get 6-pixel vectors from it). Otherwise
    host_gemm_config's, which is two registers wide already."""
    return GemmConfig(mr=8, nr=32) if _features(features).get("avx512f", False) else host_gemm_config(features)


def _features(features: dict[str, bool] | None) -> dict[str, bool]:
    return cpu.features() if features is None else features


CONFIG = host_gemm_config()
WIDE_CONFIG = host_wide_config()


def _may_widen(lw: Lowerer, dtype: str) -> bool:
    """Whether a product summing in `dtype` may take WIDE_CONFIG, if its columns
    fill its panels: an f32 one, on a CPU backend that asks for wide blocks."""
    return lw.cpu.wide_blocks and lw.device == Device.CPU and dtype == "f32"


def describe_config() -> str:
    wide = "" if WIDE_CONFIG == CONFIG else \
        f"; {WIDE_CONFIG.mr} x {WIDE_CONFIG.nr} for a product whose columns fill its panels"
    return f"GEMM register block: {CONFIG.mr} x {CONFIG.nr} f32 (MR x NR, chosen from this CPU's features{wide})"


def _shapes(node: Node):
    """(batch shape, A batch shape, B batch shape, M, K, N) of a MatMul/Gemm.
    A MatMul's 1-D A is a row (M = 1), a 1-D B a column (N = 1), as NumPy
    reads them; the output has no axis for them (`_vector_operands`)."""
    a, b = node.inputs[0].type.shape, node.inputs[1].type.shape
    if node.op == "Gemm":
        m, k = a[::-1] if node.attrs["transA"] else a
        n = b[0] if node.attrs["transB"] else b[1]
        return (), (), (), m, k, n
    a_vector, b_vector = _vector_operands(node)
    a, b = (1, *a) if a_vector else a, (*b, 1) if b_vector else b
    return tuple(np.broadcast_shapes(a[:-2], b[:-2])), a[:-2], b[:-2], a[-2], a[-1], b[-1]


def _vector_operands(node: Node) -> tuple[bool, bool]:
    """Whether a MatMul's A, and its B, are 1-D (MatMulInteger's may not be)."""
    vectors = tuple(len(v.type.shape) == 1 for v in node.inputs[:2])
    if any(vectors) and node.op != "MatMul":
        raise Unsupported(f"{node.op} with a 1-D operand")
    return vectors


def epilogue_chain(lw: Lowerer, node: Node) -> tuple[Value, list[Node]]:
    """The last value of the elementwise chain after the product that can be
    computed in the epilogue, and the chain's nodes (or the product, and [])."""
    c = node.outputs[0]
    chain, chain_nodes = {id(c)}, []
    last = c
    for n in lw.group.nodes[lw.group.nodes.index(node) + 1:]:
        reads = [v for v in n.inputs if v is not None and id(v) in chain]
        if not reads:
            continue
        same = n.outputs[0].type.shape == c.type.shape and all(v.type.shape == c.type.shape for v in reads)
        if (n.op not in RULES or n.opdef.kind not in (Kind.ELEMENTWISE, Kind.BROADCAST) or not same
                or len(n.outputs) != 1 or len(reads) != 1 or id(last) in lw.out_index or reads[0] is not last):
            return c, []  # a branch or a shape change: store the product, lower the rest normally
        chain.add(id(n.outputs[0]))
        chain_nodes.append(n)
        last = n.outputs[0]
    # every chain value but the last must be read only inside the chain
    if all(len(lw.users.get(i, [])) <= 1 for i in chain if i != id(last)):
        return last, chain_nodes
    return c, []


@dataclass
class GemmSpec:
    """A batch of products C[b] = A'[b] @ B'[b] as the blocked kernel sees it,
    whatever op it came from (MatMul, Gemm, or Conv as im2col)."""

    batch: tuple[int, ...]                      # the axes of b, fused into the parallel loop
    m: int
    k: int
    n: int
    a: Callable[[list[Expr], list[Expr], list[Expr]], Expr]  # A'[b][row, k] (row: a multi-index over
                                                             # row_shape, k: over k_shape)
    b_batch: tuple[int, ...]                             # the axes B' varies along
    b_index: Callable[[list[Expr]], list[Expr]]          # b -> B's batch index
    b: Callable[[list[Expr], list[Expr], Expr, Expr], Expr] | None  # B'[bb][k, panel * NR + jj] at run time
                                                                    # (any value, read in bounds, past column n)
    b_packed: np.ndarray | None                          # B' packed at compile time (weights)
    out: Callable[[list[Expr], list[Expr], Expr], list[Expr]]  # the product's multi-index at (b, row, col)
    adjust: Callable[[Expr, list[Expr]], Expr]           # e.g. alpha * acc + beta * C, at that index
    prologue: Stmt | None = None                         # loops that must run first (Conv: padding)
    k_shape: tuple[int, ...] = ()                        # the k loop as nested loops (default: one, of k)
    row_shape: tuple[int, ...] = ()                      # the rows as a grid (default: one axis, of m);
                                                         # register blocks never cross its last axis
    rows_contiguous: bool = False                        # the output's rows, not columns, are adjacent in memory
    b_in_place: bool = False                             # the micro-kernel reads `b` itself (it is contiguous
                                                         # along a panel): no packing loops
    acc_dtype: str = "f32"                               # the accumulator's (and a's and b's values') dtype
    words: "IntWords | None" = None                      # integer ops with int8 weights: k by words
    block: GemmConfig = field(default_factory=lambda: CONFIG)  # the register block (B's panels are NR wide)
    a_border: Callable[[list[Expr], list[Expr], list[Expr]], Expr] | None = None  # A' read with a test (a
                                                         # conv's padding) for rows outside `interior`
    interior: tuple[tuple[int, int], ...] | None = None  # per row-grid axis, [lo, hi): the rows `a` may read
                                                         # without a test


def int8_word_values() -> int:
    """How many k an int8 product's i32 words hold on this CPU: four bytes
    where the llvm backend has vpdpbusd (AVX-512 VNNI: `dot4`, 64
    multiply-adds an instruction), else two i16 halves (`dot2`, pmaddwd's:
    widening four bytes to pairs of i16 took three shuffles a step; two
    halves come widened, from the prologue and the packed weight)."""
    return 4 if cpu.has("avx512vnni") and cpu.has("avx512bw") else 2


@dataclass
class IntWords:
    """The int8 form of a product's k loop: A' and B' in i32 words of
    `per_word` k (int8_word_values), one `call` per word (dot4 on bytes, dot2
    on i16 halves). k runs as nested loops over `k_shape` (words: its last
    axis counts them), in the order B's words are packed."""

    per_word: int
    a_word: Callable[[list[Expr], list[Expr], list[Expr]], Expr]  # A's word at (b, row, k multi-index)
    k_shape: tuple[int, ...]
    b_words: np.ndarray       # (*b_batch, panels, prod(k_shape), NR) i32, packed at compile time
    colsum: np.ndarray        # (*b_batch, panels * NR) i32: each column's sum of B', for the correction
    offset: int               # subtracted times colsum: A's zero point, plus 128 if A is s8
    prologue: Stmt            # loops that write A's words

    @property
    def call(self) -> str:
        return "dot4" if self.per_word == 4 else "dot2"


def _zero_point(node: Node, i: int) -> Value | None:
    return node.inputs[i] if len(node.inputs) > i else None


def _centred(lw: Lowerer, value: Expr, zp: Value | None, at: Expr) -> Expr:
    """An integer operand as i32, minus its zero point (a scalar, or a vector read at `at`)."""
    value = Cast(value, "i32")
    if zp is None:
        return value
    index = [at] if zp.type.numel > 1 else [const(0)] * zp.type.rank
    return Binary("-", value, Cast(lw.read(zp, index), "i32"))


def centred_weights(w: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    """w - zp (zp per tensor, or a vector along `axis`), in w's dtype when zp is 0, else i16."""
    if zp is None or not np.any(zp):
        return w
    shape = [1] * w.ndim
    if zp.size > 1:
        shape[axis] = -1
    return (w.astype(np.int16) - zp.astype(np.int16).reshape(shape)).astype(np.int16)


def _stored_weight(lw: Lowerer, v: Value) -> np.ndarray | None:
    """The weight array of `v` as stored: through a Cast of f16 or bf16 weights to
    f32 (mixed precision), the 16-bit array, so the packed copy stays half the bytes
    and the micro-kernel widens each element as it loads it (vcvtph2ps)."""
    cast = v.producer
    if cast is not None and cast.op == "Cast" and cast.inputs[0].type.dtype in STORAGE_DTYPES and v.type.dtype == "f32":
        return lw.group_const(cast.inputs[0])
    return lw.group_const(v)


def _matmul_spec(lw: Lowerer, node: Node) -> GemmSpec:
    batch, a_batch, b_batch, m, k, n = _shapes(node)
    a_val, b_val = node.inputs[0], node.inputs[1]
    gemm = node.op == "Gemm"
    trans_a, trans_b = gemm and node.attrs["transA"], gemm and node.attrs["transB"]
    bias = node.inputs[2] if gemm and len(node.inputs) > 2 else None
    alpha, beta = (node.attrs["alpha"], node.attrs["beta"]) if gemm else (1.0, 0.0)
    const_b = _stored_weight(lw, b_val)
    integer = node.op == "MatMulInteger"
    a_read, b_read = lw.read, lw.read
    if integer:
        za, zb = _zero_point(node, 2), _zero_point(node, 3)
        zb_const = None if zb is None else lw.group_const(zb)
        if const_b is not None and (zb is None or zb_const is not None):
            const_b = centred_weights(const_b, zb_const, -1)
        else:
            const_b = None
        a_read = lambda v, idx: _centred(lw, lw.read(v, idx), za, idx[-2])  # noqa: E731
        b_read = lambda v, idx: _centred(lw, lw.read(v, idx), zb, idx[-1])  # noqa: E731
        za_const = np.zeros(1, np.int32) if za is None else lw.group_const(za)

    out_dt = node.outputs[0].type.dtype
    acc_dt = "i32" if integer else _accumulator(out_dt)
    if acc_dt != out_dt and not integer:  # an f16 operand is widened as it is read
        a_read = b_read = lambda v, idx: Cast(lw.read(v, idx), acc_dt)  # noqa: E731

    def adjust(acc: Expr, idx: list[Expr]) -> Expr:
        value = acc if integer else cast(acc, out_dt)  # (f16: the sum in f32, rounded once, as NumPy's)
        value = value if alpha == 1.0 else mul(Const(alpha, value.dtype), value)
        if bias is not None and beta != 0.0:
            c_in = lw.read(bias, broadcast_index(idx, bias.type.shape, (m, n)))
            value = add(value, c_in if beta == 1.0 else mul(Const(beta, value.dtype), c_in))
        return value

    a_vector, b_vector = _vector_operands(node)  # (a Gemm's operands are 2-D)
    block = WIDE_CONFIG if _may_widen(lw, out_dt) and n >= WIDE_CONFIG.nr else CONFIG
    if a_vector:
        a_index = lambda bidx, row, kv: [kv[0]]  # noqa: E731
    else:
        a_index = lambda bidx, row, kv: broadcast_index(bidx, a_batch, batch) + ([kv[0], row[0]] if trans_a else [row[0], kv[0]])  # noqa: E731
    if b_vector and const_b is not None:
        const_b = const_b.reshape(k, 1)
    words = None
    if (integer and lw.device == Device.CPU and const_b is not None and const_b.dtype == np.int8
            and za_const is not None and za_const.size == 1):
        b_kn = np.swapaxes(const_b, -1, -2) if trans_b else const_b
        words = _int_words_rows(lw, node, batch, m, k, lambda bidx, row, kk: lw.read(a_val, a_index(bidx, row, [kk])),
                                b_kn, int(za_const.reshape(())))
    return GemmSpec(
        batch, m, k, n,
        a=lambda bidx, row, kv: a_read(a_val, a_index(bidx, row, kv)),
        b_batch=b_batch,
        b_index=lambda bidx: broadcast_index(bidx, b_batch, batch),
        b=lambda bb, kv, panel, jj: b_read(b_val, [kv[0]] if b_vector else
                                           bb + ([_col(panel, jj, n, block.nr), kv[0]] if trans_b else
                                                 [kv[0], _col(panel, jj, n, block.nr)])),
        b_packed=None if const_b is None or words is not None else pack_b(const_b, block.nr, trans_b),
        out=lambda bidx, row, col: bidx + ([] if a_vector else [row[0]]) + ([] if b_vector else [col]),
        adjust=adjust, acc_dtype=acc_dt, words=words, block=block)


def _conv_spec(lw: Lowerer, node: Node) -> GemmSpec:
    """Conv as a GEMM per (image, group), k running over (channel, *kernel)
    as nested loops, in one of two orientations:

    direct (out channels per group >= DIRECT_MIN_CHANNELS, a weight known at
      compile time): rows are output pixels, columns output channels. B' is the weight, transposed and packed
      at compile time; A' is read straight from the (padded) input: no im2col
      buffer at all. The output's pixels are adjacent in memory, so each block
      is transposed on its way out; that costs little next to a long k loop.
    im2col (few output channels, e.g. depthwise, a short k loop such as a
      stem's 3 channels x 3 x 3, or a weight computed at run time): rows
      are output channels (the weight, a row-major (M, C/g * prod(kernel))
      matrix already, read where it lies), columns output pixels,
      stored as they lie. When a panel of NR pixels lies in one output row and
      the stride along it is 1, the panel's pixels are adjacent in the (padded)
      input too: the micro-kernel reads them in place, with no im2col matrix.
      So it does for a 1x1 conv with stride 1 and no padding (a pointwise conv,
      ResNet's and MobileNet's 1x1s) whenever its pixel count is a multiple of
      NR, across rows: such a conv always takes this form, a GEMM with no copy.
      Otherwise the packing loops build the im2col matrix in B's panels.
    A 1x1 conv with strides (and no padding) on a CPU first copies the pixels
    it reads into a compact buffer (`subsampled_copy`) and is then a conv of
    stride 1 over that, in one of the forms above.
    """
    from ..ir.ops.windows import Window

    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    w_const = _stored_weight(lw, w)
    integer = node.op == "ConvInteger"
    zx, zw = (_zero_point(node, 2), _zero_point(node, 3)) if integer else (None, None)
    if integer:
        bias = None
        zw_const = None if zw is None else lw.group_const(zw)
        # centred at compile time; a weight or weight zero point computed at run
        # time takes the im2col form, which centres each weight as it reads it
        w_const = None if w_const is None or zw is not None and zw_const is None else \
            centred_weights(w_const, zw_const, 0)
    x_zero = None if zx is None else lw.group_const(zx)  # (None: computed at run time, or no zero point)
    acc_dtype = "i32" if integer else node.outputs[0].type.dtype
    a = node.attrs
    win = Window.of(w.type.shape[2:], a["strides"], a["dilations"], a["pads"])
    nimg, chans = x.type.shape[:2]
    spatial, kernel = x.type.shape[2:], tuple(w.type.shape[2:])
    out_sp = tuple(node.outputs[0].type.shape[2:])
    # A strided 1x1 conv without padding (ResNet's projections) reads one pixel in
    # `stride` along each axis: copied compactly first (`subsampled_copy`), it is
    # a pointwise conv of stride 1 over the copy, read in place as B when its
    # pixels fill whole panels, and its reads touch a quarter of the lines
    compact = None
    if (lw.device == Device.CPU and not integer and all(k == 1 for k in kernel) and not any(win.pads)
            and any(st > 1 for st in win.strides)):
        compact = subsampled_copy(lw, x, win, out_sp)
        win, spatial = Window.of(kernel), out_sp
    g = a["group"]
    mg, cg = w.type.shape[0] // g, chans // g
    kc = cg * math.prod(kernel)
    # padding is the zero point: it reads as 0 once centred, as ONNX's ConvInteger pads
    pad = Const(0.0, x.type.dtype) if zx is None else Cast(lw.read(zx, [const(0)] * zx.type.rank), x.type.dtype)

    def read_x(read_src, img: Expr, grp: Expr, c: Expr, o: list[Expr], r: list[Expr]) -> Expr:
        value = read_src([img, add(mul(grp, const(cg)), c)] + window_index(win, o, r))
        return _centred(lw, value, zx, const(0)) if integer else value

    def channel(bidx: list[Expr], m: Expr) -> Expr:
        return add(mul(bidx[1], const(mg)), m)

    def panels(nr: int) -> tuple[int, bool, bool]:
        """(row_panels, in_place, flat) of the im2col form with panels of `nr` pixels."""
        row_panels = out_sp[-1] // nr if out_sp[-1] % nr == 0 else 0
        in_place = bool(row_panels) and win.strides[-1] == 1  # a panel's pixels are adjacent in the (padded) input
        # a 1x1, stride-1, unpadded conv reads its pixels as they lie, rows or not: a
        # panel of any NR consecutive pixels is adjacent in the input. Such a conv
        # (of whole panels of CONFIG's; a wider block's last may be an edge one)
        # always takes the im2col form (nothing to pack, no transposed stores).
        flat = (not in_place and not integer and math.prod(out_sp) % CONFIG.nr == 0 and not any(win.pads)
                and all(k == 1 for k in kernel) and all(st == 1 for st in win.strides))
        return row_panels, in_place, flat
    row_panels, in_place, flat = panels(CONFIG.nr)
    # an int8 conv (one group) takes the direct form with words of k (IntWords), which need no im2col
    int_words = (integer and w_const is not None and w_const.dtype == np.int8 and g == 1 and lw.device == Device.CPU
            and (zx is None or x_zero is not None))  # (its correction needs x's zero point at compile time)
    # (on a GPU the panels do not matter: the direct form's rows stack across images, gpu_gemm.py)
    # (a weight computed at run time cannot be packed at compile time: im2col reads it as A)
    direct = int_words or (w_const is not None and mg >= DIRECT_MIN_CHANNELS and (lw.device == Device.GPU or not flat and not (
        in_place and kc < DIRECT_MIN_K)))
    # A padded float conv of the direct form on a CPU, with wide output rows,
    # reads its input where it lies: blocks whose windows lie inside it read
    # with no test, the blocks at its borders test each read (GemmSpec.interior),
    # and nothing is copied. Narrow maps (14x14, 7x7) copy: there the copy is
    # small, the tested form gained nothing measurable (ResNet-50), and it is
    # several times the code for LLVM. An input computed in the group (a fused
    # channel shuffle) is copied, padded, once, through its index map, rather
    # than mapped again on every read.
    row_blocks = out_sp[-1] >= ROW_BLOCKS_MIN_WIDTH  # (see `grid` below)
    borders = direct and not integer and row_blocks and pads_in_place(lw, x, win)
    # The wide block where the columns fill its panels: output channels (direct, on
    # row blocks, or on a narrow map with a k loop of NARROW_WIDE_MIN_K or more), or
    # pixels whose panels read in place where CONFIG's would. On a narrow map (14 x
    # 14, 7 x 7) a short k keeps CONFIG: there the transposed stores outweigh the k
    # loop (MobileNet's 32-channel expands ran 1.2x to 1.4x slower wide). Where the
    # wide block is CONFIG (AVX2), a narrow map keeps the flat grid of before: the
    # rows that divide its pixels there (5 of 6's) were never measured.
    wide = _may_widen(lw, acc_dtype) and (
        mg >= WIDE_CONFIG.nr and (row_blocks or kc >= NARROW_WIDE_MIN_K and WIDE_CONFIG != CONFIG) if direct
        else any(panels(WIDE_CONFIG.nr)[1:]) == (in_place or flat))
    block = WIDE_CONFIG if wide else CONFIG
    if wide and direct and not row_blocks:
        block = _rows_dividing(block, math.prod(out_sp))
    row_panels, in_place, flat = panels(block.nr)
    if borders:
        read_src, read_border, prologue = read_padded(lw, x, win, pad, False), read_padded(lw, x, win, pad, True), None
        src_shape = None  # (the IntWords form, which needs it, is integer: it copies)
    elif compact is not None:
        (read_src, prologue), src_shape = compact, None
    else:
        read_src, src_shape, prologue = padded_copy(lw, x, win, pad)
    if direct:
        w_t = np.swapaxes(w_const.reshape(g, mg, kc), 1, 2)  # (G, Kc, Mg)
        # wide output rows, or rows of whole wide blocks (7 rows on a 14 x 14 or 7 x 7
        # map): blocks of pixels within one row, so a pixel's position is affine in
        # the block's row (no division in the inner loop), and a conv of few column
        # panels shares out its rows among threads (DenseNet-121's 32-channel 3x3
        # convs, one panel); other narrow ones: blocks run across rows, fewer of them
        # partly empty
        grid = out_sp if row_blocks or wide and out_sp[-1] % block.mr == 0 else (math.prod(out_sp),)
        pixel = (lambda row: row) if len(grid) == len(out_sp) else (lambda row: unflatten(row[0], out_sp))
        return GemmSpec(
            (nimg, g), math.prod(out_sp), kc, mg,
            a=lambda bidx, row, kv: read_x(read_src, bidx[0], bidx[1], kv[0], pixel(row), kv[1:]),
            b_batch=(g,), b_index=lambda bidx: [bidx[1]], b=None, b_packed=None if int_words else pack_b(w_t, block.nr),
            out=lambda bidx, row, col: [bidx[0], channel(bidx, col)] + pixel(row),
            adjust=lambda acc, idx: acc if bias is None else add(acc, lw.read(bias, [idx[1]])),
            prologue=prologue, k_shape=(cg,) + kernel, rows_contiguous=True, row_shape=grid, acc_dtype=acc_dtype,
            words=_int_words_conv(lw, x, read_src, src_shape, w_const, win, pixel,
                                  0 if x_zero is None else int(x_zero.reshape(-1)[0])) if int_words else None,
            a_border=(lambda bidx, row, kv: read_x(read_border, bidx[0], bidx[1], kv[0], pixel(row), kv[1:]))
            if borders else None,
            interior=tuple(window_interior(win, spatial, out_sp)) if borders else None, block=block)

    read_w = _conv_weight(lw, w, w_const)  # A'[channel, k] is W[channel, c, cell...]

    def a_elem(bidx: list[Expr], row: list[Expr], kv: list[Expr]) -> Expr:
        ch = channel(bidx, row[0])
        value = read_w([ch] + list(kv))
        return _centred(lw, value, zw, ch) if integer and w_const is None else cast(value, acc_dtype)

    def b_elem(bb: list[Expr], kv: list[Expr], panel: Expr, jj: Expr) -> Expr:
        if row_panels:  # a panel lies within one output row: its columns are affine in jj
            o = unflatten(Binary("/", panel, const(row_panels)), out_sp[:-1]) + \
                [add(mul(Binary("%", panel, const(row_panels)), const(block.nr)), jj)]
        else:
            o = unflatten(_col(panel, jj, math.prod(out_sp), block.nr), out_sp)
        return read_x(read_src, bb[0], bb[1], kv[0], o, kv[1:])

    return GemmSpec(
        (nimg, g), mg, kc, math.prod(out_sp),
        a=a_elem,
        b_batch=(nimg, g), b_index=lambda bidx: bidx, b=b_elem, b_packed=None,
        out=lambda bidx, row, col: [bidx[0], channel(bidx, row[0])] + unflatten(col, out_sp),
        adjust=lambda acc, idx: acc if bias is None else add(acc, lw.read(bias, [idx[1]])),
        prologue=prologue, k_shape=(cg,) + kernel, b_in_place=in_place or flat, acc_dtype=acc_dtype, block=block)


def _rows_dividing(block: GemmConfig, rows: int) -> GemmConfig:
    """`block`, or one row shorter where that divides `rows` and `block`'s
    rows do not: a narrow map's 196 or 49 pixels in blocks of 7 (two or one
    to a row), with no edge block. An edge block is a second copy of the micro-kernel for LLVM to
    compile: without them, wide blocks on ResNet-50's and DenseNet-121's narrow
    maps cost their cold compiles 2% and 10% more in one process, where they
    cost 12% and 28% with them (and ran no faster)."""
    return replace(block, mr=block.mr - 1) if rows % block.mr and rows % (block.mr - 1) == 0 else block


def _conv_weight(lw: Lowerer, w: Value, w_const: np.ndarray | None) -> Callable[[list[Expr]], Expr]:
    """W's element at a multi-index (output channel, input channel, *cell), as
    it lies: from the weight stored at compile time (as `_stored_weight` gives
    it: f16 or bf16 behind a Cast, widened by the caller's cast), or from its
    buffer when it is computed at run time."""
    if w_const is None:
        return lambda idx: lw.read(w, idx)
    w_dtype = dtype_name(w_const.dtype)
    wbuf = lw.constant_param(w.name, w_const, w_dtype)
    return lambda idx: Load(wbuf, row_major(idx, w.type.shape), w_dtype)


def subsampled_copy(lw: Lowerer, x: Value, win, out_sp: tuple[int, ...]) -> tuple[Callable[[list[Expr]], Expr], Stmt]:
    """(read, loops that fill it): x at every `stride`-th position along each
    spatial axis (a window of one cell, no padding), copied into a compact
    scratch buffer of the output's spatial shape, per (image, channel) plane.
    Along a row the copy reads at stride 2 (or more): vector loads and a
    shuffle on llvm for stride 2."""
    shape = x.type.shape[:2] + tuple(out_sp)
    buf = lw.scratch(x.name + "_strided", x.type.dtype, math.prod(shape))
    plane, pos = lw.var("p"), lw.vars(len(out_sp), "i")
    outer = unflatten(plane, shape[:2])
    src = outer + [mul(i, const(st)) for i, st in zip(pos, win.strides)]
    fill = For(plane, const(math.prod(shape[:2])),
               loop_nest(pos, list(out_sp), Store(buf, row_major(outer + pos, shape), lw.read(x, src))))
    return (lambda idx: Load(buf, row_major(idx, shape), x.type.dtype)), fill


def is_depthwise(node: Node) -> bool:
    """A float Conv whose every group reads one input channel (MobileNet's depthwise convs)."""
    x, w = node.inputs[0].type, node.inputs[1].type
    return (node.op == "Conv" and node.attrs["group"] > 1 and w.shape[1] == 1 and node.attrs["group"] == x.shape[1]
            and node.outputs[0].type.dtype in FLOATS)


def lower_depthwise(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    """A depthwise Conv as a direct stencil, not a GEMM (its k is only the kernel
    size, too short for one): each output element sums its kernel's k*k
    products in registers (multiply-adds, no accumulator buffer), the loop
    along the output row is vectorized, and the channel's weights are scalars
    broadcast to every lane, read once a plane into a local array (`w_ch`,
    registers after LLVM's SROA). The bias and the fused epilogue apply in place.

    Padding costs no copy on a CPU (as for the direct GEMM form): an output row
    inside the interior (`window_interior`) reads with no test along its
    middle stretch and tests each read only at its two ends; the rows at the
    top and bottom test every read. An input computed in the group (a fused
    channel shuffle) is copied, padded, once instead."""
    from itertools import product

    from ..ir.ops.windows import Window

    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    w_const = _stored_weight(lw, w)
    a, dt = node.attrs, node.outputs[0].type.dtype
    win = Window.of(w.type.shape[2:], a["strides"], a["dilations"], a["pads"])
    pad = Const(0.0, x.type.dtype)
    read_src, _, prologue = (None, None, None) if pads_in_place(lw, x, win) else padded_copy(lw, x, win, pad)
    kernel, channels = tuple(w.type.shape[2:]), w.type.shape[0]
    per_group = channels // a["group"]  # output channels per input channel (the depth multiplier)
    weight = _conv_weight(lw, w, w_const)  # W is (channels, 1, *kernel)
    out, chain = epilogue_chain(lw, node)
    buf = lw.buffer_for(out)
    plane, o = lw.var("p"), lw.vars(len(kernel), "o")
    img, ch = Binary("/", plane, const(channels)), Binary("%", plane, const(channels))
    out_sp = node.outputs[0].type.shape[2:]
    taps = list(product(*(range(n) for n in kernel)))
    # the plane's weights and bias: loads from their buffers in the rows LLVM would
    # repeat for every vector, not knowing that the output's stores leave them be
    w_ch = lw.fresh("w_ch")

    def tap(t: int) -> Expr:
        return Load(w_ch, const(t), dt)
    fills = [Store(w_ch, const(t), cast(weight([ch, const(0)] + [const(c) for c in r]), dt)) for t, r in enumerate(taps)]
    if bias is not None:
        fills.append(Store(w_ch, const(len(taps)), lw.read(bias, [ch])))

    def stretch(lead: list[Expr], start: int, stop: int, read) -> Stmt | None:
        """Output pixels [start, stop) of the row at `lead`, their windows read with `read`."""
        if stop <= start:
            return None
        out_idx = [img, ch] + lead + [add(o[-1], const(start)) if start else o[-1]]

        def stencil(idx: list[Expr]) -> Expr:
            if idx != out_idx:
                raise Unsupported("epilogue reads the conv at another index")
            total = None if bias is None else tap(len(taps))
            for t, r in enumerate(taps):
                xv = read([img, Binary("/", ch, const(per_group))] + window_index(win, out_idx[2:], [const(c) for c in r]))
                term = mul(xv, tap(t))
                total = term if total is None else add(total, term)
            return total

        lw.special[id(node.outputs[0])] = stencil
        value = lw.read(out, out_idx)
        del lw.special[id(node.outputs[0])]
        return For(o[-1], const(stop - start), Store(buf, row_major(out_idx, out.type.shape), value), LoopKind.VECTORIZED)

    lead = list(o[:-1])
    row = row_by_borders(lw, x, win, pad, out_sp, lead, stretch) if read_src is None else \
        stretch(lead, 0, out_sp[-1], read_src)
    planes = math.prod(node.outputs[0].type.shape[:2])
    work = planes * math.prod(out_sp) * math.prod(kernel) * 2
    rows = Allocate(w_ch, dt, len(fills), seq(*fills, loop_nest(lead, list(out_sp[:-1]), row)))
    stencils = For(plane, const(planes), rows, LoopKind.PARALLEL if work >= PARALLEL_MIN_FLOPS // 4 else LoopKind.SERIAL)
    lw.buffers[id(out)] = buf
    done.update(id(nd) for nd in chain)  # they ran in the epilogue
    return seq(prologue, stencils)


def _accumulator(dtype: str) -> str:
    """The dtype a float product sums in: f16's in f32, as NumPy's matmul does (a
    Conv on f16 is not lowered: it runs on NumPy)."""
    return "f32" if dtype in WIDENED else dtype


def gemm_spec(lw: Lowerer, node: Node) -> GemmSpec:
    """The product a MatMul, Gemm or Conv computes, as every device's GEMM sees it."""
    dt = node.outputs[0].type.dtype
    if node.op not in INTEGER_OPS and dt not in FLOATS and not (node.op in ("MatMul", "Gemm") and dt in WIDENED):
        raise Unsupported(f"{node.op} on {dt}")
    return _conv_spec(lw, node) if node.op in ("Conv", "ConvInteger") else _matmul_spec(lw, node)


def store_result(lw: Lowerer, spec: GemmSpec, node: Node, out: Value, buf: str, out_idx: list[Expr],
                 value: Expr) -> Stmt:
    """Store the epilogue's value at `out_idx`, given the accumulated product
    there (`value`): the fused elementwise chain up to `out` reads the product
    through `lw.special`."""
    c_val = node.outputs[0]

    def product(idx: list[Expr]) -> Expr:
        if idx != out_idx:
            raise Unsupported("epilogue reads the product at another index")
        return spec.adjust(value, idx)

    lw.special[id(c_val)] = product
    try:
        result = lw.read(out, out_idx)
    finally:
        del lw.special[id(c_val)]
    return Store(buf, row_major(out_idx, out.type.shape), result)


@register_lowering(*GEMM_OPS, devices=(Device.CPU,))
def lower_gemm(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    if is_depthwise(node):
        return lower_depthwise(lw, node, done)
    spec = gemm_spec(lw, node)
    dt = spec.acc_dtype
    m, k, n, batch = spec.m, spec.k, spec.n, spec.batch
    mr, nr = spec.block.mr, spec.block.nr
    panels = -(-n // nr)

    # ---- B', packed: Bp[b_batch][panel][k][nr] ----------------------------------------
    stages: list[Stmt] = [spec.prologue] if spec.prologue is not None else []
    im2col = node.op in ("Conv", "ConvInteger") and spec.b_packed is None and spec.words is None
    b_name = node.inputs[0].name + "_im2col" if im2col else node.inputs[1].name
    b_dt = dt if spec.b_packed is None else dtype_name(spec.b_packed.dtype)
    iw = spec.words
    if iw is not None:  # int8: A's words are written first, B's were packed at compile time
        bp, b_dt = lw.constant_param(b_name + "_words", iw.b_words, "i32"), "i32"
        colsums = lw.constant_param(b_name + "_colsum", iw.colsum, "i32") if iw.offset else None
        stages.append(iw.prologue)
    elif spec.b_packed is not None:
        bp = lw.constant_param(b_name + "_packed", spec.b_packed, b_dt)
    elif spec.b_in_place:
        bp = None
    else:
        bp = lw.scratch(b_name + "_packed", dt, math.prod(spec.b_batch) * panels * k * nr)
        stages.append(_pack_stage(lw, spec, panels, bp, dt))

    out, chain = epilogue_chain(lw, node)
    buf = lw.buffer_for(out)
    nb = math.prod(batch)
    grid = spec.row_shape or (m,)
    full_rows, edge_rows = grid[-1] // mr, grid[-1] % mr
    # a long k loop runs in chunks, each over every row block (see K_CHUNK)
    a_bytes = m * K_CHUNK * node.inputs[0].type.np_dtype.itemsize  # every row's A for one chunk
    k_chunk = _k_chunk(k) if (iw is None and len(spec.k_shape) <= 1 and spec.interior is None and grid[-1] > mr
                              and a_bytes <= CHUNK_MAX_A_BYTES and not spec.rows_contiguous
                              and out.type.dtype == dt) else k
    chunks = k // k_chunk

    def block(bidx: list[Expr], row0: list[Expr], rows: int, panel: Expr, cols: int, tested: bool = False,
              kb: Expr | None = None) -> Stmt:
        """One MR x NR block of C at rows row0.. (a multi-index over the row grid,
        advancing along its last axis), panel `panel`; stores rows x cols.
        `tested`: A' is read with `a_border` (rows outside the interior).
        `kb`: the k chunk it adds (None: all of k). A chunk resumes from the
        sums the one before left in C's place, and leaves its own there, but
        for the last, which applies the epilogue."""
        read_a = spec.a_border if tested else spec.a
        acc = lw.fresh("acc")
        ii, jj = lw.var("ii"), lw.var("jj")
        bb = spec.b_index(bidx)
        b_flat = row_major(bb, spec.b_batch)
        cell = add(mul(ii, const(nr)), jj)
        row = row0[:-1] + [add(row0[-1], ii)]
        k_shape = iw.k_shape if iw is not None else spec.k_shape or (k,)
        kv = lw.vars(len(k_shape), "k" if iw is None else "g")  # g: words of k
        k_loops, k_at = (k_shape, list(kv)) if kb is None else ((k_chunk,), [add(mul(kb, const(k_chunk)), kv[0])])
        if bp is None:
            b_value = spec.b(bb, k_at, panel, jj)
        else:  # packed: Bp[b_batch][panel][k][nr], k counting words on the IntWords path
            b_value = Load(bp, add(mul(add(mul(add(mul(b_flat, const(panels)), panel), const(math.prod(k_shape))),
                                               row_major(k_at, k_shape)), const(nr)), jj), b_dt)
        if iw is not None:  # A's word (broadcast) against a word per column
            fma = Store(acc, cell, Call(iw.call, (Load(acc, cell, dt), iw.a_word(bidx, row, k_at), b_value)))
        else:
            fma = Store(acc, cell, add(Load(acc, cell, dt), mul(read_a(bidx, row, k_at), cast(b_value, dt))))

        def cells(width: int, body: Stmt) -> Stmt:
            """`body` for the block's rows (unrolled) and `width` columns (vectorized):
            acc is then accessed only at constant offsets, whole vectors at a time,
            and LLVM keeps it in vector registers."""
            return For(ii, const(rows), For(jj, const(width), body, LoopKind.VECTORIZED), LoopKind.UNROLLED)
        # packed panels are zero past column n, so an edge block computes them whole
        # (full vectors); B read in place has nothing there, and computes its columns
        width = nr if bp is not None else cols
        window = sum(e > 1 for e in k_loops) > 1  # channels and a kernel window (see GemmConfig.rolled_window)
        compute = loop_nest(list(kv), list(k_loops), cells(width, fma),
                            LoopKind.ROLLED if spec.block.rolled_window and window else LoopKind.SERIAL)
        zero = cells(width, Store(acc, cell, Const(0, dt)))
        value = Load(acc, cell, dt)
        if iw is not None and iw.offset:  # sum (a - z) b = sum a b - z colsum(b)
            column = add(mul(add(mul(b_flat, const(panels)), panel), const(nr)), jj)
            value = Binary("-", value, mul(Const(iw.offset, dt), Load(colsums, column, dt)))
        out_idx = spec.out(bidx, row, add(mul(panel, const(nr)), jj))
        write = store_result(lw, spec, node, out, buf, out_idx, value)
        if spec.rows_contiguous:  # C is stored transposed: vectors run down a column of the block
            store = For(jj, const(cols), For(ii, const(rows), write, LoopKind.VECTORIZED), LoopKind.UNROLLED)
        else:
            store = cells(cols, write)
        if kb is not None:  # partial sums, kept in C's place between chunks
            at = row_major(out_idx, out.type.shape)
            zero = seq(zero, If(Compare(">", kb, const(0)), cells(cols, Store(acc, cell, Load(buf, at, dt)))))
            store = If(Compare("<", kb, const(chunks - 1)), cells(cols, Store(buf, at, value)), store)
        return Allocate(acc, dt, mr * nr, seq(zero, compute, store))

    full_cols, edge_cols = n // nr, n % nr
    parallel = nb * m * n * k * 2 >= PARALLEL_MIN_FLOPS

    # Few column panels (a conv with 16 or 32 output channels) would leave threads
    # idle: then the parallel loop also runs over the first axis of a row grid.
    per = grid[0] if len(grid) > 1 and nb * -(-n // nr) < PARALLEL_MIN_SHARES else 1

    def grid_row(bidx: list[Expr], rows: list[Expr], panel: Expr, cols: int, tested: bool,
                 kb: Expr | None = None) -> Stmt:
        """The blocks of one row of the grid (`rows`: its index on the axes
        before the last). Where some rows need tests (`spec.interior`), a
        grid row inside the interior tests only its first and last blocks,
        which are peeled: their positions are constants there, so most tests
        fold away."""
        ib = lw.var("ib")
        lo, hi = spec.interior[-1] if spec.interior is not None else (0, grid[-1])

        def at(i: Expr, count: int, test: bool) -> Stmt:
            return block(bidx, rows + [i], count, panel, cols, test, kb)
        edge = at(const(full_rows * mr), edge_rows, tested or not lo <= full_rows * mr <= grid[-1] <= hi) \
            if edge_rows else None
        if spec.interior is None or tested:
            return seq(For(ib, const(full_rows), at(mul(ib, const(mr)), mr, tested)) if full_rows else None, edge)
        first = min(-(-lo // mr), full_rows)       # the first block inside [lo, hi)
        last = max(first, min(hi // mr, full_rows))  # past the last one
        inner = For(ib, const(last - first), at(mul(add(ib, const(first)), const(mr)), mr, False)) if last > first \
            else None
        return seq(*[at(const(i * mr), mr, True) for i in range(first)], inner,
                   *[at(const(i * mr), mr, True) for i in range(last, full_rows)], edge)

    def column_panel(bidx: list[Expr], panel: Expr, cols: int, first: Expr | None) -> Stmt:
        """All rows of C (those of grid row `first`, when the rows are shared
        out) against one panel of B: the panel stays in cache meanwhile."""
        lead = lw.vars(len(grid) - 1 - (first is not None), "r")
        lead_extents = list(grid[1 if first is not None else 0:-1])
        rows = ([first] if first is not None else []) + lead
        inside, within = interior_test(rows, spec.interior or (), grid)  # is the grid row inside; its index there
        if any(lo >= hi for lo, hi in spec.interior or ()):  # no row is inside (a map smaller than the window)
            body = grid_row(bidx, rows, panel, cols, True)
        elif inside is not None:
            body = If(inside, grid_row(bidx, within, panel, cols, False), grid_row(bidx, rows, panel, cols, True))
        elif chunks > 1:  # chunk by chunk, each over every row block: the panel's chunk stays in L1
            kb = lw.var("kb")
            body = For(kb, const(chunks), grid_row(bidx, rows, panel, cols, False, kb))
        else:
            body = grid_row(bidx, rows, panel, cols, False)
        return loop_nest(lead, lead_extents, body)

    def panels_loop(count: int, panel: Callable[[Expr], Expr], cols: int, share: bool) -> Stmt:
        """A loop over `count` (batch, panel) pairs, times `per` grid rows."""
        t = lw.var("t")
        pair, first = (Binary("/", t, const(per)), Binary("%", t, const(per))) if per > 1 else (t, None)
        bidx = unflatten(Binary("/", pair, const(count // nb)), batch)
        return For(t, const(count * per), column_panel(bidx, panel(Binary("%", pair, const(count // nb))), cols, first),
                   LoopKind.PARALLEL if share else LoopKind.SERIAL)

    # full column panels, fused with the batch into one parallel loop; then the edge panel
    if full_cols:
        stages.append(panels_loop(nb * full_cols, lambda p: p, nr, parallel))
    if edge_cols:
        stages.append(panels_loop(nb, lambda p: const(full_cols), edge_cols, parallel and nb * per > 1))
    lw.buffers[id(out)] = buf
    done.update(id(nd) for nd in chain)  # they ran in the epilogue
    return seq(*stages)


def _k_chunk(k: int) -> int:
    """How many steps of a product's k loop run over every row block before
    the next steps do: the largest divisor of k from K_CHUNK / 2 to K_CHUNK,
    or k itself (one chunk) when k is short or has no such divisor."""
    if k <= K_CHUNK:
        return k
    return next((c for c in range(K_CHUNK, K_CHUNK // 2 - 1, -1) if k % c == 0), k)


def _word(read: Callable[[Expr], Expr], q: Expr, length: int, per: int) -> Expr:
    """The i32 word of the `per` values of A at positions per*q .. per*q+per-1
    along an axis of `length` (`read(position)` gives one), the first lowest
    (little-endian: bytes, or i16 halves), zeros past the end: each as a u8."""
    word = None
    for t in range(per):
        at = add(mul(q, const(per)), const(t))
        if length % per and t >= length % per:  # the last word reaches past the end
            value = Select(Compare("<", at, const(length)), _as_u8(read(Binary("min", at, const(length - 1)))),
                           Const(0, "i32"))
        else:
            value = _as_u8(read(at))
        # (the top byte's multiple wraps, as it should)
        word = value if word is None else add(word, mul(value, Const(1 << (32 // per * t), "i32")))
    return word


def _u8_shift(dtype: str) -> int:
    """dot4 multiplies u8 by i8: an s8 A is shifted by 128 into u8 (and the
    epilogue takes 128 x colsum(B) back off). dot2's i16 halves take the same."""
    return 128 if dtype == "i8" else 0


def _as_u8(value: Expr) -> Expr:
    """A value of A for a word, as an i32 in [0, 256)."""
    shift = _u8_shift(value.dtype)
    return add(Cast(value, "i32"), Const(shift, "i32")) if shift else Cast(value, "i32")


def _words_along_k(b_kn: np.ndarray, per: int) -> np.ndarray:
    """Int8 B' (..., K, N) as i32 words of `per` consecutive k (bytes, or i16
    halves): (..., ceil(K/per), N), zero past K."""
    *lead, k, n = b_kn.shape
    padded = np.zeros((*lead, -(-k // per) * per, n), np.int8 if per == 4 else np.int16)
    padded[..., :k, :] = b_kn
    grouped = np.ascontiguousarray(np.swapaxes(padded.reshape(*lead, -1, per, n), -1, -2))  # (..., G, N, per)
    return grouped.view(np.int32).reshape(*lead, -1, n)


def _colsum(b_kn: np.ndarray) -> np.ndarray:
    """Each column's sum of B' (..., K, N), padded with zeros to whole panels."""
    sums = b_kn.sum(axis=-2, dtype=np.int32)
    panels = -(-sums.shape[-1] // CONFIG.nr)
    return np.pad(sums, [(0, 0)] * (sums.ndim - 1) + [(0, panels * CONFIG.nr - sums.shape[-1])])


def _int_words_rows(lw: Lowerer, node: Node, batch: tuple[int, ...], m: int, k: int, read_a, b_kn: np.ndarray,
                    a_zero: int) -> IntWords:
    """MatMulInteger's words: a prologue packs each row of A (int8_word_values
    k per word, zeros past k) into words[b][row][k / per]; B's words come from the weight."""
    per = int8_word_values()
    groups = -(-k // per)
    words = lw.scratch(node.inputs[0].name + "_words", "i32", math.prod(batch) * m * groups)
    b, r, q = lw.var("b"), lw.var("r"), lw.var("q")
    bidx = unflatten(b, batch) if batch else []
    word = _word(lambda kk: read_a(bidx, [r], kk), q, k, per)
    nb = math.prod(batch)
    fill = For(b, const(nb), loop_nest([r, q], [m, groups], Store(words, row_major([b, r, q], (nb, m, groups)), word)),
               LoopKind.PARALLEL if nb > 1 and nb * m * k >= (1 << 16) else LoopKind.SERIAL)
    return IntWords(per, lambda bidx, row, kv: Load(words, row_major([row_major(bidx, batch) if batch else const(0),
                                                                      row[0], kv[0]], (nb, m, groups)), "i32"),
                    (groups,), pack_b(_words_along_k(b_kn, per), CONFIG.nr), _colsum(b_kn),
                    a_zero + _u8_shift(node.inputs[0].type.dtype), fill)


def _int_words_conv(lw: Lowerer, x: Value, read_src, src_shape: tuple[int, ...], w: np.ndarray, win, pixel,
                    x_zero: int) -> IntWords:
    """ConvInteger's words, channels innermost: a prologue turns the (padded)
    input (N, C, *P) into words (N, *P, ceil(C/per)), int8_word_values
    channels of a pixel per word, and k runs over (*kernel, C/per). A word's
    place is then affine in the output pixel and the kernel offset: no im2col
    matrix, and no division in the k loop. B's words hold the weight in the
    same (kernel, channel) order."""
    per = int8_word_values()
    n_img, chans, spatial = src_shape[0], src_shape[1], tuple(src_shape[2:])
    cw, kernel = -(-chans // per), tuple(w.shape[2:])
    shape = (n_img,) + spatial + (cw,)
    words = lw.scratch(x.name + "_words", "i32", math.prod(shape))
    plane, q = lw.var("p"), lw.var("q")
    at = unflatten(plane, (n_img,) + spatial)
    word = _word(lambda c: read_src([at[0], c] + at[1:]), q, chans, per)  # channels past C: zeros, as their weights
    fill = For(plane, const(math.prod(shape[:-1])), For(q, const(cw), Store(words, add(mul(plane, const(cw)), q), word)),
               LoopKind.PARALLEL if math.prod(shape) >= (1 << 14) else LoopKind.SERIAL)

    def a_word(bidx: list[Expr], row: list[Expr], kv: list[Expr]) -> Expr:
        return Load(words, row_major([bidx[0]] + window_index(win, pixel(row), kv) + [kv[-1]], shape), "i32")

    by_kernel = np.zeros((w.shape[0],) + kernel + (cw * per,), np.int8)  # (M, *kernel, channels padded to words)
    by_kernel[..., :chans] = np.moveaxis(w, 1, -1)
    b_kn = by_kernel.reshape(w.shape[0], -1).T  # (K, M): k = (*kernel, channel)
    return IntWords(per, a_word, kernel + (cw,), pack_b(_words_along_k(b_kn, per)[None], CONFIG.nr),
                    _colsum(b_kn)[None], x_zero + _u8_shift(x.type.dtype), fill)


def _col(panel: Expr, jj: Expr, n: int, nr: int) -> Expr:
    """Column panel * NR + jj, clamped to the last real column (packing reads in bounds)."""
    col = add(mul(panel, const(nr)), jj)
    return col if n % nr == 0 else Binary("min", col, const(n - 1))


def _pack_stage(lw: Lowerer, spec: GemmSpec, panels: int, bp: str, dt: str) -> Stmt:
    """Loops that pack a run-time B' into panels (zero past column n): for a
    MatMul a copy, for a Conv the im2col transform."""
    k, n, nr = spec.k, spec.n, spec.block.nr
    bb, p, kk, jj = lw.var("b"), lw.var("p"), lw.var("k"), lw.var("jj")
    value = spec.b(unflatten(bb, spec.b_batch), unflatten(kk, spec.k_shape or (k,)), p, jj)
    if n % nr:  # zeros past column n
        value = Select(Compare("<", add(mul(p, const(nr)), jj), const(n)), value, Const(0, dt))
    flat = add(mul(add(mul(add(mul(bb, const(panels)), p), const(k)), kk), const(nr)), jj)
    nbb = math.prod(spec.b_batch)
    return For(bb, const(nbb), loop_nest([p, kk], [panels, k], For(jj, const(nr), Store(bp, flat, value), LoopKind.VECTORIZED)),
               LoopKind.PARALLEL if nbb > 1 and nbb * k * n >= (1 << 16) else LoopKind.SERIAL)


def pack_b(b: np.ndarray, nr: int, trans_b: bool = False) -> np.ndarray:
    """Pack B (..., K, N) into panels (..., ceil(N/nr), K, nr), zero-padded: done
    at compile time for weights, in one pass over them (a model's weights are
    most of what a warm compile touches)."""
    if trans_b:
        b = np.swapaxes(b, -1, -2)
    k, n = b.shape[-2:]
    full, tail = divmod(n, nr)
    packed = np.zeros(b.shape[:-2] + (full + (tail > 0), k, nr), b.dtype)
    packed[..., :full, :, :] = np.swapaxes(b[..., :full * nr].reshape(b.shape[:-2] + (k, full, nr)), -3, -2)
    if tail:
        packed[..., full, :, :tail] = b[..., full * nr:]
    return packed


