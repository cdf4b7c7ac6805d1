"""The GPU schedule: every stage of a kernel as one launch of blocks of threads.

`gpu_schedule` leaves stages a GPU lowering already bound (the tiled GEMM);
spreads an ordinary stage over threads, one per iteration of its outer
loops (`bind_to_threads`); and gives a stage whose rows reduce long inner
loops a block per row (`block_reduce`).

A block per row: walked by one thread, a row that reduces long loops
(Softmax, LayerNorm, ReduceMean, a GEMV: the inner loops run 64 or more
times) leaves few threads, and a warp's reads strided by the row length.
Here each row gets a block instead; its threads share every inner loop
(thread t takes j = t, t + T, ...: a warp reads adjacent elements), and
each reduction meets in a shared-memory tree. T divides every inner loop's
extent (no bounds tests), is 16 to 256, and is about a warp up to 1024
elements a row, more beyond (32 elements a thread):

    before (one thread per row)          after (one block per row, T threads)
    for i < R:  // threads               for i < R:  // blockIdx.x
                                           shared red[T]
                                           for t < T:  // threadIdx.x
      acc = 0                                acc = 0
      for j < J:                             part = -0.0         // the sum's identity
        acc = acc + x[i, j]                  for jj < J/T: part = part + x[i, jj*T + t]
                                             red[t] = part; barrier
                                             for s = T/2, T/4, .. 1:   // the tree
                                               if t < s: red[t] = red[t] + red[t + s]
                                               barrier
                                             acc = acc + red[0]; barrier
      mean = acc / J                         mean = acc / J      // every thread: a register
      for j < J:                             for jj < J/T:
        y[i, j] = x[i, j] - mean               y[i, jj*T + t] = x[i, jj*T + t] - mean
                                             barrier             // y may be read next
      out[i] = mean                          if t == 0: out[i] = mean
                                             barrier

A row body qualifies when every statement in it is one of: a local
allocation; a store to a local (every thread computes the same value); a
store to memory outside any loop (thread 0 does it: the row's one thread
with p = 0, below); an accumulation loop
(`acc[c] = acc[c] op value`, op + * min max, `value` not reading acc); or a
map loop (stores to memory at indices that move with the loop, reading none
of the buffers it writes but the element it stores). Perfectly nested inner
loops count as one loop.
Anything else keeps one thread per row. The tree reassociates the
reductions, as the CPU's vectorized loops do.

When the row's loads are contiguous across rows rather than along them (a
GEMV against a K x N weight reads B[j, i]; a reduction over an outer axis),
one row per block would read a 32-byte sector per element. Then a block
takes L rows side by side (L up to 8, a sector of f32, and a divisor of the
row count): thread t = p * L + l works on row blk * L + l and takes
j = p, p + P, ... of it (P threads a row, 16 to 256 / L), the tree folds
parts (red[t] += red[t + s * L] for p < s), and the row's stores to memory
are its thread p = 0's (t < L). A warp's lanes then read whole sectors.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

from .ir import (Allocate, Barrier, Binary, Compare, Const, Expr, For, If, Kernel, Load, LoopKind, Scope, Seq, Stmt,
                 Store, Var, add, const, identity, mul, seq)
from .schedule import fuse, perfect_nest
from .simplify import fold_int, simplify
from .transform import fuse_with_inner, map_stmt, stmt_exprs, substitute_stmt, walk_exprs, walk_stmts

MAX_BLOCK_THREADS = 256  # threads per block
BLOCK_REDUCE_MIN = 64  # inner loops shorter than this stay on one thread per row
PER_THREAD = 32        # elements a thread takes before a row gets more than a warp: a warp per row up to
                       # 1024 (as PyTorch's persistent softmax), so the tree's barriers are few next to the loads
LANES = 8              # rows a block may take side by side: 32 bytes of f32, a memory sector
MAP_CHECK_MAX = 1 << 16  # longer map loops stay serial: their stores' indices are not checked one by one


def block_size(n: int, most: int = MAX_BLOCK_THREADS) -> int:
    """Threads per block for n iterations: the largest divisor of n up to
    `most`, so that every thread has exactly one iteration and no bounds
    guard is needed (tensor sizes are mostly multiples of 32)."""
    return next(t for t in range(min(n, most), 0, -1) if n % t == 0)


def _cpu_kinds_dropped(s: Stmt) -> Stmt:
    """Parallel and vectorized loops (a CPU lowering's choices) made serial again."""
    if isinstance(s, For):
        kind = LoopKind.SERIAL if s.kind in (LoopKind.PARALLEL, LoopKind.VECTORIZED) else s.kind
        return replace(s, kind=kind, body=_cpu_kinds_dropped(s.body))
    if isinstance(s, Seq):
        return Seq(tuple(_cpu_kinds_dropped(x) for x in s.stmts))
    if isinstance(s, Allocate):
        return replace(s, body=_cpu_kinds_dropped(s.body))
    if isinstance(s, If):
        return replace(s, then=_cpu_kinds_dropped(s.then),
                       orelse=None if s.orelse is None else _cpu_kinds_dropped(s.orelse))
    return s


def _rows(s: Stmt) -> For | None:
    """The stage's outer loops of constant extent fused into one (None: it has none)."""
    chain = []
    for loop in perfect_nest(s):
        if not isinstance(loop.extent, Const) or loop.kind != LoopKind.SERIAL:
            break
        chain.append(loop)
    for inner in chain[1:]:
        s = fuse(s, perfect_nest(s)[0].var.name, inner.var.name)
    return s if chain else None


def bind_to_threads(s: Stmt, names: Callable[[str], Var]) -> Stmt:
    """One stage as a GPU launch: its outer loops of constant extent fused into
    one, whose iterations become the grid's threads (one each: `block_size`).
    A stage with no such loop runs on one thread.

    before: for (i = 0; i < 64; i++) for (j = 0; j < 100; j++) S(i, j)
    after:  for (b = 0; b < 25; b++) {  // blockIdx.x
              for (t = 0; t < 256; t++) {  // threadIdx.x
                S((b * 256 + t) / 100, (b * 256 + t) % 100)
    """
    rows = _rows(s)
    blk, t = names("blk"), names("t")
    if rows is None:
        return For(blk, const(1), For(t, const(1), s, LoopKind.THREADS), LoopKind.BLOCKS)
    n = int(rows.extent.value)
    threads = block_size(n)
    body = substitute_stmt(rows.body, {rows.var: add(mul(blk, const(threads)), t)})
    return For(blk, const(n // threads), For(t, const(threads), map_stmt(body, simplify), LoopKind.THREADS),
               LoopKind.BLOCKS)


def fresh_name(base: str, taken: set[str]) -> str:
    """`base`, or `base` and a number, whichever `taken` lacks (and now has)."""
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}{i}"
    taken.add(name)
    return name


def gpu_schedule(k: Kernel) -> Kernel:
    """Every top-level stage becomes one launch: stages a GPU lowering already
    bound (the tiled GEMM) stay; rows that reduce long loops get a block each
    (`block_reduce`: Softmax, LayerNorm, ReduceMean, a GEMV); the others are
    spread over threads by `bind_to_threads` (elementwise groups: one thread
    per element; short reductions and pools: one per output)."""
    stages = k.body.stmts if isinstance(k.body, Seq) else (k.body,)
    taken = {x.var.name for st in stages for x in walk_stmts(st) if isinstance(x, For)}
    bufs = {p.name for p in k.params} | {x.buf for st in stages for x in walk_stmts(st) if isinstance(x, Allocate)}

    def names(base: str) -> Var:
        return Var(fresh_name(base, taken))

    def launch(s: Stmt) -> Stmt:
        if any(isinstance(x, For) and x.kind == LoopKind.BLOCKS for x in walk_stmts(s)):
            return s
        s = _cpu_kinds_dropped(s)
        rows = _rows(s)  # (fused once: bind_to_threads finds them fused)
        return (rows is not None and block_reduce(rows, names, bufs)) or bind_to_threads(rows or s, names)

    return replace(k, body=seq(*(launch(s) for s in stages)))


def block_reduce(row_loop: For, names: Callable[[str], Var], taken_bufs: set[str]) -> Stmt | None:
    """`row_loop` (for i < R: one row per iteration) as one block per row, or
    None when its body does not qualify (see the module's docstring)."""
    loops = [x for x in walk_stmts(row_loop.body) if isinstance(x, For)]
    if not loops or not all(isinstance(x.extent, Const) and x.kind == LoopKind.SERIAL for x in loops):
        return None
    body = _fused_inner_nests(row_loop.body)
    if body is None:
        return None
    extents = [int(x.extent.value) for x in walk_stmts(body) if isinstance(x, For)]
    if max(extents) < BLOCK_REDUCE_MIN:
        return None
    lanes = _lanes(body, row_loop)
    parts = _parts(extents, lanes)
    if parts < 16 and lanes > 1:  # too few threads a row beside the lanes: one row a block after all
        lanes, parts = 1, _parts(extents, 1)
    if parts < 16:  # the loops share no divisor worth a block (half a warp at least)
        return None
    blk, t = names("blk"), names("t")
    rewrite = _RowRewrite(t, lanes, parts, names, taken_bufs)
    row = blk if lanes == 1 else add(mul(blk, const(lanes)), rewrite.lane)
    inner = rewrite.stmt(substitute_stmt(body, {row_loop.var: row}), set())
    if inner is None:
        return None
    threads = lanes * parts
    out: Stmt = For(t, const(threads), map_stmt(_without_last_barrier(inner), simplify), LoopKind.THREADS)
    for buf, dtype in rewrite.shared:
        out = Allocate(buf, dtype, threads, out, Scope.SHARED)
    return For(blk, const(int(row_loop.extent.value) // lanes), out, LoopKind.BLOCKS)


def _parts(extents: list[int], lanes: int) -> int:
    """Threads a row: a divisor of every inner loop's extent, about a warp up to
    1024 elements (PER_THREAD each), more beyond, within the block beside the lanes."""
    return block_size(math.gcd(*extents), min(MAX_BLOCK_THREADS // lanes, max(32, min(extents) // PER_THREAD)))


def _lanes(body: Stmt, row_loop: For) -> int:
    """How many rows a block takes side by side: the most (up to LANES, a
    divisor of the row count) that some load of an inner loop reads at
    consecutive addresses, row after row, when no load reads along the row
    at consecutive addresses that move with the row (a GEMV's weight
    column, a reduction over an outer axis). A warp's lanes then read whole
    32-byte sectors, where one row per block reads a sector per element."""
    allocated = {x.buf for x in walk_stmts(body) if isinstance(x, Allocate)}
    rows, row = int(row_loop.extent.value), row_loop.var
    lanes = 1
    for loop in (x for x in walk_stmts(body) if isinstance(x, For)):
        for top in (e for x in walk_stmts(loop.body) for e in stmt_exprs(x)):
            for load in (e for e in walk_exprs(top) if isinstance(e, Load) and e.buf not in allocated):
                at, by_row, by_j = (index_value(load.index, env) for env in ({}, {row: 1}, {loop.var: 1}))
                if None in (at, by_row, by_j):
                    continue
                if by_j - at == 1 and by_row != at:
                    return 1  # reads along the row: one row per block reads it coalesced
                if by_row - at == 1 and by_j - at != 1:
                    lanes = max(lanes, next(n for n in range(min(rows, LANES), 0, -1) if rows % n == 0 and all(
                        index_value(load.index, {row: r}) == at + r for r in range(n))))
    return lanes


def _fused_inner_nests(s: Stmt) -> Stmt | None:
    """`s` with each perfect nest of serial loops fused into one loop (i, j -> i*J + j)."""
    if isinstance(s, For):
        if isinstance(s.body, For):
            return _fused_inner_nests(fuse_with_inner(s))
        body = _fused_inner_nests(s.body)
        return None if body is None else For(s.var, s.extent, body, s.kind)
    if isinstance(s, Seq):
        parts = [_fused_inner_nests(x) for x in s.stmts]
        return None if any(p is None for p in parts) else Seq(tuple(parts))
    if isinstance(s, Allocate):
        body = _fused_inner_nests(s.body)
        return None if body is None else Allocate(s.buf, s.dtype, s.size, body, s.scope)
    return s


def _without_last_barrier(s: Stmt) -> Stmt:
    """The row body without a barrier at its very end (nothing follows it)."""
    if isinstance(s, Seq):
        return seq(*s.stmts[:-1], _without_last_barrier(s.stmts[-1])) if not isinstance(s.stmts[-1], Barrier) \
            else seq(*s.stmts[:-1])
    if isinstance(s, Allocate):
        return Allocate(s.buf, s.dtype, s.size, _without_last_barrier(s.body), s.scope)
    return s


def _loads(s: Stmt) -> set[str]:
    return {e.buf for x in walk_stmts(s) for top in stmt_exprs(x) for e in walk_exprs(top) if isinstance(e, Load)}


def index_value(e: Expr, env: dict[Var, int]) -> int | None:
    """An index expression's value, its variables given by `env` (others 0);
    None when it is not an expression of variables and constants."""
    if isinstance(e, Const):
        return int(e.value)
    if isinstance(e, Var):
        return env.get(e, 0)
    if isinstance(e, Binary):
        a, b = index_value(e.a, env), index_value(e.b, env)
        return None if a is None or b is None else fold_int(e.op, a, b)  # (as the simplifier folds them)
    return None  # a load (an index read from memory), a select: not known


def _one_to_one(index: Expr, loop: For) -> bool:
    """Whether each j of `loop` stores to its own element: the index takes J
    different values as j runs (the other variables held at 0: a row's
    elements are its j's)."""
    extent = int(loop.extent.value)
    if extent > MAP_CHECK_MAX:
        return False
    seen = {index_value(index, {loop.var: j}) for j in range(extent)}
    return None not in seen and len(seen) == extent


class _RowRewrite:
    """The row body, rewritten for the block's threads; `shared` collects the
    trees' shared arrays (name, dtype)."""

    def __init__(self, t: Var, lanes: int, parts: int, names: Callable[[str], Var], taken_bufs: set[str]):
        self.t, self.lanes, self.parts, self.names, self.taken = t, lanes, parts, names, taken_bufs
        # thread t = part * lanes + lane: its row is the block's `lane`th, its share of the row the `part`th
        self.lane: Expr = const(0) if lanes == 1 else Binary("%", t, const(lanes))
        self.part: Expr = t if lanes == 1 else Binary("/", t, const(lanes))
        self.shared: list[tuple[str, str]] = []

    def stmt(self, s: Stmt, local: set[str]) -> Stmt | None:
        if isinstance(s, Allocate) and s.scope == Scope.LOCAL:
            body = self.stmt(s.body, local | {s.buf})
            return None if body is None else Allocate(s.buf, s.dtype, s.size, body, s.scope)
        if isinstance(s, Seq):
            parts = [self.stmt(x, local) for x in s.stmts]
            return None if any(p is None for p in parts) else seq(*parts)
        if isinstance(s, Store):
            # a local: every thread keeps its own copy of its row's value; memory: one thread a row (part 0) writes
            first = Compare("==", self.t, const(0)) if self.lanes == 1 else Compare("<", self.t, const(self.lanes))
            return s if s.buf in local else seq(If(first, s), Barrier())
        if isinstance(s, For):
            return self.accumulation(s, local) or self.map_loop(s, local)
        return None

    def share(self, loop: For, body: Stmt) -> Stmt:
        """`loop` as this thread's share of it: j = jj * P + part (just j = part when J = P)."""
        count = int(loop.extent.value) // self.parts
        if count == 1:
            return substitute_stmt(body, {loop.var: self.part})
        jj = self.names(loop.var.name)
        return For(jj, const(count), substitute_stmt(body, {loop.var: add(mul(jj, const(self.parts)), self.part)}))

    def accumulation(self, loop: For, local: set[str]) -> Stmt | None:
        """`for j: acc[c] = acc[c] op value(j)` as partial sums, a tree, and acc[c] op the tree's root."""
        st = loop.body
        if not (isinstance(st, Store) and st.buf in local and isinstance(st.index, Const) and isinstance(st.value, Binary)):
            return None
        acc = Load(st.buf, st.index, st.value.dtype)
        op, dt = st.value.op, st.value.dtype
        value = st.value.b if st.value.a == acc else st.value.a if st.value.b == acc else None
        start = identity(op, dt)
        if value is None or start is None or st.buf in _loads(Store(st.buf, st.index, value)):
            return None
        partial, red = fresh_name(f"{st.buf}_part", self.taken), fresh_name(f"{st.buf}_red", self.taken)
        self.shared.append((red, dt))
        t, zero = self.t, const(0)
        tree: list[Stmt] = []
        step = self.parts
        while step > 1:  # fold the upper parts onto the lower, step by step: P, then a power of two
            half = 1 << (step - 1).bit_length() - 1 if step & (step - 1) else step // 2
            tree += [If(Compare("<", t, const((step - half) * self.lanes)),  # part < step - half
                        Store(red, t, Binary(op, Load(red, t, dt), Load(red, add(t, const(half * self.lanes)), dt)))),
                     Barrier()]
            step = half
        return Allocate(partial, dt, 1, seq(
            Store(partial, zero, start),
            self.share(loop, Store(partial, zero, Binary(op, Load(partial, zero, dt), value))),
            Store(red, t, Load(partial, zero, dt)), Barrier(), *tree,
            Store(st.buf, st.index, Binary(op, acc, Load(red, self.lane, dt))), Barrier()))

    def map_loop(self, loop: For, local: set[str]) -> Stmt | None:
        """`for j: out[f(j)] = g(j)` (each j its own element of memory; g may read
        out[f(j)] itself, the element its thread writes: Softmax scaling its
        output in place) as this thread's share, then a barrier."""
        stores = loop.body.stmts if isinstance(loop.body, Seq) else (loop.body,)
        if not all(isinstance(x, Store) and x.buf not in local and _one_to_one(x.index, loop) for x in stores):
            return None
        written: dict[str, set[Expr]] = {}
        for x in stores:
            written.setdefault(x.buf, set()).add(x.index)
        if any(written[e.buf] != {e.index} for x in stores for e in walk_exprs(x.value)
               if isinstance(e, Load) and e.buf in written):
            return None
        return seq(self.share(loop, loop.body), Barrier())
