"""Schedule primitives: pure functions from loop IR to loop IR.

Each takes a statement (or kernel body) and the name of a loop variable, and
returns a new tree that computes the same thing in another order or with
another loop kind. They never change results (up to floating-point
reassociation where a loop becomes parallel or vectorized); the tests check
each one against the unscheduled kernel on random shapes.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from .block_reduce import block_reduce
from .ir import Allocate, Const, For, If, Kernel, LoopKind, Seq, Stmt, Var, add, const, mul, seq
from .simplify import simplify
from .transform import fuse_with_inner, map_stmt, substitute_stmt, walk_stmts


class ScheduleError(Exception):
    """A primitive cannot apply here (no such loop, not perfectly nested, ...)."""


def find_loop(s: Stmt, name: str) -> For:
    for x in walk_stmts(s):
        if isinstance(x, For) and x.var.name == name:
            return x
    raise ScheduleError(f"no loop over {name!r}")


def _replace_loop(s: Stmt, name: str, fn) -> Stmt:
    """Rebuild `s` with every loop over `name` replaced by fn(loop)."""
    find_loop(s, name)
    return _replace(s, name, fn)


def _replace(s: Stmt, name: str, fn) -> Stmt:
    if isinstance(s, For):
        if s.var.name == name:
            return fn(s)
        return replace(s, body=_replace(s.body, name, fn))
    if isinstance(s, Seq):
        return Seq(tuple(_replace(x, name, fn) for x in s.stmts))
    if hasattr(s, "body") and not isinstance(s, For):
        return replace(s, body=_replace(s.body, name, fn))
    if hasattr(s, "then"):
        return replace(s, then=_replace(s.then, name, fn),
                       orelse=None if s.orelse is None else _replace(s.orelse, name, fn))
    return s


def _extent(loop: For) -> int:
    if not isinstance(loop.extent, Const):
        raise ScheduleError(f"loop {loop.var.name} has a non-constant extent")
    return int(loop.extent.value)


def split(s: Stmt, name: str, factor: int) -> Stmt:
    """Split a loop into an outer and an inner loop of `factor` iterations.

    before: for (i = 0; i < 10; i++) S(i)
    after:  for (i_o = 0; i_o < 2; i_o++) for (i_i = 0; i_i < 4; i_i++) S(i_o * 4 + i_i)
            for (i_t = 0; i_t < 2; i_t++) S(8 + i_t)          // the tail, when 4 does not divide 10
    """
    def do(loop: For) -> Stmt:
        n = _extent(loop)
        outer, inner, tail = Var(name + "_o"), Var(name + "_i"), Var(name + "_t")
        main = For(outer, const(n // factor), For(inner, const(factor), substitute_stmt(
            loop.body, {loop.var: add(mul(outer, const(factor)), inner)})), loop.kind)
        rest = For(tail, const(n % factor), substitute_stmt(loop.body, {loop.var: add(const(n - n % factor), tail)}))
        return map_stmt(seq(main if n >= factor else None, rest if n % factor else None), simplify)
    return _replace_loop(s, name, do)


def reorder(s: Stmt, names: list[str]) -> Stmt:
    """Permute perfectly nested loops into the order given (outermost first).

    before: for i: for j: S(i, j)       reorder(["j", "i"])
    after:  for j: for i: S(i, j)
    """
    top = None
    for x in walk_stmts(s):
        if isinstance(x, For) and x.var.name in names:
            top = x
            break
    if top is None:
        raise ScheduleError(f"no loop over any of {names}")
    chain, cur = [], top
    while len(chain) < len(names):
        if not isinstance(cur, For):
            raise ScheduleError(f"loops {names} are not perfectly nested")
        chain.append(cur)
        cur = cur.body
    if sorted(l.var.name for l in chain) != sorted(names):
        raise ScheduleError(f"loops {names} are not perfectly nested")
    by_name = {l.var.name: l for l in chain}
    body = cur
    for n in reversed(names):
        body = replace(by_name[n], body=body)
    return _replace_loop(s, top.var.name, lambda _: body)


def fuse(s: Stmt, outer: str, inner: str) -> Stmt:
    """Fuse two perfectly nested loops into one.

    before: for i < 4: for j < 8: S(i, j)
    after:  for ij < 32: S(ij / 8, ij % 8)
    """
    def do(loop: For) -> Stmt:
        if not isinstance(loop.body, For) or loop.body.var.name != inner:
            raise ScheduleError(f"loop {inner} is not directly inside {outer}")
        for nested in (loop, loop.body):
            _extent(nested)  # a ScheduleError unless both extents are constants
        return fuse_with_inner(loop)
    return _replace_loop(s, outer, do)


def _mark(s: Stmt, name: str, kind: LoopKind) -> Stmt:
    return _replace_loop(s, name, lambda loop: replace(loop, kind=kind))


def vectorize(s: Stmt, name: str) -> Stmt:
    """Mark an innermost loop vectorized (LLVM turns it into SIMD code).

    before: for (j = 0; j < 16; j++) S(j)
    after:  for (j = 0; j < 16; j++) {  // vectorized
    """
    loop = find_loop(s, name)
    if any(isinstance(x, For) for x in walk_stmts(loop.body)):
        raise ScheduleError(f"loop {name} is not innermost; only innermost loops are vectorized")
    return _mark(s, name, LoopKind.VECTORIZED)


def parallel(s: Stmt, name: str) -> Stmt:
    """Run a loop's iterations on several threads. The backend parallelizes
    loops that are a kernel's top-level statement; deeper ones stay serial.

    before: for (i = 0; i < M; i++) S(i)
    after:  for (i = 0; i < M; i++) {  // parallel
    """
    find_loop(s, name)
    return _mark(s, name, LoopKind.PARALLEL)


def unroll(s: Stmt, name: str) -> Stmt:
    """Unroll a loop of constant extent fully (the backend emits its body once per iteration).

    before: for (k = 0; k < 4; k++) S(k)
    after:  for (k = 0; k < 4; k++) {  // unrolled    (emitted as S(0); S(1); S(2); S(3))
    """
    _extent(find_loop(s, name))
    return _mark(s, name, LoopKind.UNROLLED)


# ---- the default schedule --------------------------------------------------------------
# Below this many innermost iterations a stage runs on one thread: splitting it
# costs a hand-over between threads (a microsecond or so; they are already running).
PARALLEL_MIN_WORK = 1 << 15


def work(s: Stmt) -> int:
    """How many times the innermost statements of `s` run (loops of unknown extent count once)."""
    if isinstance(s, For):
        return (int(s.extent.value) if isinstance(s.extent, Const) else 1) * work(s.body)
    if isinstance(s, Seq):
        return sum(work(x) for x in s.stmts)
    if isinstance(s, If):
        return work(s.then) + (work(s.orelse) if s.orelse is not None else 0)
    if isinstance(s, Allocate):
        return work(s.body)
    return 1


def _nest(s: Stmt) -> list[For]:
    chain = []
    while isinstance(s, For):
        chain.append(s)
        s = s.body
    return chain


def default_schedule(k: Kernel) -> Kernel:
    """Per top-level loop nest that no lowering scheduled yet: fuse the two
    outer loops when the outer is short, run the outer loop in parallel
    when the nest is big, and vectorize innermost loops."""
    stages = k.body.stmts if isinstance(k.body, Seq) else (k.body,)
    out = []
    for s in stages:
        if any(isinstance(x, For) and x.kind != LoopKind.SERIAL for x in walk_stmts(s)):
            out.append(s)  # scheduled by its lowering (GEMM)
            continue
        chain = _nest(s)
        const_extents = [int(l.extent.value) for l in chain if isinstance(l.extent, Const)]
        if chain and len(const_extents) == len(chain) and work(s) >= PARALLEL_MIN_WORK:
            if len(chain) > 1 and const_extents[0] < 64 and isinstance(chain[0].body, For):
                s = fuse(s, chain[0].var.name, chain[1].var.name)
            s = parallel(s, _nest(s)[0].var.name)
        for x in list(walk_stmts(s)):
            if isinstance(x, For) and x.kind == LoopKind.SERIAL and not any(isinstance(y, For) for y in walk_stmts(x.body)):
                s = vectorize(s, x.var.name)
        out.append(s)
    return replace(k, body=seq(*out))


# ---- the GPU schedule ------------------------------------------------------------------
MAX_BLOCK_THREADS = 256


def block_size(n: int) -> int:
    """Threads per block for n iterations: the largest divisor of n up to
    MAX_BLOCK_THREADS, so that every thread has exactly one iteration and no
    bounds guard is needed (tensor sizes are mostly multiples of 32)."""
    return next(t for t in range(min(n, MAX_BLOCK_THREADS), 0, -1) if n % t == 0)


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
    for loop in _nest(s):
        if not isinstance(loop.extent, Const) or loop.kind != LoopKind.SERIAL:
            break
        chain.append(loop)
    for inner in chain[1:]:
        s = fuse(s, _nest(s)[0].var.name, inner.var.name)
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
    n = _extent(rows)
    threads = block_size(n)
    body = substitute_stmt(rows.body, {rows.var: add(mul(blk, const(threads)), t)})
    return For(blk, const(n // threads), For(t, const(threads), map_stmt(body, simplify), LoopKind.THREADS),
               LoopKind.BLOCKS)


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
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}{i}"
        taken.add(name)
        return Var(name)

    def launch(s: Stmt) -> Stmt:
        if any(isinstance(x, For) and x.kind == LoopKind.BLOCKS for x in walk_stmts(s)):
            return s
        s = _cpu_kinds_dropped(s)
        rows = _rows(s)
        return (rows is not None and block_reduce(rows, names, bufs)) or bind_to_threads(s, names)

    return replace(k, body=seq(*(launch(s) for s in stages)))
