"""Loop IR: kernels over flat buffers, as frozen dataclasses.

A `Kernel` has parameters (flat buffers: a name, a dtype and a length) and a
body of statements. Indices are i64 expressions over loop variables; every
buffer access is `buf[index]` into the flat storage, so a lowering decides
the layout (row-major strides, packed panels) and the backend only sees
pointer arithmetic.

Expressions: Var, Const, Load, Binary (arithmetic, min/max), Compare, Select,
Cast, Call (exp, log, tanh, sqrt, erf, ...). Statements: For, Store, Allocate
(a small kernel-local array, e.g. an accumulator or a register block), If,
Seq, and Barrier. Nodes are immutable and hashable, so schedules build new
trees and never edit old ones.

GPU schedules use three more things (docs/LOOP_IR.md): loops bound to the
grid's blocks and to a block's threads (`LoopKind.BLOCKS`, `LoopKind.THREADS`),
a memory scope on allocations (`Scope.SHARED`: one array per block, that its
threads share; `Scope.LOCAL`: per thread, registers when indexed by constants;
global memory is the kernel's parameters), and `Barrier`, which waits for every
thread of the block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Union

INDEX = "i64"  # the dtype of loop variables and buffer indices


# ---- expressions ---------------------------------------------------------------
@dataclass(frozen=True)
class Var:
    name: str
    dtype: str = INDEX


@dataclass(frozen=True, eq=False)
class Const:
    """Equal to another Const of the same dtype and value, where 0.0 and -0.0
    differ (they do in a result: kernels equal up to names share code, and
    simplified bodies are remembered, by this equality)."""

    value: float | int | bool
    dtype: str = INDEX

    def _key(self) -> tuple:
        v = self.value
        return self.dtype, type(v) is float and math.copysign(1.0, v) < 0, v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Const) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass(frozen=True)
class Load:
    buf: str
    index: "Expr"
    dtype: str


@dataclass(frozen=True)
class Binary:
    """op is one of + - * / % (C semantics: / truncates, % takes the sign of
    the dividend), mod (floor modulo, as Python and NumPy), min, max (NaN
    propagating on floats), and, or, xor."""

    op: str
    a: "Expr"
    b: "Expr"

    @property
    def dtype(self) -> str:
        return self.a.dtype


@dataclass(frozen=True)
class Compare:
    op: str  # == != < <= > >=
    a: "Expr"
    b: "Expr"
    dtype: str = field(default="bool", init=False)


@dataclass(frozen=True)
class Select:
    cond: "Expr"
    a: "Expr"
    b: "Expr"

    @property
    def dtype(self) -> str:
        return self.a.dtype


@dataclass(frozen=True)
class Cast:
    value: "Expr"
    dtype: str


# Calls the backends know: name -> number of arguments. All compute in the
# argument dtype (floats), except abs/neg which also take integers. ldexp(x, n)
# is x * 2^n for an integral float n, |n| <= 252: exact, rounded once where the
# result is subnormal or overflows. dot4(acc, a, b), on i32 words, is
# acc + sum over bytes t of u8(a[t]) * i8(b[t]): the int8 dot product of four
# that AVX-512 VNNI's vpdpbusd computes; dot2(acc, a, b) is acc + sum over i16
# halves t of i16(a[t]) * i16(b[t]), pmaddwd's. docs/LOOP_IR.md defines each one.
CALLS = {"exp": 1, "log": 1, "sqrt": 1, "tanh": 1, "erf": 1, "sin": 1, "cos": 1, "abs": 1,
         "floor": 1, "ceil": 1, "round": 1, "pow": 2, "neg": 1, "ldexp": 2, "dot4": 3, "dot2": 3}


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple["Expr", ...]

    @property
    def dtype(self) -> str:
        return self.args[0].dtype


Expr = Union[Var, Const, Load, Binary, Compare, Select, Cast, Call]


# ---- statements -----------------------------------------------------------------
class LoopKind(str, Enum):
    SERIAL = "serial"
    PARALLEL = "parallel"      # iterations run on several threads
    VECTORIZED = "vectorized"  # the backend vectorizes this (innermost) loop
    UNROLLED = "unrolled"      # the backend unrolls this loop fully
    ROLLED = "rolled"          # serial, and the backend must not unroll it (see GemmConfig.rolled_window)
    BLOCKS = "blockIdx.x"      # GPU: one block of the grid per iteration (a kernel launch's grid)
    THREADS = "threadIdx.x"    # GPU: one thread of the block per iteration (inside a BLOCKS loop)


GPU_LOOPS = (LoopKind.BLOCKS, LoopKind.THREADS)
# A vectorized loop of a constant extent up to this, whose iterations are
# independent (a store per lane), is straight-line vector code on llvm (its
# tested reads, masked loads); a longer one is left to LLVM's loop
# vectorizer. Lowerings shape stencil rows by it.
MAX_VECTOR = 64


class Scope(str, Enum):
    """Where an Allocate lives. CPU kernels use LOCAL only."""

    LOCAL = "local"    # one array per thread (a CPU thread, or a GPU thread: registers or local memory)
    SHARED = "shared"  # GPU: one array per block, shared by its threads (between BLOCKS and THREADS loops)


@dataclass(frozen=True)
class For:
    """for var in [0, extent): body."""

    var: Var
    extent: Expr
    body: "Stmt"
    kind: LoopKind = LoopKind.SERIAL


@dataclass(frozen=True)
class Store:
    buf: str
    index: Expr
    value: Expr


@dataclass(frozen=True)
class Allocate:
    """A kernel-local array `buf` of `size` elements, live inside `body`."""

    buf: str
    dtype: str
    size: int
    body: "Stmt"
    scope: Scope = Scope.LOCAL


@dataclass(frozen=True)
class If:
    cond: Expr
    then: "Stmt"
    orelse: "Stmt | None" = None


@dataclass(frozen=True)
class Seq:
    stmts: tuple["Stmt", ...]


@dataclass(frozen=True)
class Barrier:
    """GPU: every thread of the block waits here until all have arrived (and
    their shared-memory writes are visible): __syncthreads()."""


Stmt = Union[For, Store, Allocate, If, Seq, Barrier]


@dataclass(frozen=True)
class Param:
    """A kernel parameter: a flat buffer of `size` elements of `dtype`."""

    name: str
    dtype: str
    size: int


@dataclass(frozen=True)
class Kernel:
    name: str
    params: tuple[Param, ...]
    body: Stmt

    @cached_property
    def canonical(self) -> str:
        """The text of the kernel up to its names (`transform.canonical_kernel`):
        kernels with the same text compile to the same code. Worked out once
        (a kernel never changes) and pickled with the kernel, so a program
        from the compile cache has it at hand."""
        from .transform import canonical_kernel

        return repr(canonical_kernel(self))


# ---- reduction identities ----------------------------------------------------------
LOWEST = {"f32": -math.inf, "f64": -math.inf, "i8": -2**7, "u8": 0, "i16": -2**15, "i32": -2**31, "i64": -2**63}
HIGHEST = {"f32": math.inf, "f64": math.inf, "i8": 2**7 - 1, "u8": 255, "i16": 2**15 - 1, "i32": 2**31 - 1,
           "i64": 2**63 - 1}


def identity(op: str, dtype: str) -> Const | None:
    """x op identity == x for every x of `dtype` (None: no such value here).
    The float sum's is -0.0: 0.0 + -0.0 would turn a -0.0 into 0.0."""
    if dtype == "bool":
        value = {"or": False, "and": True}.get(op)
        return None if value is None else Const(value, dtype)
    if dtype not in LOWEST:  # f16, bf16
        return None
    floating = dtype in ("f32", "f64")
    value = {"+": -0.0 if floating else 0, "*": 1.0 if floating else 1, "max": LOWEST[dtype],
             "min": HIGHEST[dtype]}.get(op)
    return None if value is None else Const(value, dtype)


# ---- small constructors that keep lowering code short -------------------------------
def const(value, dtype: str = INDEX) -> Const:
    return Const(value, dtype)


def add(a: Expr, b: Expr) -> Expr:
    return Binary("+", a, b)


def mul(a: Expr, b: Expr) -> Expr:
    return Binary("*", a, b)


def cast(e: Expr, dtype: str) -> Expr:
    """`e` as `dtype`: itself when it is one already, else a Cast."""
    return e if e.dtype == dtype else Cast(e, dtype)


def nontrapping_divisor(b: Expr) -> Expr:
    """Integer `b` as a divisor no division traps on: 1 where it is 0, or -1 if
    signed (x86 faults on x / 0 and on MIN / -1). The verifier accepts this
    form (less a test that the simplifier found `b`'s range decides); whoever
    divides by it gives those cases a value of their own."""
    traps = Compare("==", b, Const(0, b.dtype))
    if LOWEST[b.dtype] < 0:
        traps = Binary("or", traps, Compare("==", b, Const(-1, b.dtype)))
    return Select(traps, Const(1, b.dtype), b)


def seq(*stmts: "Stmt | None") -> Stmt:
    """A Seq of the given statements, flattening nested Seqs and dropping None."""
    out: list[Stmt] = []
    for s in stmts:
        if s is None:
            continue
        out.extend(s.stmts if isinstance(s, Seq) else (s,))
    return out[0] if len(out) == 1 else Seq(tuple(out))


def loop_nest(vars_: list[Var], extents: list[int], body: Stmt, kind: LoopKind = LoopKind.SERIAL) -> Stmt:
    """Nested loops of one kind (serial unless said), first variable outermost."""
    for v, n in reversed(list(zip(vars_, extents))):
        body = For(v, const(n), body, kind)
    return body


def row_major(index: list[Expr], shape: tuple[int, ...]) -> Expr:
    """The flat offset of a multi-index into a row-major tensor of `shape`."""
    flat: Expr = const(0)
    for i, n in zip(index, shape):
        flat = add(mul(flat, const(n)), i)
    return flat
