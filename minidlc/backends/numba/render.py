"""Loop IR -> Python source for Numba: one function per kernel, one per program.

A kernel becomes a function of flat NumPy arrays (its parameters, in order):

    @njit(...)
    def k_fused_matmul_relu(x, w_packed, out):
        for i0 in prange(64):                    # parallel loop
            for j1 in range(16):                 # vectorized: a plain loop LLVM vectorizes
                out[np.uint64(i0 * 16 + j1)] = rt.fmax(...)

Loops marked unrolled are unrolled here, so a small `Allocate` read and
written only at constant indices becomes scalar variables; other allocations
are arrays on the stack (allocated once, in the function's entry block), which
LLVM can keep in registers.

Numba's compile time grows with the calls it must type, so constants are
typed module globals (`F32_0p5 = np.float32(0.5)`: Numba freezes globals as
constants), which also keeps f32 arithmetic in f32; and a subexpression used
twice in one statement (exp's argument, say) is computed once into a
temporary `tN`. Integer arithmetic narrower than 64 bits is wrapped back to
its dtype, as Numba widens it. Operations whose Python meaning differs from the loop IR's
(integer / and %, NaN-propagating min/max, saturating float-to-int casts,
ldexp, dot4, dot2) call the intrinsics in support.py, imported as `rt`.
"""
from __future__ import annotations

import keyword
import math
import re
from collections import Counter
from dataclasses import replace

import numpy as np

from ...ir import DTYPES
from ...loops.ir import (Allocate, Binary, Call, Cast, Compare, Const, Expr, For, If, Kernel, Load, LoopKind, Select,
                         Seq, Stmt, Store, Var)
from ...loops.simplify import simplify_stmt
from ...loops.transform import canonical_kernel, children, stmt_exprs, substitute_stmt, walk_exprs, walk_stmts

NP_TYPE = {"f32": "np.float32", "f64": "np.float64", "i8": "np.int8", "u8": "np.uint8", "i16": "np.int16",
           "i32": "np.int32", "i64": "np.int64", "bool": "np.bool_",
           "f16": "np.uint16", "bf16": "np.uint16"}  # f16 as its bits: Numba has no float16 (see as_numba)
_NP_CALL = {"exp": "np.exp", "log": "np.log", "sqrt": "np.sqrt", "tanh": "np.tanh", "sin": "np.sin", "cos": "np.cos",
            "floor": "np.floor", "ceil": "np.ceil", "round": "np.rint", "pow": "np.power", "abs": "np.abs"}
_PY_OP = {"+": "+", "-": "-", "*": "*", "and": "&", "or": "|", "xor": "^"}
RESERVED = set(keyword.kwlist) | {"np", "rt", "math", "prange", "range", "njit", "carray", "min", "max", "abs"}


def _is_float(dtype: str) -> bool:
    return dtype in ("f32", "f64")


def literal(c: Const) -> str:
    """The Python expression of a constant, with its dtype."""
    if c.dtype == "bool":
        return "True" if c.value else "False"
    if _is_float(c.dtype):
        x = float(c.value)
        text = "np.nan" if math.isnan(x) else ("np.inf" if x > 0 else "-np.inf") if math.isinf(x) else repr(x)
        return f"{NP_TYPE[c.dtype]}({text})"
    return str(_wrapped(c)) if c.dtype == "i64" else f"{NP_TYPE[c.dtype]}({_wrapped(c)})"


def _wrapped(c: Const) -> int:
    """An integer constant as its dtype holds it (a u8 -1 is 255, as llvm's constant is); an f16 one as its bits."""
    if c.dtype == "f16":
        return int(np.float16(c.value).view(np.uint16))
    return int(np.array(int(c.value)).astype(np.int64).astype(DTYPES[c.dtype]))


class Constants:
    """Module-level typed constants, one per (dtype, value), named after both."""

    def __init__(self):
        self.names: dict[tuple[str, str], str] = {}  # (dtype, repr of the value) -> name
        self.definitions: list[str] = []              # `NAME = np.float32(...)`, in order of first use

    def __call__(self, c: Const) -> str:
        if c.dtype in ("i64", "bool"):
            return literal(c)  # Python's own int and bool are these
        value = float(c.value) if _is_float(c.dtype) else _wrapped(c)
        key = (c.dtype, repr(value))  # repr: 0.0 and -0.0 stay apart
        if key not in self.names:
            text = repr(value).replace("-", "m").replace(".", "p").replace("+", "")
            self.names[key] = f"{c.dtype.upper()}_{text}"
            self.definitions.append(f"{self.names[key]} = {literal(Const(value, c.dtype))}")
        return self.names[key]


def _repeated(roots: list[Expr]) -> list[Expr]:
    """Subexpressions (not variables or constants) that occur twice or more,
    children before parents. A repeated subtree is counted once, so its own
    parts are not bound again unless they also occur elsewhere."""
    count: Counter = Counter()
    order: list[Expr] = []

    def visit(e: Expr) -> None:
        count[e] += 1
        if count[e] > 1:
            return
        for child in children(e):
            visit(child)
        order.append(e)
    for r in roots:
        visit(r)
    return [e for e in order if count[e] > 1 and not isinstance(e, (Var, Const))]


def unroll(s: Stmt) -> Stmt:
    """Replace every loop marked unrolled (of constant extent) by copies of its body."""
    if isinstance(s, For) and s.kind == LoopKind.UNROLLED and isinstance(s.extent, Const):
        body = unroll(s.body)
        return simplify_stmt(Seq(tuple(substitute_stmt(body, {s.var: Const(i, s.var.dtype)})
                                       for i in range(int(s.extent.value)))))
    if isinstance(s, For):
        return For(s.var, s.extent, unroll(s.body), s.kind)
    if isinstance(s, Allocate):
        return replace(s, body=unroll(s.body))
    if isinstance(s, If):
        return If(s.cond, unroll(s.then), None if s.orelse is None else unroll(s.orelse))
    if isinstance(s, Seq):
        return Seq(tuple(unroll(x) for x in s.stmts))
    return s


def _scalar_buffers(body: Stmt) -> set[str]:
    """Allocations accessed only at constant indices: they become scalar variables."""
    allocs = {s.buf for s in walk_stmts(body) if isinstance(s, Allocate)}
    indexed = set()
    for s in walk_stmts(body):
        if isinstance(s, Store) and s.buf in allocs and not isinstance(s.index, Const):
            indexed.add(s.buf)
        for e in (x for root in stmt_exprs(s) for x in walk_exprs(root)):
            if isinstance(e, Load) and e.buf in allocs and not isinstance(e.index, Const):
                indexed.add(e.buf)
    return allocs - indexed


def _identifier(name: str) -> str:
    """A lower-case ASCII Python identifier from a loop-IR name."""
    text = re.sub(r"[^0-9a-z_]", "_", name.lower()) or "v"
    return "v" + text if text[0].isdigit() else text


def uses_prange(k: Kernel) -> bool:
    return any(isinstance(s, For) and s.kind == LoopKind.PARALLEL for s in walk_stmts(k.body))


class KernelRenderer:
    def __init__(self, kernel: Kernel, name: str, constants: Constants):
        self.kernel, self.name, self.constants = kernel, name, constants
        self.body = unroll(kernel.body)
        self.scalars = _scalar_buffers(self.body)
        self.scalar_names: dict[tuple[str, int], str] = {}  # (buffer, index) -> variable
        # every parameter, local array and loop variable gets its own Python identifier:
        # lower-case ASCII (constants are upper case), no keyword, no helper's name
        # (buffers and variables are apart in the loop IR, one namespace in Python)
        self.taken: set[str] = set()
        self.bufs = {b: self.fresh(_identifier(b)) for b in dict.fromkeys(
            [p.name for p in kernel.params] + [s.buf for s in walk_stmts(self.body) if isinstance(s, Allocate)])}
        self.vars = {v: self.fresh(_identifier(v)) for v in dict.fromkeys(
            s.var.name for s in walk_stmts(self.body) if isinstance(s, For))}
        self.temps: dict[Expr, str] = {}  # subexpressions of the current statement held in temporaries
        self.lines: list[str] = []

    def render(self) -> list[str]:
        """The function's lines (without its decorator)."""
        params = ", ".join(self.bufs[p.name] for p in self.kernel.params)
        self.lines = [f"def {self.name}({params}):"]
        self.body_or_pass(self.body, 1)
        return self.lines

    # ---- statements ---------------------------------------------------------------
    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def stmt(self, s: Stmt, ind: int) -> None:
        if isinstance(s, For):
            loop = "prange" if s.kind == LoopKind.PARALLEL else "range"
            tag = f"  # {s.kind.value}" if s.kind != LoopKind.SERIAL else ""
            self.emit(ind, f"for {self.vars[s.var.name]} in {loop}({self.expr(s.extent)}):{tag}")
            self.body_or_pass(s.body, ind + 1)
        elif isinstance(s, Store):
            for e in _repeated([s.index, s.value]):
                text = self.expr(e)
                self.temps[e] = self.fresh(f"t{len(self.temps)}")
                self.emit(ind, f"{self.temps[e]} = {text}")
            self.emit(ind, f"{self.access(s.buf, s.index)} = {self.expr(s.value)}")
            self.temps.clear()
        elif isinstance(s, Allocate):
            if s.buf not in self.scalars:
                self.emit(ind, f"{self.bufs[s.buf]} = carray(rt.stack_empty({s.size}, {NP_TYPE[s.dtype]}), {s.size})")
            self.stmt(s.body, ind)
        elif isinstance(s, If):
            self.emit(ind, f"if {self.expr(s.cond)}:")
            self.body_or_pass(s.then, ind + 1)
            if s.orelse is not None:
                self.emit(ind, "else:")
                self.body_or_pass(s.orelse, ind + 1)
        elif isinstance(s, Seq):
            for x in s.stmts:
                self.stmt(x, ind)
        else:
            raise TypeError(f"cannot render {s!r}")

    def body_or_pass(self, s: Stmt, ind: int) -> None:
        start = len(self.lines)
        self.stmt(s, ind)
        if len(self.lines) == start:
            self.emit(ind, "pass")

    def fresh(self, base: str) -> str:
        """`base`, or base_1, base_2...: a local name no buffer, variable or
        earlier temporary of this kernel has."""
        name, k = base, 0
        while name in self.taken or name in RESERVED:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def access(self, buf: str, index: Expr) -> str:
        if buf in self.scalars:
            key = (buf, int(index.value))
            if key not in self.scalar_names:
                self.scalar_names[key] = self.fresh(f"{self.bufs[buf]}_{key[1]}")
            return self.scalar_names[key]
        if isinstance(index, Const):
            return f"{self.bufs[buf]}[{int(index.value)}]"
        # an unsigned index: Numba adds no wrap-around test for a negative one,
        # which would keep LLVM from vectorizing (8x slower GEMMs)
        return f"{self.bufs[buf]}[np.uint64({self.expr(index)})]"

    # ---- expressions --------------------------------------------------------------
    def expr(self, e: Expr) -> str:
        if e in self.temps:
            return self.temps[e]
        if isinstance(e, Var):
            return self.vars[e.name]
        if isinstance(e, Const):
            return self.constants(e)
        if isinstance(e, Load):
            return self.access(e.buf, e.index)
        if isinstance(e, Binary):
            return self.binary(e)
        if isinstance(e, Compare):
            return f"({self.expr(e.a)} {e.op} {self.expr(e.b)})"
        if isinstance(e, Select):
            return f"({self.expr(e.a)} if {self.expr(e.cond)} else {self.expr(e.b)})"
        if isinstance(e, Cast):
            return self.cast(e)
        if isinstance(e, Call):
            return self.call(e)
        raise TypeError(f"cannot render {e!r}")

    def wrap(self, text: str, dtype: str) -> str:
        """Numba computes integers narrower than 64 bits in 64: cast back (wrapping)."""
        return text if dtype in ("i64", "bool") or _is_float(dtype) else f"{NP_TYPE[dtype]}({text})"

    def binary(self, e: Binary) -> str:
        a, b, dt = self.expr(e.a), self.expr(e.b), e.dtype
        if e.op in ("min", "max"):
            return f"rt.f{e.op}({a}, {b})" if _is_float(dt) else f"{e.op}({a}, {b})"
        if e.op in ("/", "%") and not _is_float(dt):
            return f"rt.{'div' if e.op == '/' else 'rem'}({a}, {b})"
        if e.op == "%":
            return f"np.fmod({a}, {b})"
        if e.op == "mod":  # floor modulo: Python's % on numbers
            return self.wrap(f"({a} % {b})", dt)
        if e.op == "/":
            return f"({a} / {b})"
        return self.wrap(f"({a} {_PY_OP[e.op]} {b})", dt)

    def cast(self, e: Cast) -> str:
        v, src, dst = self.expr(e.value), e.value.dtype, e.dtype
        if src == dst:
            return v
        if dst == "bool":
            return f"({v} != {self.constants(Const(0, src))})"
        for storage in ("f16", "bf16"):  # <-> f32 only (rules.py), on the bits
            if storage in (src, dst):
                return f"rt.from_{storage}({v})" if src == storage else f"rt.to_{storage}({v})"
        if _is_float(src) and not _is_float(dst):
            return f"rt.to_{dst}({v})"
        return f"{NP_TYPE[dst]}({v})"

    def call(self, e: Call) -> str:
        args = [self.expr(a) for a in e.args]
        dt = e.dtype
        if e.fn == "neg":
            return self.wrap(f"(-{args[0]})", dt)
        if e.fn in ("ldexp", "dot4", "dot2"):
            return f"rt.{e.fn}({', '.join(args)})"
        if e.fn == "erf":
            return f"{NP_TYPE[dt]}(math.erf({args[0]}))"
        if e.fn == "abs" and not _is_float(dt):
            return self.wrap(f"abs({args[0]})", dt)
        return f"{_NP_CALL[e.fn]}({', '.join(args)})"


def bits_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a kernel sees a buffer of `dtype` as: f16 and bf16 as their
    uint16 bits (Numba has no bf16, and its float16 arithmetic is not ours:
    kernels convert with rt.from_f16 and friends)."""
    return np.dtype(np.uint16) if dtype in (np.float16, DTYPES["bf16"]) else dtype


def as_numba(a: np.ndarray) -> np.ndarray:
    """The array a kernel gets for a buffer (see bits_dtype)."""
    return a.view(bits_dtype(a.dtype))


def render_kernel(kernel: Kernel, name: str, constants: Constants) -> list[str]:
    """The decorated function `name` of one kernel."""
    # fast-math: contraction into FMA only. Numba's flags hold for a whole
    # function, and reassociation would let LLVM vectorize a GEMM's k loop
    # across k (the llvm backend reassociates inside vectorized loops alone).
    deco = ("@njit(cache=True, nogil=True, error_model='numpy', fastmath={'contract'}"
            + (", parallel=True)" if uses_prange(kernel) else ")"))
    return [deco, *KernelRenderer(kernel, name, constants).render()]


def render_module(programs: list[list[Kernel]], computes: list[list[str]] | None = None) -> str:
    """A module with every kernel and `program0`, `program1`, ...: program i
    calls the kernels of `programs[i]` in order; its arguments are their
    parameters, kernel after kernel. A kernel identical to an earlier one up
    to names (a repeated layer) calls the earlier one's function. `computes[i][j]`, if given, says which
    graph nodes kernel j of program i computes (a comment above it)."""
    constants = Constants()
    taken = RESERVED | {f"program{i}" for i in range(len(programs))}
    lines = []
    rendered: dict[Kernel, str] = {}  # a kernel identical to an earlier one up to names calls its function
    for i, kernels in enumerate(programs):
        names = []
        for j, k in enumerate(kernels):
            key = canonical_kernel(k)
            if key in rendered:
                names.append(rendered[key])
                continue
            name = _identifier(k.name)
            while name in taken:
                name = f"{name}_"
            taken.add(name)
            names.append(name)
            rendered[key] = name
            note = [f"# computes {computes[i][j]}"] if computes else []
            lines += ["", *note, *render_kernel(k, name, constants), ""]
        if len(kernels) == 1:  # a program of one kernel is that kernel (one function less to compile)
            lines += [f"program{i} = {names[0]}", ""]
            continue
        args = [f"b{j}_{n}" for j, k in enumerate(kernels) for n in range(len(k.params))]
        lines += ["", "@njit(cache=True, nogil=True)", f"def program{i}({', '.join(args)}):"]
        for j, (k, name) in enumerate(zip(kernels, names)):
            lines.append(f"    {name}({', '.join(f'b{j}_{n}' for n in range(len(k.params)))})")
        lines.append("")
    head = ["# Generated by minidlc from loop IR: one function per kernel, one per program.",
            "import math", "", "import numpy as np", "from numba import carray, njit, prange", "",
            "from minidlc.backends.numba import support as rt", "", "# typed constants",
            *constants.definitions, ""]
    return "\n".join(head + lines)
