"""Schedule primitives: pure functions from loop IR to loop IR.

Each takes a statement (or kernel body) and the name of a loop variable, and
returns a new tree that computes the same thing in another order or with
another loop kind. They never change results (up to floating-point
reassociation where a loop becomes parallel or vectorized); the tests check
each one against the unscheduled kernel on random shapes.
"""
from __future__ import annotations

from dataclasses import replace

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


def perfect_nest(s: Stmt) -> list[For]:
    """The loops of `s` nested perfectly from the top (for i: for j: ... -> [i, j, ...])."""
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
        chain = perfect_nest(s)
        const_extents = [int(l.extent.value) for l in chain if isinstance(l.extent, Const)]
        if chain and len(const_extents) == len(chain) and work(s) >= PARALLEL_MIN_WORK:
            if len(chain) > 1 and const_extents[0] < 64 and isinstance(chain[0].body, For):
                s = fuse(s, chain[0].var.name, chain[1].var.name)
            s = parallel(s, perfect_nest(s)[0].var.name)
        for x in list(walk_stmts(s)):
            if isinstance(x, For) and x.kind == LoopKind.SERIAL and not any(isinstance(y, For) for y in walk_stmts(x.body)):
                s = vectorize(s, x.var.name)
        out.append(s)
    return replace(k, body=seq(*out))
