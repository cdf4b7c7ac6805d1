"""Loop IR (scheduled for a GPU) -> Python source for Numba CUDA: one function per launch.

A GPU-scheduled kernel is a sequence of launches, each a top-level loop over
blocks (loops/gpu_schedule.py). Each launch becomes one
`@cuda.jit` function of all the kernel's parameters:

    @cuda.jit(cache=True)
    def k_fused_gemm_relu_0(x, w_kn, bias, out):   # grid 8, block 256
        blk = cuda.blockIdx.x                        # the loop over blocks
        a_tile = cuda.shared.array(256, np.complex128).view(np.float32)  # Allocate(scope=shared)
        t = cuda.threadIdx.x                         # the loop over threads
        ...
        cuda.syncthreads()                           # Barrier

Everything else (constants, temporaries, unrolling, scalar register blocks)
is the Numba CPU renderer's, whose KernelRenderer this extends; operations
Python gets wrong call the device functions of support.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir import DTYPES
from ...loops.gpu_gemm import VECTOR_BYTES
from ...loops.ir import Allocate, Barrier, Binary, Call, Const, Expr, For, Kernel, LoopKind, Scope, Seq, Stmt, Var
from ...loops.transform import canonical_kernel, walk_stmts
from ...loops.verify import interval
from ..numba.render import NP_TYPE, RESERVED, Constants, KernelRenderer, _identifier, _is_float

# shared arrays are declared in np.complex128 words: Numba aligns an array to
# its element's size, and the GEMM tiles' runs are loads of that many bytes
assert np.dtype(np.complex128).itemsize == VECTOR_BYTES

_MATH = {"exp": "rt.exp", "log": "rt.log", "sqrt": "rt.sqrt", "tanh": "rt.tanh", "sin": "rt.sin", "cos": "rt.cos",
         "pow": "rt.pow", "erf": "math.erf", "floor": "rt.floor", "ceil": "rt.ceil", "round": "rt.rint", "abs": "abs"}


@dataclass(frozen=True)
class Launch:
    """One kernel launch: function `name` over `grid` blocks of `block` threads."""

    name: str
    kernel: Kernel
    grid: int
    block: int


def launches_of(kernel: Kernel) -> list[tuple[For, int]]:
    """The kernel's top-level loops over blocks, each with its block size."""
    stages = kernel.body.stmts if isinstance(kernel.body, Seq) else (kernel.body,)
    out = []
    for s in stages:
        if not (isinstance(s, For) and s.kind == LoopKind.BLOCKS):
            raise TypeError(f"kernel {kernel.name} is not scheduled for a GPU (a top-level statement is not a "
                            f"loop over blocks)")
        out.append((s, _threads(s.body)))
    return out


def _threads(s: Stmt) -> int:
    while isinstance(s, Allocate):
        s = s.body
    if not (isinstance(s, For) and s.kind == LoopKind.THREADS):
        raise TypeError("a loop over blocks holds no loop over threads")
    return int(s.extent.value)


class LaunchRenderer(KernelRenderer):
    """One launch of a kernel: its loop over blocks as a CUDA kernel."""

    def __init__(self, kernel: Kernel, stage: For, name: str, constants: Constants):
        super().__init__(Kernel(kernel.name, kernel.params, stage), name, constants)
        # a shared array is one per block: never per-thread scalars
        self.scalars -= {s.buf for s in walk_stmts(self.body) if isinstance(s, Allocate) and s.scope == Scope.SHARED}
        self.ranges: dict[Var, tuple[int, int] | None] = {}

    def stmt(self, s: Stmt, ind: int) -> None:
        if isinstance(s, For):  # what the loop's variable ranges over, while its body renders
            self.ranges[s.var] = (0, int(s.extent.value) - 1) if isinstance(s.extent, Const) else None
        if isinstance(s, For) and s.kind in (LoopKind.BLOCKS, LoopKind.THREADS):
            index = "blockIdx" if s.kind == LoopKind.BLOCKS else "threadIdx"
            self.emit(ind, f"{self.vars[s.var.name]} = cuda.{index}.x  # of {self.expr(s.extent)}")
            self.stmt(s.body, ind)
        elif isinstance(s, Allocate) and s.buf not in self.scalars and s.scope == Scope.SHARED:
            # 16-byte aligned: Numba aligns a shared array to its element's size,
            # so it is declared in 16-byte elements and viewed as its own; then
            # NVVM may merge four adjacent f32 loads into one ld.shared.v4
            # (the GEMM tiles' register blocks read runs of four, gpu_gemm.py)
            words = -(-s.size * np.dtype(DTYPES[s.dtype]).itemsize // VECTOR_BYTES)
            self.emit(ind, f"{self.bufs[s.buf]} = cuda.shared.array({words}, np.complex128).view({NP_TYPE[s.dtype]})"
                           f"  # {s.size} {s.dtype}, {VECTOR_BYTES}-byte aligned")
            self.stmt(s.body, ind)
        elif isinstance(s, Allocate) and s.buf not in self.scalars:
            self.emit(ind, f"{self.bufs[s.buf]} = cuda.local.array({s.size}, {NP_TYPE[s.dtype]})")
            self.stmt(s.body, ind)
        elif isinstance(s, For) and s.kind == LoopKind.SERIAL:
            # a counted while loop: Numba's range() iterator keeps a second,
            # down-counting index with selects on it, which NVVM's optimizer
            # neither unrolls nor strength-reduces (a 64 x 64 tile's k loop:
            # 78 PTX instructions per 32 FMAs with range(), 53 with this)
            var = self.vars[s.var.name]
            self.emit(ind, f"{var} = 0")
            self.emit(ind, f"while {var} < {self.expr(s.extent)}:")
            self.body_or_pass(s.body, ind + 1)
            self.emit(ind + 1, f"{var} += 1")
        elif isinstance(s, Barrier):
            self.emit(ind, "cuda.syncthreads()")
        else:
            super().stmt(s, ind)

    def binary(self, e) -> str:
        if e.op == "%" and _is_float(e.dtype):
            return f"{NP_TYPE[e.dtype]}(math.fmod({self.expr(e.a)}, {self.expr(e.b)}))"
        if e.op in ("min", "max") and not _is_float(e.dtype):
            return self.wrap(f"rt.i{e.op}({self.expr(e.a)}, {self.expr(e.b)})", e.dtype)
        if e.op in ("/", "%") and e.dtype == "i64" and all(_within(interval(x, self.ranges), U32) for x in (e.a, e.b)):
            # an index within 32 bits (the loop ranges say so): divided in 32 bits
            return f"rt.{'udiv' if e.op == '/' else 'urem'}({self.expr(e.a)}, {self.expr(e.b)})"
        if e.op in ("/", "%") and e.dtype == "i64" and _non_negative(e.a) and _non_negative(e.b):
            # index arithmetic: C's truncation and Python's floor agree, so the
            # cheap operators do (no sign fix-up in the inner loops)
            return f"({self.expr(e.a)} {'//' if e.op == '/' else '%'} {self.expr(e.b)})"
        text = super().binary(e)
        # rt.div and rt.rem compute in Python integers: back to the dtype
        return self.wrap(text, e.dtype) if text.startswith(("rt.div", "rt.rem")) else text

    def call(self, e: Call) -> str:
        if e.fn not in _MATH:
            return super().call(e)  # neg, ldexp
        args = ", ".join(self.expr(a) for a in e.args)
        if e.fn == "abs" and not _is_float(e.dtype):
            return self.wrap(f"abs({args})", e.dtype)
        return f"{NP_TYPE[e.dtype]}({_MATH[e.fn]}({args}))"


U32 = (0, 2**32 - 1)


def _within(r: tuple[int, int] | None, bounds: tuple[int, int]) -> bool:
    return r is not None and bounds[0] <= r[0] and r[1] <= bounds[1]


def _non_negative(e: Expr) -> bool:
    """Whether an index expression is >= 0 by its form: loop variables (which
    count up from 0), non-negative constants, and +, *, /, %, min, max of such."""
    if isinstance(e, Var):
        return True
    if isinstance(e, Const):
        return e.value >= 0
    return isinstance(e, Binary) and e.op in ("+", "*", "/", "%", "min", "max") and _non_negative(e.a) \
        and _non_negative(e.b)


def render_module(kernels: list[Kernel], computes: list[str] | None = None) -> tuple[str, list[Launch]]:
    """The module's source, and its launches in order: each kernel's launches,
    kernel after kernel. A launch identical to an earlier one up to names (of
    a repeated layer of the same shape, say) reuses that one's function, so
    Numba compiles it once. `computes[i]`, if given, says which graph nodes kernel
    i computes (a comment above its launches)."""
    constants = Constants()
    taken = set(RESERVED) | {"cuda"}
    lines, launches = [], []
    rendered: dict[Kernel, str] = {}  # a launch in canonical form (see canonical_kernel) -> its function
    for i, k in enumerate(kernels):
        if computes:
            lines += ["", f"# computes {computes[i]}"]
        for j, (stage, block) in enumerate(launches_of(k)):
            grid = int(stage.extent.value)
            key = canonical_kernel(Kernel(k.name, k.params, stage))
            if key in rendered:
                lines.append(f"# launch {j}: {rendered[key]} again (grid {grid}, block {block})")
                launches.append(Launch(rendered[key], k, grid, block))
                continue
            name = f"{_identifier(k.name)}_{j}"
            while name in taken:
                name += "_"
            taken.add(name)
            rendered[key] = name
            lines += ["", f"@cuda.jit(cache=True)  # grid {grid}, block {block}",
                      *LaunchRenderer(k, stage, name, constants).render()]
            launches.append(Launch(name, k, grid, block))
    head = ["# Generated by minidlc from loop IR: one CUDA kernel per launch, in order.", "import math", "",
            "import numpy as np", "from numba import cuda", "", "from minidlc.backends.cuda import support as rt", "",
            "# typed constants", *constants.definitions, ""]
    return "\n".join(head + lines) + "\n", launches
