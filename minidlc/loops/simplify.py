"""An index-expression simplifier: constant folding and algebraic identities.

Lowering writes index arithmetic naively (`((0 * 4 + i) * 8 + j)`), and
schedules add more (`io * 16 + ii`). Simplifying keeps the printed loop IR
readable and gives LLVM less to clean up. Only identities that hold exactly
are applied on integers; on floats only folding of x*1 and x+0 where the
result is bit-identical (x+0.0 is not: -0.0 + 0.0 = 0.0, so it is left).
Inside loops of constant extent, integer division and remainder by a
constant use the loops' ranges: a flat index split again into a shape
((p * 49 + i * 7 + j) / 49 with i, j < 7) comes apart into its variables,
so reshapes and channel shuffles index without dividing.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from functools import singledispatch

from .ir import (GPU_LOOPS, INDEX, Allocate, Barrier, Binary, Call, Cast, Compare, Const, Expr, For, If, Load, Select, Seq,
                 Stmt, Store, Var, seq)
from .verify import interval

_INT_FOLD = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "min": min,
    "max": max,
}


def fold_int(op: str, a: int, b: int) -> int | None:
    """`a op b` of two integer constants, or None when it is not known here:
    a division or remainder is folded only for a >= 0 and b > 0, where C's
    truncation and Python's floor agree."""
    if op in _INT_FOLD:
        return _INT_FOLD[op](a, b)
    if op in ("/", "%") and a >= 0 and b > 0:
        return a // b if op == "/" else a % b
    return None


def _is_int(e: Expr) -> bool:
    return e.dtype in ("i64", "i32", "i16", "i8", "u8")


def _is(e: Expr, value) -> bool:
    return isinstance(e, Const) and e.value == value


def _is_sum(e: Expr) -> bool:
    return isinstance(e, Binary) and e.op in ("+", "-")


def simplify(e: Expr) -> Expr:
    """The simplified form of one expression (bottom-up)."""
    return _simplify(e)


# The loop variables in scope while simplify_stmt walks a statement, with their
# ranges: what lets (i * 49 + j * 7 + k) / 49 become i when j, k < 7. (Per
# thread: two threads may compile at once.)
_SCOPE = threading.local()


def _ranges() -> dict[Var, tuple[int, int]]:
    if not hasattr(_SCOPE, "ranges"):
        _SCOPE.ranges = {}
    return _SCOPE.ranges


def _interval(e: Expr) -> tuple[int, int] | None:
    """Bounds of an integer expression over the loop variables in scope, or
    None (the verifier's interval arithmetic, over those loops' ranges)."""
    return interval(e, _ranges())


def _divide(op: str, a: Expr, d: int) -> Expr | None:
    """a / d or a % d without the division (a >= 0 over the loops in scope), when
    a = c * h + r with every term of h's a multiple of c, c dividing d and
    0 <= r < c: then a / d = h / (d / c) and a % d = (h % (d / c)) * c + r
    (c = d takes the division away; (p * 49 + i * 7 + j) / 196 is p / 4 when
    i, j < 7). Failing that, when a = d * h + r with r >= 0 (r may be d or
    more): a / d = h + r / d and a % d = r % d. None when neither applies."""
    coeffs: dict = {}
    konst = _linear(a, 1, coeffs, [])
    whole = _interval(a)
    if whole is None or whole[0] < 0:
        return None
    for c in sorted({k for k in coeffs.values() if k > 1 and d % k == 0} | {d}, reverse=True):  # c > 1: progress
        high = [(t, k // c) for t, k in coeffs.items() if k and k % c == 0]
        low = _combine([(t, k) for t, k in coeffs.items() if k and k % c], konst % c, a.dtype)
        rest = _interval(low)
        if rest is None or rest[0] < 0 or rest[1] >= c:
            continue
        h = _combine(high, konst // c, a.dtype)
        if c == d:
            return h if op == "/" else low
        div = _simplify(Binary(op, h, Const(d // c, a.dtype)))
        return div if op == "/" else _simplify(Binary("+", Binary("*", div, Const(c, a.dtype)), low))
    # (kt * 18 + r) / 9 is kt * 2 + r / 9 for any r >= 0: what changes with kt leaves the division
    high = [(t, k // d) for t, k in coeffs.items() if k and k % d == 0]
    low = _combine([(t, k) for t, k in coeffs.items() if k and k % d], konst % d, a.dtype)
    rest = _interval(low)
    if not high and konst // d == 0 or rest is None or rest[0] < 0:
        return None
    part = _simplify(Binary(op, low, Const(d, a.dtype)))
    return _simplify(Binary("+", _combine(high, konst // d, a.dtype), part)) if op == "/" else part


def _combine(terms: list, konst: int, dtype: str) -> Expr:
    out: Expr = Const(konst, dtype)
    for t, k in terms:
        out = Binary("+", out, t if k == 1 else Binary("*", t, Const(k, dtype)))
    return _sum(out) if terms else out


@singledispatch
def _simplify(e):
    return e


def _linear(e: Expr, scale: int, out: dict, order: list) -> int:
    """Add scale * e to `out` (atom -> coefficient) as a linear combination; returns its constant part."""
    if isinstance(e, Const):
        return scale * int(e.value)
    if isinstance(e, Binary) and e.op in ("+", "-"):
        return _linear(e.a, scale, out, order) + _linear(e.b, scale if e.op == "+" else -scale, out, order)
    if isinstance(e, Binary) and e.op == "*" and isinstance(e.b, Const):
        return _linear(e.a, scale * int(e.b.value), out, order)
    if isinstance(e, Binary) and e.op == "*" and isinstance(e.a, Const):
        return _linear(e.b, scale * int(e.a.value), out, order)
    if e not in out:
        order.append(e)
    out[e] = out.get(e, 0) + scale
    return 0


def _sum(e: Binary) -> Expr:
    """Canonical form of an integer sum: terms with constant coefficients, the
    constant last, and (x / c) * c + x % c folded back into x, which undoes the
    unravel-then-flatten round trips that reshapes produce."""
    coeffs: dict = {}
    order: list = []
    konst = _linear(e, 1, coeffs, order)
    changed = True
    while changed:
        changed = False
        for t in list(order):
            if isinstance(t, Binary) and t.op == "%" and isinstance(t.b, Const) and coeffs.get(t):
                q = Binary("/", t.a, t.b)
                k = coeffs[t]
                if coeffs.get(q) == k * int(t.b.value):
                    coeffs[t] = coeffs[q] = 0
                    if t.a not in coeffs:
                        order.append(t.a)
                    coeffs[t.a] = coeffs.get(t.a, 0) + k
                    changed = True
    out: Expr | None = None
    for t in order:
        k = coeffs[t]
        if k == 0:
            continue
        term = t if k == 1 else Binary("*", t, Const(k, e.dtype)) if k > 0 else None
        if term is None:  # a negative coefficient: subtract
            out = Binary("-", out if out is not None else Const(0, e.dtype), t if k == -1 else Binary("*", t, Const(-k, e.dtype)))
        else:
            out = term if out is None else Binary("+", out, term)
    if out is None:
        return Const(konst, e.dtype)
    return Binary("+", out, Const(konst, e.dtype)) if konst > 0 else Binary("-", out, Const(-konst, e.dtype)) if konst else out


@_simplify.register
def _(e: Binary):
    a, b = _simplify(e.a), _simplify(e.b)
    if e.op in ("and", "or") and a.dtype == "bool" and (isinstance(a, Const) or isinstance(b, Const)):
        known, other = (a, b) if isinstance(a, Const) else (b, a)
        return (other if known.value else known) if e.op == "and" else (known if known.value else other)
    if e.op in ("min", "max") and a.dtype == INDEX:  # one side never passes the other over the loops in scope
        ia, ib = _interval(a), _interval(b)
        if ia is not None and ib is not None:
            low, high = (a, b) if ia[1] <= ib[0] else (b, a) if ib[1] <= ia[0] else (None, None)
            if low is not None:
                return low if e.op == "min" else high
    if _is_int(a) and e.op in ("+", "-") or (e.op == "*" and _is_int(a) and (isinstance(a, Const) or isinstance(b, Const))
                                             and (_is_sum(a) or _is_sum(b))):
        return _sum(Binary(e.op, a, b))
    if _is_int(a):
        if isinstance(a, Const) and isinstance(b, Const):
            folded = fold_int(e.op, a.value, b.value)
            if folded is not None:
                return Const(folded, a.dtype)
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
        if e.op in ("/", "%") and isinstance(b, Const) and b.value > 1:
            exact = _divide(e.op, a, int(b.value))
            if exact is not None:
                return exact
    elif e.op == "*" and (_is(b, 1.0)):
        return a
    return Binary(e.op, a, b)


@_simplify.register
def _(e: Compare):
    a, b = _simplify(e.a), _simplify(e.b)
    if a.dtype == INDEX:  # decided by the ranges over the loops in scope (a padded read's test, inside)
        ia, ib = _interval(a), _interval(b)
        if ia is not None and ib is not None:
            decided = _decide(e.op, ia, ib)
            if decided is not None:
                return Const(decided, "bool")
    return Compare(e.op, a, b)


def _decide(op: str, a: tuple[int, int], b: tuple[int, int]) -> bool | None:
    """`x op y` for every x in [a] and y in [b] (inclusive ranges), or None when it depends."""
    if op in (">", ">="):
        op, a, b = {">": "<", ">=": "<="}[op], b, a
    if op == "<":
        return True if a[1] < b[0] else False if a[0] >= b[1] else None
    if op == "<=":
        return True if a[1] <= b[0] else False if a[0] > b[1] else None
    if a[0] == a[1] == b[0] == b[1]:
        return op == "=="
    if a[1] < b[0] or b[1] < a[0]:
        return op == "!="
    return None


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
        ranges = _ranges()
        outer = ranges.pop(s.var, None)  # (a variable bound twice is the verifier's to reject)
        if isinstance(ext, Const):
            ranges[s.var] = (0, int(ext.value) - 1)
        try:
            body = simplify_stmt(s.body)
        finally:
            ranges.pop(s.var, None)
            if outer is not None:
                ranges[s.var] = outer
        if _is(ext, 1) and s.kind not in GPU_LOOPS:  # a GPU loop of one iteration is still a launch
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
    if isinstance(s, Barrier):
        return s
    raise TypeError(f"not a statement: {s!r}")
