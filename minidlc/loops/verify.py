"""The loop IR verifier: scoping, dtypes, and in-bounds accesses, proved statically.

Integer division and remainder must have a divisor that is provably neither
0 nor -1 (the machine instruction traps on x / 0 and on MIN / -1). Every buffer index is checked by
interval arithmetic over the loop ranges
(refined by enclosing `if (v < c)` guards): an access that cannot be proved
to lie inside its buffer is an error. Shapes are static, so this proves that
a kernel never reads or writes out of bounds for any input the runtime
accepts (the runtime checks shapes before every native call).
"""
from __future__ import annotations

import numpy as np

from ..ir import DTYPES
from .ir import Allocate, Barrier, Binary, Call, CALLS, Cast, Compare, Const, Expr, For, If, INDEX, Kernel, Load, LoopKind, Scope, Select, Seq, Stmt, Store, Var
from .rules import STORAGE_DTYPES


class LoopIRError(Exception):
    """A kernel is malformed or may access memory out of bounds."""


Range = tuple[int, int]  # inclusive [lo, hi]


def interval(e: Expr, env: dict[Var, Range]) -> Range | None:
    """Bounds of an integer expression (None for any other). Arithmetic wraps
    at the dtype's width: bounds that leave its range, or that cannot be
    derived, are the whole range (any value of the dtype)."""
    r = _interval(e, env)
    full = _dtype_range(e.dtype)
    if full is None:
        return r
    if r is None or r[0] < full[0] or r[1] > full[1]:
        return full
    return r


def _dtype_range(dtype: str) -> Range | None:
    if dtype not in DTYPES or np.dtype(DTYPES[dtype]).kind not in "iu":
        return None
    info = np.iinfo(DTYPES[dtype])
    return int(info.min), int(info.max)


def _interval(e: Expr, env: dict[Var, Range]) -> Range | None:
    if isinstance(e, Const):
        return (int(e.value), int(e.value))
    if isinstance(e, Var):
        return env.get(e)
    if isinstance(e, Binary):
        a, b = interval(e.a, env), interval(e.b, env)
        if a is None or b is None:
            return None
        if e.op == "+":
            return (a[0] + b[0], a[1] + b[1])
        if e.op == "-":
            return (a[0] - b[1], a[1] - b[0])
        if e.op == "*":
            c = [x * y for x in a for y in b]
            return (min(c), max(c))
        if e.op == "min":
            return (min(a[0], b[0]), min(a[1], b[1]))
        if e.op == "max":
            return (max(a[0], b[0]), max(a[1], b[1]))
        if e.op == "/" and b[0] == b[1] and b[0] > 0 and a[0] >= 0:
            return (a[0] // b[0], a[1] // b[0])
        if e.op == "%" and b[0] == b[1] and b[0] > 0 and a[0] >= 0:
            return (0, min(a[1], b[0] - 1))
        if e.op == "mod" and b[0] == b[1] and b[0] > 0:  # floor modulo: never negative
            return (0, b[0] - 1) if a[0] < 0 or a[1] >= b[0] else a
        return None
    if isinstance(e, Select):
        a, b = interval(e.a, env), interval(e.b, env)
        if a is None or b is None:
            return None
        return (min(a[0], b[0]), max(a[1], b[1]))
    if isinstance(e, Cast) and e.dtype == INDEX:
        return interval(e.value, env)
    return None  # (a value read from memory, say: `interval` makes it anything its dtype holds)


def _guarded_divisor(b: Expr, env) -> bool:
    """Whether divisor `b` is `nontrapping_divisor(x)` as the simplifier may
    leave it: select(c, 1, x), c an `or` of `x == 0` / `x == -1` tests
    covering each of 0 and -1 that x may be (a test decided false over the
    loops in scope is dropped)."""
    if not (isinstance(b, Select) and b.a == Const(1, b.dtype)):
        return False
    x, tested = b.b, set()

    def tests(c: Expr) -> bool:
        if isinstance(c, Binary) and c.op == "or":
            return tests(c.a) and tests(c.b)
        if isinstance(c, Compare) and c.op == "==" and c.a == x and c.b in (Const(0, x.dtype), Const(-1, x.dtype)):
            tested.add(int(c.b.value))
            return True
        return False

    r = interval(x, env)
    return tests(b.cond) and all(v in tested for v in (0, -1) if r is None or r[0] <= v <= r[1])


def _narrow(cond: Expr, env: dict[Var, Range]) -> dict[Var, Range]:
    """The variable ranges known to hold inside `if (cond)`."""
    if isinstance(cond, Binary) and cond.op == "and":
        return _narrow(cond.b, _narrow(cond.a, env))
    if isinstance(cond, Compare) and cond.op in ("<", "<="):
        # a + (stuff >= 0) < c: bound every var appearing as a + term with a known-nonneg rest
        bound = interval(cond.b, env)
        if bound is None:
            return env
        limit = bound[1] - (1 if cond.op == "<" else 0)
        terms = _sum_terms(cond.a)
        out = dict(env)
        for t in terms:
            if isinstance(t, Var) and t in env:
                rest_lo = sum((interval(o, env) or (0, 0))[0] for o in terms if o is not t)
                if all(interval(o, env) is not None for o in terms if o is not t):
                    lo, hi = env[t]
                    out[t] = (lo, min(hi, limit - rest_lo))
        return out
    return env


def _sum_terms(e: Expr) -> list[Expr]:
    if isinstance(e, Binary) and e.op == "+":
        return _sum_terms(e.a) + _sum_terms(e.b)
    return [e]


def verify_kernel(k: Kernel) -> None:
    """Raise LoopIRError naming the kernel and the first problem found."""
    bufs = {p.name: (p.dtype, p.size) for p in k.params}
    if len(bufs) != len(k.params):
        raise LoopIRError(f"kernel {k.name}: duplicate parameter names")
    try:
        _check_stmt(k.body, bufs, {})
    except LoopIRError as e:
        raise LoopIRError(f"kernel {k.name}: {e}") from None


def _check_access(buf: str, index: Expr, bufs, env, what: str) -> str:
    if buf not in bufs:
        raise LoopIRError(f"{what} of unknown buffer {buf!r}")
    dtype, size = bufs[buf]
    _check_expr(index, bufs, env)
    if index.dtype != INDEX:
        raise LoopIRError(f"{what} {buf}: index has dtype {index.dtype}, expected {INDEX}")
    r = interval(index, env)
    if r is None or r[0] < 0 or r[1] >= size:
        from .printer import print_expr

        got = "unknown bounds" if r is None else f"index range [{r[0]}, {r[1]}]"
        raise LoopIRError(f"{what} {buf}[{print_expr(index)}] may be out of bounds: "
                          f"{got}, buffer has {size} elements")
    return dtype


def _check_expr(e: Expr, bufs, env) -> None:
    if isinstance(e, Var):
        if e not in env:
            raise LoopIRError(f"variable {e.name} is used outside its loop")
    elif isinstance(e, Load):
        dt = _check_access(e.buf, e.index, bufs, env, "load")
        if dt != e.dtype:
            raise LoopIRError(f"load of {e.buf} has dtype {e.dtype}, buffer is {dt}")
    elif isinstance(e, (Binary, Compare)):
        _check_expr(e.a, bufs, env)
        _check_expr(e.b, bufs, env)
        if e.a.dtype != e.b.dtype:
            raise LoopIRError(f"operands of {e.op} have dtypes {e.a.dtype} and {e.b.dtype}")
        if isinstance(e, Binary) and e.op in ("/", "%", "mod") and e.dtype not in ("f32", "f64"):
            divisor = interval(e.b, env)  # x / 0 and MIN / -1 trap: prove neither can happen
            if (divisor is None or divisor[0] <= 0 <= divisor[1] or divisor[0] <= -1 <= divisor[1]) and \
                    not _guarded_divisor(e.b, env):
                raise LoopIRError(f"integer {e.op} by {e.b!r}, which may be 0 or -1")
    elif isinstance(e, Select):
        for x in (e.cond, e.a, e.b):
            _check_expr(x, bufs, env)
        if e.cond.dtype != "bool" or e.a.dtype != e.b.dtype:
            raise LoopIRError("select needs a bool condition and two operands of one dtype")
    elif isinstance(e, Cast):
        _check_expr(e.value, bufs, env)
        pair = {e.value.dtype, e.dtype}
        if len(pair) == 2 and pair & set(STORAGE_DTYPES) and "f32" not in pair:
            raise LoopIRError(f"cast from {e.value.dtype} to {e.dtype}: f16 and bf16 convert to and from f32 only")
    elif isinstance(e, Call):
        if CALLS.get(e.fn) != len(e.args):
            raise LoopIRError(f"unknown call {e.fn} with {len(e.args)} argument(s)")
        for a in e.args:
            _check_expr(a, bufs, env)


def _check_stmt(s: Stmt, bufs, env, gpu: tuple[str, ...] = ()) -> None:
    """`gpu`: the GPU loops around `s` ("blocks", then "threads"). They nest in
    that order, shared arrays between the two, local ones inside the threads."""
    if isinstance(s, For):
        _check_expr(s.extent, bufs, env)
        ext = interval(s.extent, env)
        if ext is None:
            raise LoopIRError(f"loop {s.var.name} has an extent with unknown bounds")
        if s.var in env:
            raise LoopIRError(f"loop variable {s.var.name} is bound twice")
        inner = gpu
        if s.kind == LoopKind.BLOCKS:
            if env or gpu:
                raise LoopIRError(f"loop {s.var.name} over blocks is not a top-level statement of the kernel")
            inner = ("blocks",)
        elif s.kind == LoopKind.THREADS:
            if "blocks" not in gpu or "threads" in gpu:
                raise LoopIRError(f"loop {s.var.name} over threads is not directly inside a loop over blocks")
            inner = gpu + ("threads",)
        elif "blocks" in gpu and "threads" not in gpu:
            raise LoopIRError(f"loop {s.var.name} runs between a loop over blocks and its threads")
        if s.kind in (LoopKind.BLOCKS, LoopKind.THREADS) and not isinstance(s.extent, Const):
            raise LoopIRError(f"GPU loop {s.var.name} has a run-time extent")
        _check_stmt(s.body, bufs, {**env, s.var: (0, ext[1] - 1)}, inner)
    elif isinstance(s, Store):
        dt = _check_access(s.buf, s.index, bufs, env, "store")
        _check_expr(s.value, bufs, env)
        if s.value.dtype != dt:
            raise LoopIRError(f"store to {s.buf} ({dt}) of a {s.value.dtype} value")
    elif isinstance(s, Allocate):
        if s.buf in bufs:
            raise LoopIRError(f"buffer {s.buf} is allocated twice")
        if (s.scope == Scope.SHARED) != ("blocks" in gpu and "threads" not in gpu):
            raise LoopIRError(f"{s.scope.value} buffer {s.buf} " + ("is not between a loop over blocks and its threads"
                              if s.scope == Scope.SHARED else "is allocated outside a GPU thread"))
        _check_stmt(s.body, {**bufs, s.buf: (s.dtype, s.size)}, env, gpu)
    elif isinstance(s, If):
        _check_expr(s.cond, bufs, env)
        _check_stmt(s.then, bufs, _narrow(s.cond, env), gpu)
        if s.orelse is not None:
            _check_stmt(s.orelse, bufs, env, gpu)
    elif isinstance(s, Seq):
        for x in s.stmts:
            _check_stmt(x, bufs, env, gpu)
    elif isinstance(s, Barrier):
        if "threads" not in gpu:
            raise LoopIRError("a barrier outside a loop over threads")
    else:
        raise LoopIRError(f"not a statement: {s!r}")
