"""An index-expression simplifier: constant folding and algebraic identities.

Lowering writes index arithmetic naively (`((0 * 4 + i) * 8 + j)`), and
schedules add more (`io * 16 + ii`). Simplifying keeps the printed loop IR
readable and gives LLVM less to clean up. Only identities that hold exactly
are applied on integers; on floats only folding of x*1 and x+0 where the
result is bit-identical (x+0.0 is not: -0.0 + 0.0 = 0.0, so it is left).
"""
from __future__ import annotations

from dataclasses import replace
from functools import singledispatch

from .ir import Allocate, Binary, Call, Cast, Compare, Const, Expr, For, If, Kernel, Load, Select, Seq, Stmt, Store, seq

_INT_FOLD = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "min": min,
    "max": max,
}


def _is_int(e: Expr) -> bool:
    return e.dtype in ("i64", "i32", "i16", "i8", "u8")


def _is(e: Expr, value) -> bool:
    return isinstance(e, Const) and e.value == value


def simplify(e: Expr) -> Expr:
    """The simplified form of one expression (bottom-up)."""
    return _simplify(e)


@singledispatch
def _simplify(e):
    return e


@_simplify.register
def _(e: Binary):
    a, b = _simplify(e.a), _simplify(e.b)
    if _is_int(a):
        if isinstance(a, Const) and isinstance(b, Const):
            if e.op in _INT_FOLD:
                return Const(_INT_FOLD[e.op](a.value, b.value), a.dtype)
            if e.op in ("/", "%") and b.value > 0 and a.value >= 0:
                return Const(a.value // b.value if e.op == "/" else a.value % b.value, a.dtype)
        if e.op == "+":
            if _is(a, 0):
                return b
            if _is(b, 0):
                return a
            # (x + c1) + c2 -> x + (c1 + c2)
            if isinstance(b, Const) and isinstance(a, Binary) and a.op == "+" and isinstance(a.b, Const):
                return _simplify(Binary("+", a.a, Const(a.b.value + b.value, a.dtype)))
        if e.op == "-" and _is(b, 0):
            return a
        if e.op == "*":
            if _is(a, 0) or _is(b, 0):
                return Const(0, a.dtype)
            if _is(a, 1):
                return b
            if _is(b, 1):
                return a
        if e.op == "/" and _is(b, 1):
            return a
        if e.op == "%" and _is(b, 1):
            return Const(0, a.dtype)
    elif e.op == "*" and (_is(b, 1.0)):
        return a
    return Binary(e.op, a, b)


@_simplify.register
def _(e: Compare):
    return Compare(e.op, _simplify(e.a), _simplify(e.b))


@_simplify.register
def _(e: Select):
    c = _simplify(e.cond)
    if isinstance(c, Const):
        return _simplify(e.a if c.value else e.b)
    return Select(c, _simplify(e.a), _simplify(e.b))


@_simplify.register
def _(e: Cast):
    v = _simplify(e.value)
    return v if v.dtype == e.dtype else Cast(v, e.dtype)


@_simplify.register
def _(e: Call):
    return Call(e.fn, tuple(_simplify(a) for a in e.args))


@_simplify.register
def _(e: Load):
    return Load(e.buf, _simplify(e.index), e.dtype)


def simplify_stmt(s: Stmt) -> Stmt:
    """Simplify every expression in a statement; drop loops of extent 0 and
    replace loops of extent 1 by their body with the variable set to 0."""
    if isinstance(s, For):
        ext = _simplify(s.extent)
        if _is(ext, 0):
            return Seq(())
        body = simplify_stmt(s.body)
        if _is(ext, 1):
            from .transform import substitute_stmt

            return simplify_stmt(substitute_stmt(body, {s.var: Const(0, s.var.dtype)}))
        return replace(s, extent=ext, body=body)
    if isinstance(s, Store):
        return Store(s.buf, _simplify(s.index), _simplify(s.value))
    if isinstance(s, Allocate):
        return replace(s, body=simplify_stmt(s.body))
    if isinstance(s, If):
        c = _simplify(s.cond)
        if isinstance(c, Const):
            taken = s.then if c.value else s.orelse
            return simplify_stmt(taken) if taken is not None else Seq(())
        return If(c, simplify_stmt(s.then), None if s.orelse is None else simplify_stmt(s.orelse))
    if isinstance(s, Seq):
        return seq(*(simplify_stmt(x) for x in s.stmts)) if s.stmts else s
    raise TypeError(f"not a statement: {s!r}")


def simplify_kernel(k: Kernel) -> Kernel:
    return replace(k, body=simplify_stmt(k.body))

