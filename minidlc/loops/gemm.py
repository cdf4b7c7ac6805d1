"""Lowering of MatMul and Gemm to a packed, register-blocked loop nest.

C = A @ B is computed block by block: an MR x NR block of C lives in a local
accumulator (`acc`, which LLVM keeps in vector registers once the loops over
it are unrolled), and each step of the k loop adds the outer product of an
MR-column of A and an NR-row of B with fused multiply-adds. B is repacked so
that those NR-rows are contiguous: panel p holds columns [p*NR, (p+1)*NR) as
Bp[p][k][0:NR], zero-padded past N. Weights are constants, so their packing
happens once, at compile time; a B computed at run time is packed by a first
loop nest of the kernel.

The epilogue (Gemm's alpha/beta/C, a bias add, an activation, a residual
add: the elementwise consumers the fuse pass put in the group) is applied to
the accumulator while it is still in registers, and stored once.

The outer (parallel) loop runs over column panels of B, so a panel is read
from memory once and reused, from cache, by every row block of A. Full
blocks and the edge blocks (M % MR rows, N % NR columns) are separate loops
with static extents, so every access is provably in bounds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ir import Kind, Node, Value
from .ir import (Allocate, Binary, Const, Expr, For, Load, LoopKind, Select, Stmt, Store, Compare, add, const,
                 loop_nest, mul, row_major, seq)
from .lower import Lowerer
from .rules import FLOATS, RULES, Unsupported, broadcast_index

GEMM_OPS = ("MatMul", "Gemm")
PARALLEL_MIN_FLOPS = 1 << 21  # below this, threads cost more than they save


@dataclass(frozen=True)
class GemmConfig:
    """Register block: MR rows x NR columns of C (NR a multiple of the vector width)."""

    mr: int = 6
    nr: int = 16


CONFIG = GemmConfig()


def _shapes(node: Node):
    """(batch shape, A batch shape, B batch shape, M, K, N) of a MatMul/Gemm."""
    a, b = node.inputs[0].type.shape, node.inputs[1].type.shape
    if node.op == "Gemm":
        m, k = a[::-1] if node.attrs["transA"] else a
        n = b[0] if node.attrs["transB"] else b[1]
        return (), (), (), m, k, n
    if len(a) < 2 or len(b) < 2:
        raise Unsupported("MatMul with a 1-D operand")
    batch = node.outputs[0].type.shape[:-2]
    return batch, a[:-2], b[:-2], a[-2], a[-1], b[-1]


def _epilogue(lw: Lowerer, node: Node) -> tuple[Value, list[Node]]:
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


def lower_gemm(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    dt = node.outputs[0].type.dtype
    if dt not in FLOATS:
        raise Unsupported(f"{node.op} on {dt}")
    batch, a_batch, b_batch, m, k, n = _shapes(node)
    mr, nr = CONFIG.mr, CONFIG.nr
    panels = -(-n // nr)
    a_val, b_val = node.inputs[0], node.inputs[1]
    trans_a = node.op == "Gemm" and node.attrs["transA"]
    trans_b = node.op == "Gemm" and node.attrs["transB"]

    # ---- B, packed: Bp[batch_b][panel][k][nr] ----------------------------------------
    b_batch_n = math.prod(b_batch)
    const_b = lw.group_const(b_val)
    stages: list[Stmt] = []
    if const_b is not None:
        bp = lw.constant_param(b_val.name + "_packed", pack_b(const_b, nr, trans_b), dt)
    else:
        bp = lw.scratch(b_val.name + "_packed", dt, b_batch_n * panels * k * nr)
        stages.append(_pack_stage(lw, b_val, b_batch, panels, k, n, nr, trans_b, bp, dt))

    out, chain = _epilogue(lw, node)
    c_val = node.outputs[0]
    buf = lw.buffer_for(out)
    bias = node.inputs[2] if node.op == "Gemm" and len(node.inputs) > 2 else None
    alpha, beta = (node.attrs["alpha"], node.attrs["beta"]) if node.op == "Gemm" else (1.0, 0.0)

    def block(bidx: list[Expr], row0: Expr, rows: int, panel: Expr, cols: int) -> Stmt:
        """One MR x NR block of C at rows row0.., panel `panel`; stores rows x cols."""
        acc = lw.fresh("acc")
        ii, jj, kk = lw.var("ii"), lw.var("jj"), lw.var("k")
        a_idx = broadcast_index(bidx, a_batch, batch) + ([kk, add(row0, ii)] if trans_a else [add(row0, ii), kk])
        b_flat = row_major(broadcast_index(bidx, b_batch, batch), b_batch) if b_batch else const(0)
        bp_idx = add(mul(add(mul(add(mul(b_flat, const(panels)), panel), const(k)), kk), const(nr)), jj)
        cell = add(mul(ii, const(nr)), jj)
        fma = Store(acc, cell, add(Load(acc, cell, dt), mul(lw.read(a_val, a_idx), Load(bp, bp_idx, dt))))
        # rows unrolled, columns vectorized: acc is then accessed only at constant
        # offsets, whole vectors at a time, and LLVM keeps it in vector registers
        compute = For(kk, const(k), For(ii, const(rows), For(jj, const(nr), fma, LoopKind.VECTORIZED), LoopKind.UNROLLED))
        zero = For(ii, const(rows), For(jj, const(nr), Store(acc, cell, Const(0.0, dt)), LoopKind.VECTORIZED),
                   LoopKind.UNROLLED)
        out_idx = bidx + [add(row0, ii), add(mul(panel, const(nr)), jj)]

        def product(idx: list[Expr]) -> Expr:
            if idx != out_idx:
                raise Unsupported("epilogue reads the product at another index")
            value: Expr = Load(acc, cell, dt)
            if alpha != 1.0:
                value = mul(Const(alpha, dt), value)
            if bias is not None and beta != 0.0:
                c_in = lw.read(bias, broadcast_index(idx, bias.type.shape, (m, n)))
                value = add(value, c_in if beta == 1.0 else mul(Const(beta, dt), c_in))
            return value

        lw.special[id(c_val)] = product
        result = lw.read(out, out_idx)
        del lw.special[id(c_val)]
        store = For(ii, const(rows), For(jj, const(cols), Store(buf, row_major(out_idx, out.type.shape), result),
                                         LoopKind.VECTORIZED), LoopKind.UNROLLED)
        return Allocate(acc, dt, mr * nr, seq(zero, compute, store))

    nb = math.prod(batch)
    full_rows, full_cols = m // mr, n // nr
    edge_rows, edge_cols = m % mr, n % nr
    parallel = nb * m * n * k * 2 >= PARALLEL_MIN_FLOPS

    def column_panel(bidx: list[Expr], panel: Expr, cols: int) -> Stmt:
        """All rows of C against one panel of B: the panel stays in cache meanwhile."""
        ib = lw.var("ib")
        return seq(For(ib, const(full_rows), block(bidx, mul(ib, const(mr)), mr, panel, cols)) if full_rows else None,
                   block(bidx, const(full_rows * mr), edge_rows, panel, cols) if edge_rows else None)

    # full column panels, fused with the batch into one parallel loop; then the edge panel
    if full_cols:
        t = lw.var("t")
        bidx = _unflatten(Binary("/", t, const(full_cols)), batch)
        stages.append(For(t, const(nb * full_cols), column_panel(bidx, Binary("%", t, const(full_cols)), nr),
                          LoopKind.PARALLEL if parallel else LoopKind.SERIAL))
    if edge_cols:
        b2 = lw.var("b")
        stages.append(For(b2, const(nb), column_panel(_unflatten(b2, batch), const(full_cols), edge_cols),
                          LoopKind.PARALLEL if parallel and nb > 1 else LoopKind.SERIAL))
    lw.buffers[id(out)] = buf
    done.update(id(nd) for nd in chain)  # they ran in the epilogue
    return seq(*stages)


def _unflatten(flat: Expr, shape: tuple[int, ...]) -> list[Expr]:
    from .rules import unravel

    return unravel(flat, shape) if shape else []


def _pack_stage(lw: Lowerer, b_val: Value, b_batch, panels: int, k: int, n: int, nr: int, trans_b: bool,
                bp: str, dt: str) -> Stmt:
    """Loops that repack a run-time B into panels (zero past column n)."""
    nbb = math.prod(b_batch)
    bb, p, kk, jj = lw.var("b"), lw.var("p"), lw.var("k"), lw.var("jj")
    col = add(mul(p, const(nr)), jj)
    clamped = Binary("min", col, const(n - 1))
    idx = _unflatten(bb, b_batch) + ([clamped, kk] if trans_b else [kk, clamped])
    value = Select(Compare("<", col, const(n)), lw.read(b_val, idx), Const(0.0, dt))
    flat = add(mul(add(mul(add(mul(bb, const(panels)), p), const(k)), kk), const(nr)), jj)
    return loop_nest([bb, p, kk], [nbb, panels, k], For(jj, const(nr), Store(bp, flat, value), LoopKind.VECTORIZED))


def pack_b(b: np.ndarray, nr: int, trans_b: bool = False) -> np.ndarray:
    """Pack B (..., K, N) into panels (..., ceil(N/nr), K, nr), zero-padded: done
    at compile time for weights."""
    if trans_b:
        b = np.swapaxes(b, -1, -2)
    k, n = b.shape[-2:]
    panels = -(-n // nr)
    padded = np.zeros(b.shape[:-1] + (panels * nr,), b.dtype)
    padded[..., :n] = b
    return np.ascontiguousarray(padded.reshape(b.shape[:-2] + (k, panels, nr)).swapaxes(-3, -2))


