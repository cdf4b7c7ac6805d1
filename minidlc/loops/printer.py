"""Print loop IR as C-like pseudo code, the form `emit("loops")` shows."""
from __future__ import annotations

from .ir import Allocate, Barrier, Binary, Call, Cast, Compare, Const, Expr, For, If, Kernel, Load, LoopKind, Scope, Select, Seq, Stmt, Store, Var

_PREC = {"or": 1, "xor": 2, "and": 3, "+": 5, "-": 5, "*": 6, "/": 6, "%": 6}
_C_OP = {"and": "&&", "or": "||", "xor": "^"}


def print_expr(e: Expr, prec: int = 0) -> str:
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Const):
        if e.dtype == "bool":
            return "true" if e.value else "false"
        if e.dtype.startswith("f"):
            return repr(float(e.value)) + ("f" if e.dtype == "f32" else "")
        return str(int(e.value))
    if isinstance(e, Load):
        return f"{e.buf}[{print_expr(e.index)}]"
    if isinstance(e, Binary):
        if e.op in ("min", "max", "mod"):
            return f"{e.op}({print_expr(e.a)}, {print_expr(e.b)})"
        p = _PREC[e.op]
        s = f"{print_expr(e.a, p)} {_C_OP.get(e.op, e.op)} {print_expr(e.b, p + 1)}"
        return f"({s})" if p < prec else s
    if isinstance(e, Compare):
        s = f"{print_expr(e.a, 5)} {e.op} {print_expr(e.b, 5)}"
        return f"({s})" if prec > 4 else s
    if isinstance(e, Select):
        s = f"{print_expr(e.cond, 1)} ? {print_expr(e.a, 1)} : {print_expr(e.b, 1)}"
        return f"({s})" if prec > 0 else s
    if isinstance(e, Cast):
        return f"({e.dtype}){print_expr(e.value, 9)}"
    if isinstance(e, Call):
        return f"{e.fn}({', '.join(print_expr(a) for a in e.args)})"
    return f"<?{e!r}>"  # the printer never raises: a broken tree still prints


def print_stmt(s: Stmt, indent: int = 0) -> list[str]:
    pad = "  " * indent
    if isinstance(s, For):
        tag = "" if s.kind == LoopKind.SERIAL else f"  // {s.kind.value}"
        head = f"{pad}for ({s.var.name} = 0; {s.var.name} < {print_expr(s.extent)}; {s.var.name}++) {{{tag}"
        return [head, *print_stmt(s.body, indent + 1), pad + "}"]
    if isinstance(s, Store):
        return [f"{pad}{s.buf}[{print_expr(s.index)}] = {print_expr(s.value)};"]
    if isinstance(s, Allocate):
        scope = "" if s.scope == Scope.LOCAL else f"{s.scope.value} "
        return [f"{pad}{scope}{s.dtype} {s.buf}[{s.size}];", *print_stmt(s.body, indent)]
    if isinstance(s, If):
        lines = [f"{pad}if ({print_expr(s.cond)}) {{", *print_stmt(s.then, indent + 1)]
        if s.orelse is not None:
            lines += [pad + "} else {", *print_stmt(s.orelse, indent + 1)]
        return lines + [pad + "}"]
    if isinstance(s, Seq):
        return [line for x in s.stmts for line in print_stmt(x, indent)]
    if isinstance(s, Barrier):
        return [f"{pad}__syncthreads();"]
    return [f"{pad}<?{s!r}>"]


def print_kernel(k: Kernel) -> str:
    params = ", ".join(f"{p.dtype}* {p.name} /*[{p.size}]*/" for p in k.params)
    return "\n".join([f"kernel {k.name}({params}) {{", *print_stmt(k.body, 1), "}"])
