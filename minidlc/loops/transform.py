"""Generic rewriting helpers for loop IR: substitution and traversal."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterator

from .ir import (INDEX, Allocate, Barrier, Binary, Call, Cast, Compare, Const, Expr, For, If, Kernel, Load, Select, Seq,
                 Stmt, Store, Var)


def map_expr(e: Expr, fn: Callable[[Expr], Expr | None]) -> Expr:
    """Rebuild `e` bottom-up; `fn(node)` may return a replacement (or None to
    keep). A node whose children come back unchanged is kept, not rebuilt
    (nodes are immutable), which makes a rename that touches a few loads cheap."""
    if isinstance(e, Binary):
        a, b = map_expr(e.a, fn), map_expr(e.b, fn)
        if a is not e.a or b is not e.b:
            e = Binary(e.op, a, b)
    elif isinstance(e, Compare):
        a, b = map_expr(e.a, fn), map_expr(e.b, fn)
        if a is not e.a or b is not e.b:
            e = Compare(e.op, a, b)
    elif isinstance(e, Select):
        c, a, b = map_expr(e.cond, fn), map_expr(e.a, fn), map_expr(e.b, fn)
        if c is not e.cond or a is not e.a or b is not e.b:
            e = Select(c, a, b)
    elif isinstance(e, Cast):
        v = map_expr(e.value, fn)
        if v is not e.value:
            e = Cast(v, e.dtype)
    elif isinstance(e, Call):
        args = tuple(map_expr(a, fn) for a in e.args)
        if any(x is not y for x, y in zip(args, e.args)):
            e = Call(e.fn, args)
    elif isinstance(e, Load):
        i = map_expr(e.index, fn)
        if i is not e.index:
            e = Load(e.buf, i, e.dtype)
    out = fn(e)
    return e if out is None else out


def map_stmt(s: Stmt, expr_fn: Callable[[Expr], Expr | None]) -> Stmt:
    """Apply `map_expr(., expr_fn)` to every expression of a statement tree."""
    if isinstance(s, For):
        return replace(s, extent=map_expr(s.extent, expr_fn), body=map_stmt(s.body, expr_fn))
    if isinstance(s, Store):
        return Store(s.buf, map_expr(s.index, expr_fn), map_expr(s.value, expr_fn))
    if isinstance(s, Allocate):
        return replace(s, body=map_stmt(s.body, expr_fn))
    if isinstance(s, If):
        return If(map_expr(s.cond, expr_fn), map_stmt(s.then, expr_fn),
                  None if s.orelse is None else map_stmt(s.orelse, expr_fn))
    if isinstance(s, Seq):
        return Seq(tuple(map_stmt(x, expr_fn) for x in s.stmts))
    if isinstance(s, Barrier):
        return s
    raise TypeError(f"not a statement: {s!r}")


def substitute(e: Expr, env: dict[Var, Expr]) -> Expr:
    return map_expr(e, lambda x: env.get(x) if isinstance(x, Var) else None)


def substitute_stmt(s: Stmt, env: dict[Var, Expr]) -> Stmt:
    return map_stmt(s, lambda x: env.get(x) if isinstance(x, Var) else None)


def fuse_with_inner(loop: For) -> For:
    """A loop and the loop directly inside it (constant extents) as one loop.

    before: for i < 4: for j < 8: S(i, j)
    after:  for i_j < 32: S(i_j / 8, i_j % 8)
    """
    inner = loop.body
    no, ni = int(loop.extent.value), int(inner.extent.value)
    f = Var(f"{loop.var.name}_{inner.var.name}")
    n = Const(ni, INDEX)
    body = substitute_stmt(inner.body, {loop.var: Binary("/", f, n), inner.var: Binary("%", f, n)})
    return For(f, Const(no * ni, INDEX), body, loop.kind)


def walk_stmts(s: Stmt) -> Iterator[Stmt]:
    """Every statement in the tree, pre-order."""
    yield s
    if isinstance(s, (For, Allocate)):
        yield from walk_stmts(s.body)
    elif isinstance(s, If):
        yield from walk_stmts(s.then)
        if s.orelse is not None:
            yield from walk_stmts(s.orelse)
    elif isinstance(s, Seq):
        for x in s.stmts:
            yield from walk_stmts(x)


def children(e: Expr) -> tuple[Expr, ...]:
    """The operands of an expression node (a Load's: its index)."""
    if isinstance(e, (Binary, Compare)):
        return (e.a, e.b)
    if isinstance(e, Select):
        return (e.cond, e.a, e.b)
    if isinstance(e, Cast):
        return (e.value,)
    if isinstance(e, Call):
        return e.args
    if isinstance(e, Load):
        return (e.index,)
    return ()


def walk_exprs(e: Expr) -> Iterator[Expr]:
    """Every node of the expression tree, pre-order."""
    yield e
    for c in children(e):
        yield from walk_exprs(c)


def stmt_exprs(s: Stmt) -> Iterator[Expr]:
    """The expressions directly held by one statement (not its children's)."""
    if isinstance(s, For):
        yield s.extent
    elif isinstance(s, Store):
        yield s.index
        yield s.value
    elif isinstance(s, If):
        yield s.cond


def rename_buffers(s: Stmt, names: dict[str, str]) -> Stmt:
    """`s` with the buffers in `names` renamed (in loads, stores and allocations)."""
    def expr(e: Expr) -> Expr | None:
        return Load(names[e.buf], e.index, e.dtype) if isinstance(e, Load) and e.buf in names else None

    def go(s: Stmt) -> Stmt:
        if isinstance(s, Store):
            return Store(names.get(s.buf, s.buf), map_expr(s.index, expr), map_expr(s.value, expr))
        if isinstance(s, For):
            return replace(s, extent=map_expr(s.extent, expr), body=go(s.body))
        if isinstance(s, Allocate):
            return replace(s, buf=names.get(s.buf, s.buf), body=go(s.body))
        if isinstance(s, If):
            return If(map_expr(s.cond, expr), go(s.then), None if s.orelse is None else go(s.orelse))
        if isinstance(s, Seq):
            return Seq(tuple(go(x) for x in s.stmts))
        return s
    return go(s)


def canonical_kernel(k: Kernel) -> Kernel:
    """`k` with its name and its parameters' names replaced by positions, and
    their sizes dropped (the code never reads them: indices are in the body).
    Kernels that differ only in those (a repeated layer of one shape) compile
    to the same code: backends compile one of them and share it."""
    names = {p.name: f"p{i}" for i, p in enumerate(k.params)}
    return Kernel("", tuple(replace(p, name=names[p.name], size=0) for p in k.params), rename_buffers(k.body, names))
