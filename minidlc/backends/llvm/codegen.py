"""Loop IR -> LLVM IR with llvmlite's builder.

Each top-level statement of a kernel becomes one LLVM function, a *stage*,
`void stage(i8** buffers, i64 lo, i64 hi)`: the kernel's parameters arrive as
an array of pointers, and a stage whose statement is a parallel loop runs
iterations [lo, hi) of it (a program, see program.py, hands each thread its
share). Loops marked vectorized whose lanes are independent become LLVM
vector code directly; the rest is left to LLVM's own vectorizers at O3.
"""
from __future__ import annotations

import re

import llvmlite.ir as ir
import numpy as np

from ... import cpu
from ...ir.types import DTYPES
from ...loops.ir import (MAX_VECTOR, Allocate, Binary, Call, Cast, Compare, Const, Expr, For, If, Kernel, Load,
                         LoopKind, Select, Seq, Stmt, Store, Var, add)
from ...loops.simplify import simplify
from ...loops.transform import children, substitute, substitute_stmt, walk_exprs

_TYPES = {"f16": ir.HalfType(), "f32": ir.FloatType(), "f64": ir.DoubleType(), "i8": ir.IntType(8),
          "u8": ir.IntType(8), "i16": ir.IntType(16), "i32": ir.IntType(32), "i64": ir.IntType(64),
          "bool": ir.IntType(1), "bf16": ir.IntType(16)}  # bf16 travels as its bits
_MEM = dict(_TYPES, bool=ir.IntType(8))
_ALIGN = {"f16": 2, "f32": 4, "f64": 8, "i8": 1, "u8": 1, "i16": 2, "i32": 4, "i64": 8,
          "bool": 1, "bf16": 2}  # bools are bytes in memory, i1 in registers
_FLOAT_BITS = {"f16": 16, "f32": 32, "f64": 64}  # f16 is only loaded, stored and converted (F16C on x86)
# Floating-point flags: contraction into FMA everywhere; reassociation only inside
# loops marked vectorized, where a reduction may be split into vector lanes (and
# nowhere else, so that LLVM does not vectorize, say, GEMM's k loop across k).
_CONTRACT = ("contract",)
_REASSOC = ("contract", "reassoc", "nsz")
I8_PTR = ir.IntType(8).as_pointer()
STAGE = ir.FunctionType(ir.VoidType(), [I8_PTR.as_pointer(), ir.IntType(64), ir.IntType(64)])
_INTRINSIC = {"exp": "llvm.exp", "log": "llvm.log", "sqrt": "llvm.sqrt", "sin": "llvm.sin", "cos": "llvm.cos",
              "floor": "llvm.floor", "ceil": "llvm.ceil", "round": "llvm.roundeven", "pow": "llvm.pow"}
_LIBM = {"tanh": ("tanhf", "tanh"), "erf": ("erff", "erf")}
# pmaddwd (i16 x i16, pairs added into i32) by the i32 lanes it makes, and the feature it needs
_PMADDWD = {4: ("llvm.x86.sse2.pmadd.wd", "sse2"), 8: ("llvm.x86.avx2.pmadd.wd", "avx2"),
            16: ("llvm.x86.avx512.pmaddw.d.512", "avx512bw")}


_BITS = {name: 8 if name == "bool" else t.width if isinstance(t, ir.IntType) else _FLOAT_BITS[name]
         for name, t in _MEM.items()}


def vector_bits() -> int:
    """The width of the target CPU's vector registers (`minidlc.cpu`: the host's,
    or a lesser x86-64 level); compiled code is cached per CPU and features."""
    return 512 if cpu.has("avx512f") else 256 if cpu.has("avx") else 128


def _is_float(dtype: str) -> bool:
    return dtype in _FLOAT_BITS


def _like(scalar_type, v: ir.Value):
    """`scalar_type`, or a vector of it when v is a vector (for the vector emitter)."""
    return ir.VectorType(scalar_type, v.type.count) if isinstance(v.type, ir.VectorType) else scalar_type


def _const(v: ir.Value, x):
    """The constant x with v's type (splat for vectors)."""
    if isinstance(v.type, ir.VectorType):
        return ir.Constant(v.type, [ir.Constant(v.type.element, x)] * v.type.count)
    return ir.Constant(v.type, x)


def _top_level(kernel: Kernel) -> tuple[Stmt, ...]:
    return kernel.body.stmts if isinstance(kernel.body, Seq) else (kernel.body,)


def stage_extents(kernel: Kernel) -> list[int | None]:
    """Per stage (top-level statement): the extent of its parallel loop, or
    None for a stage that runs on one thread."""
    return [int(s.extent.value) if isinstance(s, For) and s.kind == LoopKind.PARALLEL and isinstance(s.extent, Const)
            else None for s in _top_level(kernel)]


def stage_name(kernel: str, i: int) -> str:
    """The LLVM function of stage i of a kernel."""
    return f"{kernel}_s{i}"


def stage_functions(module_text: str, kernel: str) -> list[tuple[str, str]]:
    """(name, text) of each stage function of `kernel` in a module's printed IR."""
    pattern = rf"^define [^@\n]*@({re.escape(kernel)}_s\d+)\(.*?^}}"  # the names stage_name gives
    return [(m.group(1), m.group(0)) for m in re.finditer(pattern, module_text, re.M | re.S)]


class KernelCodegen:
    """Emits the stages of one kernel into an llvmlite module."""

    def __init__(self, module: ir.Module, kernel: Kernel):
        self.module, self.kernel = module, kernel
        self.dtypes = {p.name: p.dtype for p in kernel.params}
        self.stages: list[tuple[str, int | None]] = []  # (function name, parallel extent or None)

    def emit(self) -> list[tuple[str, int | None]]:
        for i, (s, extent) in enumerate(zip(_top_level(self.kernel), stage_extents(self.kernel))):
            name = stage_name(self.kernel.name, i)
            fn = ir.Function(self.module, STAGE, name)
            fn.attributes.add("nounwind")
            self.b = ir.IRBuilder(fn.append_basic_block("entry"))
            self.entry = self.b.block
            args, lo, hi = fn.args
            self.bufs = {}
            for j, p in enumerate(self.kernel.params):
                raw = self.b.load(self.b.gep(args, [ir.Constant(ir.IntType(64), j)]))
                self.bufs[p.name] = self.b.bitcast(raw, _MEM[p.dtype].as_pointer())
            self.env: dict[Var, ir.Value] = {}
            self.local_sizes: dict[str, int] = {}  # the kernel-local arrays (Allocate) and their sizes
            self.transposed: dict[tuple, list[ir.Value]] = {}  # see VectorCodegen._tile_column
            self.vectorized = 0  # depth of enclosing vectorized loops
            self.indexing = 0  # > 0 while emitting a buffer index
            if extent is not None:
                self.loop(s, lo, hi)
            else:
                self.stmt(s)
            self.b.ret_void()
            self.stages.append((name, extent))
        return self.stages

    # ---- statements ------------------------------------------------------------------
    def stmt(self, s: Stmt) -> None:
        if isinstance(s, For):
            if s.kind == LoopKind.UNROLLED and isinstance(s.extent, Const):
                for i in range(int(s.extent.value)):
                    self.env[s.var] = ir.Constant(ir.IntType(64), i)
                    self.stmt(s.body)
                del self.env[s.var]
            else:
                self.loop(s, ir.Constant(ir.IntType(64), 0), self.expr(s.extent))
        elif isinstance(s, Store):
            ptr = self.b.gep(self.bufs[s.buf], [self.index(s.index)], inbounds=True)
            value = self.expr(s.value)
            if self.dtypes[s.buf] == "bool":
                value = self.b.zext(value, ir.IntType(8))
            self.b.store(value, ptr)
            self.stored(s.buf)
        elif isinstance(s, Allocate):
            with self.b.goto_block(self.entry):  # allocas in the entry block: mem2reg/SROA promote them
                self.b.position_at_start(self.entry)
                self.bufs[s.buf] = self.b.alloca(_MEM[s.dtype], s.size, name=s.buf)
            self.dtypes[s.buf] = s.dtype
            self.local_sizes[s.buf] = s.size
            self.stmt(s.body)
        elif isinstance(s, If):
            cond = self.expr(s.cond)
            if s.orelse is None:
                with self.b.if_then(cond):
                    self.stmt(s.then)
            else:
                with self.b.if_else(cond) as (then, orelse):
                    with then:
                        self.stmt(s.then)
                    with orelse:
                        self.stmt(s.orelse)
        elif isinstance(s, Seq):
            for x in s.stmts:
                self.stmt(x)
        else:
            raise TypeError(f"cannot emit {s!r}")

    def stored(self, buf: str) -> None:
        """`buf` changed: its transposed tiles are stale."""
        self.transposed = {k: v for k, v in self.transposed.items() if k[0] != buf}

    def loop(self, s: For, start: ir.Value, stop: ir.Value) -> None:
        if (s.kind == LoopKind.VECTORIZED and isinstance(s.extent, Const) and 1 < s.extent.value <= MAX_VECTOR
                and _lanes_independent(s.body, s.var)):
            return self.vector_pieces(s)
        i64 = ir.IntType(64)
        pre = self.b.block
        head = self.b.append_basic_block(f"{s.var.name}.head")
        body = self.b.append_basic_block(f"{s.var.name}.body")
        done = self.b.append_basic_block(f"{s.var.name}.end")
        self.b.branch(head)
        self.b.position_at_end(head)
        i = self.b.phi(i64, name=s.var.name)
        i.add_incoming(start, pre)
        self.b.cbranch(self.b.icmp_signed("<", i, stop), body, done)
        self.b.position_at_end(body)
        self.env[s.var] = i
        vec = s.kind == LoopKind.VECTORIZED
        self.vectorized += vec
        self.stmt(s.body)
        self.vectorized -= vec
        nxt = self.b.add(i, ir.Constant(i64, 1), flags=["nsw"])
        i.add_incoming(nxt, self.b.block)
        back = self.b.branch(head)
        if s.kind == LoopKind.ROLLED:
            back.set_metadata("llvm.loop", self.no_unroll_id())
        self.b.position_at_end(done)
        del self.env[s.var]

    def no_unroll_id(self) -> ir.MDValue:
        """A fresh loop ID asking LLVM not to unroll its loop. A loop ID's first
        operand must be the node itself (LLVM's LangRef), which add_metadata,
        building nodes from finished operands, cannot make."""
        disable = self.module.add_metadata([ir.MetaDataString(self.module, "llvm.loop.unroll.disable")])
        loop_id = ir.MDValue(self.module, [], name=str(len(self.module.metadata)))
        loop_id.operands = (loop_id, disable)
        return loop_id

    def vector_pieces(self, s: For) -> None:
        """A vectorized loop as straight-line vector code, in pieces of one
        register's lanes (of the widest dtype it stores or loads): a stride-2
        load of 27 lanes in one <27 x float> value, say, left LLVM's legalizer
        to split the shuffle, which it did element by element. The lanes are
        independent, so the pieces may run in any order; the last one ends at
        the last lane, overlapping the one before, unless the value reads the
        buffer it stores (then storing a lane twice would not store the same
        value): an odd-sized piece legalizes no better than the whole."""
        width = int(s.extent.value)
        loaded = [e for e in walk_exprs(s.body.value) if isinstance(e, Load)]
        lanes = max(2, vector_bits() // max([_BITS[self.dtypes[s.body.buf]]] + [_BITS[e.dtype] for e in loaded]))
        overlap = width > lanes and all(e.buf != s.body.buf for e in loaded)
        for first in range(0, width, lanes):
            if overlap and first + lanes > width:
                first = width - lanes
            piece = substitute_stmt(s.body, {s.var: add(s.var, Const(first))}) if first else s.body
            if width - first == 1:
                self.env[s.var] = ir.Constant(ir.IntType(64), 0)
                self.stmt(piece)
                del self.env[s.var]
            else:
                VectorCodegen(self, s.var, min(lanes, width - first)).store(piece)

    # ---- expressions -----------------------------------------------------------------
    def index(self, e: Expr) -> ir.Value:
        """A buffer index: its arithmetic is emitted with no-signed-wrap flags."""
        self.indexing += 1
        try:
            return self.expr(e)
        finally:
            self.indexing -= 1

    def expr(self, e: Expr, sub=None) -> ir.Value:
        """Emit e; its operands are emitted by `sub` (the vector emitter passes its own)."""
        b, sub = self.b, sub or self.expr
        if isinstance(e, Var):
            return self.env[e]
        if isinstance(e, Const):
            t = _TYPES[e.dtype]
            return ir.Constant(t, float(e.value) if _is_float(e.dtype) else int(bool(e.value)) if e.dtype == "bool"
                               else int(e.value))
        if isinstance(e, Load):
            v = b.load(b.gep(self.bufs[e.buf], [self.index(e.index)], inbounds=True))
            return b.trunc(v, ir.IntType(1)) if e.dtype == "bool" else v
        if isinstance(e, Binary):
            return self.binary(e.op, sub(e.a), sub(e.b), e.a.dtype)
        if isinstance(e, Compare):
            a, c = sub(e.a), sub(e.b)
            if _is_float(e.a.dtype):
                return b.fcmp_unordered(e.op, a, c) if e.op == "!=" else b.fcmp_ordered(e.op, a, c)
            if e.a.dtype in ("u8", "bool"):
                return b.icmp_unsigned(e.op, a, c)
            return b.icmp_signed(e.op, a, c)
        if isinstance(e, Select):
            return b.select(sub(e.cond), sub(e.a), sub(e.b))
        if isinstance(e, Cast):
            return self.cast(sub(e.value), e.value.dtype, e.dtype)
        if isinstance(e, Call):
            return self.call(e.fn, [sub(a) for a in e.args], e.dtype)
        raise TypeError(f"cannot emit {e!r}")

    def binary(self, op: str, a, c, dtype: str):
        b = self.b
        if _is_float(dtype):
            if op in ("min", "max"):
                return self.float_min_max(op, a, c, dtype)
            if op == "mod":  # floor modulo: fix the sign of C's remainder; a zero takes the divisor's sign
                r = b.frem(a, c)
                fix = b.and_(b.fcmp_ordered("!=", r, _const(r, 0.0)),
                             b.xor(b.fcmp_ordered("<", r, _const(r, 0.0)), b.fcmp_ordered("<", c, _const(r, 0.0))))
                zero = self.intrinsic("llvm.copysign", [_const(r, 0.0), c], dtype)
                return b.select(fix, b.fadd(r, c), b.select(b.fcmp_ordered("==", r, _const(r, 0.0)), zero, r))
            fn = {"+": b.fadd, "-": b.fsub, "*": b.fmul, "/": b.fdiv, "%": b.frem}[op]
            return fn(a, c, flags=_REASSOC if self.vectorized else _CONTRACT)
        unsigned = dtype in ("u8", "bool")
        if op in ("min", "max"):
            cmp = b.icmp_unsigned if unsigned else b.icmp_signed
            return b.select(cmp("<" if op == "min" else ">", a, c), a, c)
        if op in ("+", "-", "*"):
            # index arithmetic never wraps (buffers are small); saying so lets LLVM
            # see that neighbouring elements are adjacent in memory, and vectorize
            fn = {"+": b.add, "-": b.sub, "*": b.mul}[op]
            return fn(a, c, flags=["nsw"] if self.indexing else [])
        if op == "mod" and not unsigned:  # floor modulo: fix the sign of C's remainder
            r, zero = b.srem(a, c), _const(a, 0)
            fix = b.and_(b.icmp_signed("!=", r, zero), b.xor(b.icmp_signed("<", r, zero), b.icmp_signed("<", c, zero)))
            return b.select(fix, b.add(r, c), r)
        fn = {"mod": b.urem, "and": b.and_, "or": b.or_, "xor": b.xor,
              "/": b.udiv if unsigned else b.sdiv, "%": b.urem if unsigned else b.srem}[op]
        return fn(a, c)

    def float_min_max(self, op: str, a, c, dtype: str):
        """min/max propagating NaN, as NumPy's. On scalars, llvm.minimum/maximum:
        LLVM's loop vectorizer knows those as reductions. On the vectors
        VectorCodegen builds, `a` when a is NaN, else the select of a compare,
        which is c when c is NaN: x86 selects a vmaxps/vminps and a masked move,
        where llvm.maximum costs twice that, for ordering -0 below +0, which no
        operator here asks for."""
        b = self.b
        if not isinstance(a.type, ir.VectorType):
            return self.intrinsic("llvm.minimum" if op == "min" else "llvm.maximum", [a, c], dtype)
        pick = b.select(b.fcmp_ordered(">" if op == "max" else "<", a, c), a, c)
        return b.select(b.fcmp_unordered("uno", a, a), a, pick)

    def cast(self, v, src: str, dst: str):
        b, t = self.b, _like(_TYPES[dst], v)
        if src == dst:
            return v
        if "bf16" in (src, dst):  # to and from f32 only (rules.py)
            return self.bfloat(v, widen=src == "bf16")
        if dst == "bool":
            zero = _const(v, 0.0 if _is_float(src) else 0)
            return b.fcmp_unordered("!=", v, zero) if _is_float(src) else b.icmp_unsigned("!=", v, zero)
        if _is_float(src) and _is_float(dst):
            return b.fpext(v, t) if _FLOAT_BITS[dst] > _FLOAT_BITS[src] else b.fptrunc(v, t)
        if _is_float(src) and _TYPES[dst].width <= 16:
            # saturating, as below, but in instructions that vectorize (x86 scalarizes
            # a vector fptoui.sat to i8): clamp to the range, exact in floats, convert, narrow
            info = np.iinfo(DTYPES[dst])
            lo, hi = _const(v, float(info.min)), _const(v, float(info.max))
            clamped = self.intrinsic("llvm.minnum", [self.intrinsic("llvm.maxnum", [v, lo], src), hi], src)
            clamped = b.select(b.fcmp_ordered("ord", v, v), clamped, _const(v, 0.0))  # NaN gives 0
            return b.trunc(b.fptosi(clamped, _like(ir.IntType(32), v)), t)
        if _is_float(src):  # saturating: NaN gives 0, out of range the nearest end
            name = "llvm.fptoui.sat" if dst == "u8" else "llvm.fptosi.sat"
            vec = f"v{v.type.count}" if isinstance(v.type, ir.VectorType) else ""
            full = f"{name}.{vec}i{_TYPES[dst].width}.{vec}{'f32' if src == 'f32' else 'f64'}"
            return b.call(self.declare(full, t, [v.type]), [v])
        if _is_float(dst):
            return b.uitofp(v, t) if src in ("u8", "bool") else b.sitofp(v, t)
        width, src_width = _TYPES[dst].width, _TYPES[src].width
        if width > src_width:
            return b.zext(v, t) if src in ("u8", "bool") else b.sext(v, t)
        return b.trunc(v, t) if width < src_width else v

    def bfloat(self, v, widen: bool):
        """bf16 <-> f32 on the bits: a bf16 is the top half of an f32, so widening
        shifts it up; narrowing rounds to nearest even (adding 0x7fff plus the
        lowest kept bit) and keeps a NaN a quiet NaN, as ml_dtypes does."""
        b = self.b
        word = _like(ir.IntType(32), v)
        if widen:
            wide = b.zext(v, word)
            return b.bitcast(b.shl(wide, _const(wide, 16)), _like(ir.FloatType(), v))
        bits = b.bitcast(v, word)
        top = b.lshr(bits, _const(bits, 16))
        rounded = b.lshr(b.add(bits, b.add(b.and_(top, _const(bits, 1)), _const(bits, 0x7FFF))), _const(bits, 16))
        quiet = b.or_(top, _const(bits, 0x40))
        return b.trunc(b.select(b.fcmp_unordered("uno", v, v), quiet, rounded), _like(ir.IntType(16), v))

    def call(self, fn: str, args, dtype: str):
        b = self.b
        if fn == "neg":
            return b.fneg(args[0]) if _is_float(dtype) else b.neg(args[0])
        if fn == "abs":
            if _is_float(dtype):
                return self.intrinsic("llvm.fabs", args, dtype)
            if dtype in ("u8", "bool"):
                return args[0]
            return b.select(b.icmp_signed("<", args[0], _const(args[0], 0)), b.neg(args[0]), args[0])
        if fn == "ldexp":
            return self.ldexp(*args, dtype)
        if fn == "dot4":
            return self.dot4(*args)
        if fn == "dot2":
            return self.dot2(*args)
        if fn in _INTRINSIC:
            return self.intrinsic(_INTRINSIC[fn], args, dtype)
        name = _LIBM[fn][0 if dtype == "f32" else 1]
        t = args[0].type
        return b.call(self.declare(name, t, [t] * len(args)), args)

    def ldexp(self, y, n, dtype: str):
        """y * 2^n for an integral float n, |n| <= 252: n = h + (n - h) with
        h = floor(n / 2), each 2^k built in the float's exponent bits, so both
        products are exact unless the result is subnormal or overflows."""
        b = self.b
        bits, mantissa, bias = (32, 23, 127) if dtype == "f32" else (64, 52, 1023)
        int_t = _like(ir.IntType(bits), y)

        def pow2(k):
            ki = b.fptosi(k, int_t)
            biased = b.add(ki, _const(ki, bias))
            return b.bitcast(b.shl(biased, _const(biased, mantissa)), y.type)
        half = self.intrinsic("llvm.floor", [b.fmul(n, _const(n, 0.5))], dtype)
        return b.fmul(b.fmul(y, pow2(half)), pow2(b.fsub(n, half)))

    def dot4(self, acc, a, c):
        """acc + the dot product of a's four u8 bytes with c's four i8 bytes, per i32 lane.
        Sixteen lanes on a VNNI host are one vpdpbusd. Otherwise the bytes widen
        to i16 in two vectors, one of each word's first pair and one of its
        second, and each is a dot2 (the lowering takes dot2 itself on such a
        host: see int8_word_values)."""
        b = self.b
        lanes = acc.type.count if isinstance(acc.type, ir.VectorType) else 1
        byte_vec = ir.VectorType(ir.IntType(8), 4 * lanes)
        if lanes == 16 and cpu.has("avx512vnni") and cpu.has("avx512bw"):
            fn = self.declare("llvm.x86.avx512.vpdpbusd.512", acc.type, [acc.type, byte_vec, byte_vec])
            return b.call(fn, [acc, b.bitcast(a, byte_vec), b.bitcast(c, byte_vec)])
        i32, wide = ir.IntType(32), ir.VectorType(ir.IntType(16), 2 * lanes)
        for first in (0, 2):  # each word's pair of bytes (first, first + 1)
            pick = ir.Constant(ir.VectorType(i32, 2 * lanes), [4 * (i // 2) + first + i % 2 for i in range(2 * lanes)])
            a_pair, c_pair = (b.shuffle_vector(b.bitcast(x, byte_vec), ir.Constant(byte_vec, None), pick)
                              for x in (a, c))
            acc = self._pairs(acc, b.zext(a_pair, wide), b.sext(c_pair, wide))
        return acc

    def dot2(self, acc, a, c):
        """acc + the dot product of a's two i16 halves with c's, per i32 lane."""
        lanes = acc.type.count if isinstance(acc.type, ir.VectorType) else 1
        wide = ir.VectorType(ir.IntType(16), 2 * lanes)
        return self._pairs(acc, self.b.bitcast(a, wide), self.b.bitcast(c, wide))

    def _pairs(self, acc, a16, c16):
        """acc + each lane's pair of i16 products (a16 and c16 hold 2 x acc's
        lanes), added in i32: one pmaddwd where this CPU has one of that width
        (LLVM did not find it in a vector of i16 products whose neighbours
        shuffles added, which took 5x longer on AVX2)."""
        b, i32 = self.b, ir.IntType(32)
        lanes = acc.type.count if isinstance(acc.type, ir.VectorType) else 1
        out = ir.VectorType(i32, lanes)
        pmaddwd = _PMADDWD.get(lanes)
        if pmaddwd is not None and cpu.has(pmaddwd[1]):
            return b.add(acc, b.call(self.declare(pmaddwd[0], out, [a16.type, a16.type]), [a16, c16]))
        for k in (0, 1):  # products in i32, the pair's first and second
            at = ir.Constant(out, list(range(k, 2 * lanes, 2)))
            x, y = (b.sext(b.shuffle_vector(v, v, at), out) for v in (a16, c16))
            product = b.mul(x, y)
            acc = b.add(acc, product if lanes > 1 else b.extract_element(product, ir.Constant(i32, 0)))
        return acc

    def intrinsic(self, name: str, args, dtype: str):
        t = args[0].type
        suffix = "f32" if dtype == "f32" else "f64"
        full = f"{name}.v{t.count}{suffix}" if isinstance(t, ir.VectorType) else f"{name}.{suffix}"
        return self.b.call(self.declare(full, t, [t] * len(args)), args, fastmath=("contract",))

    def declare(self, name: str, ret, args) -> ir.Function:
        """The external function (libm, or an LLVM intrinsic) `name`, declared once per module."""
        return self.module.globals.get(name) or ir.Function(self.module, ir.FunctionType(ret, args), name)


class VectorCodegen:
    """Straight-line vector code for `for (v < W) buf[i(v)] = e(v)`  // vectorized.

    Every expression becomes a <W x T> value: a load or store whose index is
    `base + v` is one vector memory access; a load at `base + 2v` is two and a
    shuffle; one whose index does not depend on v is a scalar load and a
    broadcast; anything else is W scalar accesses.
    """

    def __init__(self, cg: KernelCodegen, var: Var, width: int):
        self.cg, self.b, self.var, self.w = cg, cg.b, var, width
        self.plain: set[tuple[str, Expr]] = set()  # see _plain_stride_two
        self.pairs: dict[tuple[str, Expr], tuple[ir.Value, ir.Value]] = {}  # see _strided_load
        self.coefficients: dict[int, tuple[Expr, int | None]] = {}  # see _coefficient

    def _coefficient(self, e: Expr) -> int | None:
        return _coefficient(e, self.var, self.coefficients)

    def store(self, s: Store) -> None:
        self.plain = self._plain_stride_two(s.value)
        value = self.expr(s.value)
        if self.cg.dtypes[s.buf] == "bool":
            value = self.b.zext(value, ir.VectorType(ir.IntType(8), self.w))
        base = self._unit_base(s.index)
        self.cg.stored(s.buf)
        if base is not None:
            # element alignment only: a vector's natural alignment is not guaranteed
            self.b.store(value, self._vec_ptr(s.buf, base, value.type), align=_ALIGN[self.cg.dtypes[s.buf]])
            return
        for lane in range(self.w):
            self.cg.env[self.var] = ir.Constant(ir.IntType(64), lane)
            ptr = self.b.gep(self.cg.bufs[s.buf], [self.cg.index(s.index)], inbounds=True)
            self.b.store(self.b.extract_element(value, ir.Constant(ir.IntType(32), lane)), ptr)
        del self.cg.env[self.var]

    def _unit_base(self, index: Expr) -> Expr | None:
        """`base` when index == base + var (base free of var), else None."""
        return self._base(index) if self._coefficient(index) == 1 else None

    def _base(self, index: Expr) -> Expr:
        """The index of lane 0."""
        return simplify(substitute(index, {self.var: Const(0)}))

    def _strided_load(self, e: Load, stride: int) -> ir.Value:
        """Lanes buf[base + stride * v]. Stride 1 is one vector load. Stride 2 (a
        stride-2 pool or conv) loads the W elements from the first lane's and the W
        ending at the last lane's, and one shuffle of the two takes every other
        element: LLVM selects vector permutes where W scalar loads and inserts
        were. Both loads lie between two elements the lanes read, so they read
        nothing outside the buffer; two sources also keep LLVM from moving the
        shuffle below the arithmetic, which would then run on twice the lanes."""
        base = self._base(e.index)
        vtype = ir.VectorType(_MEM[e.dtype], self.w)
        if stride == 2:
            pair = self._pair(e, base, vtype)
            if pair is not None:
                return pair
        first = self.b.load(self._vec_ptr(e.buf, base, vtype), align=_ALIGN[e.dtype])
        if stride == 1:
            return first
        last = self.b.load(self._vec_ptr(e.buf, self._last_base(base), vtype), align=_ALIGN[e.dtype])
        return self._every_other(first, last)

    def _pair(self, e: Load, base: Expr, vtype) -> ir.Value | None:
        """A stride-2 read whose neighbour one element over is read too, unmasked
        (a 3-wide window's middle and right taps): the even lanes, or the odd
        ones, of the same 2W elements from the even read's first lane, two loads
        for both reads where each took two. The second load reaches one element
        past the even read's last, which the odd read's last lane reads."""
        for start, offset in ((base, 0), (simplify(add(base, Const(-1))), 1)):  # (this read even, or odd)
            if {(e.buf, start), (e.buf, simplify(add(start, Const(1))))} <= self.plain:
                key = (e.buf, start)
                if key not in self.pairs:
                    self.pairs[key] = tuple(self.b.load(self._vec_ptr(e.buf, at, vtype), align=_ALIGN[e.dtype])
                                            for at in (start, simplify(add(start, Const(self.w)))))
                first, second = self.pairs[key]
                picks = ir.Constant(ir.VectorType(ir.IntType(32), self.w), [2 * v + offset for v in range(self.w)])
                return self.b.shuffle_vector(first, second, picks)
        return None

    def _plain_stride_two(self, e: Expr) -> set[tuple[str, Expr]]:
        """(buffer, lane 0's index) of the stride-2 reads in `e` that read every
        lane (not the value a Select takes, which a mask may guard)."""
        found: set[tuple[str, Expr]] = set()

        def scan(x: Expr) -> None:
            if isinstance(x, Load):
                if x.dtype != "bool" and self._coefficient(x.index) == 2:
                    found.add((x.buf, self._base(x.index)))
                return
            for i, c in enumerate(children(x)):
                if not (isinstance(x, Select) and i == 1 and isinstance(c, Load)):
                    scan(c)
        scan(e)
        return found

    def _last_base(self, base: Expr) -> Expr:
        """Where the W elements ending at a stride-2 read's last lane begin."""
        return simplify(add(base, Const(self.w - 1)))

    def _every_other(self, first: ir.Value, last: ir.Value) -> ir.Value:
        """Lane v of a stride-2 read, element 2v: first[2v] while that is in
        `first` (the W elements from lane 0's), else last[2v - (W - 1)]."""
        picks = [2 * v if 2 * v < self.w else 2 * v + 1 for v in range(self.w)]
        return self.b.shuffle_vector(first, last, ir.Constant(ir.VectorType(ir.IntType(32), self.w), picks))

    def _tile_column(self, e: Load, stride: int) -> ir.Value | None:
        """Lanes tile[base + stride * v] of a kernel-local array read as a tile
        of rows `stride` long (a GEMM's accumulator block, stored transposed
        by a direct conv: each output channel's pixels are a column of it):
        column `base % stride` of the rows from `base // stride` on. The
        rows are transposed once, by log2(rows) rounds of interleaving row i
        with row i + rows/2 (on AVX-512, a vpermt2ps each), and every column
        of the tile taken from the result: LLVM, given the columns element by
        element, built an 8 x 16 tile's in about 250 shuffles, spills and
        reloads, more than a 3-channel stem's whole k loop. Rows wider than
        a register go a register's width at a time. None where this
        does not apply (not a local array, a column not known at compile
        time, rows too long for one vector)."""
        cg, rows = self.cg, 1 << (self.w - 1).bit_length()  # the lanes, padded to a power of two
        size = cg.local_sizes.get(e.buf)
        if size is None or stride < rows or stride & (stride - 1) or stride > MAX_VECTOR:
            return None
        known = {v: Const(int(x.constant)) for v, x in cg.env.items() if isinstance(x, ir.Constant)}  # (unrolled)
        base = simplify(substitute(self._base(e.index), known))
        if not isinstance(base, Const):
            return None
        first, column = divmod(int(base.value), stride)
        if (first + self.w) * stride > size:
            return None
        # rows longer than a register (an 8 x 32 block's) are transposed a register's
        # width of columns at a time: shuffles of whole registers, which LLVM
        # compiles in a fraction of the time of the long rows'
        width = max(rows, min(stride, vector_bits() // _BITS[e.dtype]))
        part, column = divmod(column, width)
        key = (e.buf, stride, self.w, first, part, self.b.block)
        if key not in cg.transposed:
            vtype = ir.VectorType(_MEM[e.dtype], width)
            tile = [self.b.load(self._vec_ptr(e.buf, Const((first + r) * stride + part * width), vtype),
                                align=_ALIGN[e.dtype]) if r < self.w else ir.Constant(vtype, None)
                    for r in range(rows)]  # (rows past the tile's are zeros: undef ones crashed LLVM 22's
            # X86 instruction selection on a 3-row tile whose columns an Add then read)
            mask = [ir.Constant(ir.VectorType(ir.IntType(32), width), [j // 2 + (j % 2) * width + h
                                                                        for j in range(width)])
                    for h in (0, width // 2)]  # interleave the first (then the second) halves of two rows
            for _ in range(rows.bit_length() - 1):
                tile = [self.b.shuffle_vector(tile[i], tile[i + rows // 2], m) for i in range(rows // 2) for m in mask]
            cg.transposed[key] = tile
        per = width // rows  # columns a transposed vector holds
        vec = cg.transposed[key][column // per]
        lanes = [(column % per) * rows + v for v in range(self.w)]
        return self.b.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(ir.IntType(32), self.w), lanes))

    def _guarded_load(self, cond: Expr, load: Load, other: Expr) -> ir.Value | None:
        """`cond ? buf[i(v)] : other` as masked vector loads (a stencil's read of
        padding in place, lower.read_padded; Pad; a Concat along the lanes): i's
        clamps into the buffer, which only keep the lanes that `cond` selects
        away in bounds, are dropped where the comparisons in `cond` prove them
        idle, and the masked-off lanes read nothing. None where the CPU has no
        masked load for the element size (`cpu.masked_loads`), no clamp was
        dropped, the proof fails, or the index is then not base + v or base + 2v."""
        if not cpu.masked_loads(_BITS[load.dtype]):
            return None
        index = _unclamped(load.index, self.var, _facts(cond))
        stride = None if index is None or index == load.index else self._coefficient(index)
        if stride not in (1, 2):
            return None
        mask, fill = self.expr(cond), self.expr(other)
        vtype = ir.VectorType(_MEM[load.dtype], self.w)
        base = self._base(index)
        if stride == 1:
            return self._masked_load(load.buf, base, vtype, mask, fill)
        # two loads and a shuffle, as _strided_load. The loads' lanes are elements, not
        # the lanes v: an `other` that differs by lane is selected after the shuffle.
        falses = ir.Constant(mask.type, [False] * self.w)

        def spread(pick) -> ir.Value:
            """The mask of one load: element j is lane pick(j)'s (w: no lane's)."""
            return self.b.shuffle_vector(mask, falses, ir.Constant(ir.VectorType(ir.IntType(32), self.w),
                                                                   [pick(j) for j in range(self.w)]))
        uniform = self._coefficient(other) == 0  # (a stencil's padding)
        passthru = fill if uniform else ir.Constant(vtype, ir.Undefined)
        first = self._masked_load(load.buf, base, vtype, spread(lambda j: j // 2 if j % 2 == 0 else self.w),
                                  passthru)
        last = self._masked_load(load.buf, self._last_base(base), vtype,
                                 spread(lambda j: (j + self.w - 1) // 2 if (j + self.w - 1) % 2 == 0 else self.w),
                                 passthru)
        lanes = self._every_other(first, last)
        return lanes if uniform else self.b.select(mask, lanes, fill)

    def _masked_load(self, buf: str, base: Expr, vtype, mask: ir.Value, fill: ir.Value) -> ir.Value:
        """llvm.masked.load: lanes off in `mask` read no memory and take `fill`.
        (No inbounds on the address: the vector may begin before the buffer, or
        end past it.)"""
        ptr = self.b.bitcast(self.b.gep(self.cg.bufs[buf], [self.cg.index(base)]), vtype.as_pointer())
        element = {"float": "f32", "double": "f64", "half": "f16", "bfloat": "bf16"}.get(str(vtype.element),
                                                                                       str(vtype.element))
        fn = self.cg.declare(f"llvm.masked.load.v{self.w}{element}.p0", vtype,
                             [ptr.type, ir.IntType(32), mask.type, vtype])
        align = ir.Constant(ir.IntType(32), _ALIGN[self.cg.dtypes[buf]])
        return self.b.call(fn, [ptr, align, mask, fill])

    def _min_max_of(self, op: str, values: list[ir.Value]) -> ir.Value:
        """The NaN-propagating max (or min) of several vectors, a pooling window's
        cells: a tree of compare-and-selects (x86's vmaxps, which drops a NaN in
        its first operand), and NaN wherever some value is, found by one
        unordered compare per pair of values. Pair by pair (`float_min_max`)
        each max tests for NaN itself: two compares, which share a port with
        the window's shuffles."""
        b = self.b
        nan = None
        for i in range(0, len(values), 2):
            pair = values[i:i + 2]
            here = b.fcmp_unordered("uno", pair[0], pair[-1])
            nan = here if nan is None else b.or_(nan, here)
        while len(values) > 1:
            values = [b.select(b.fcmp_ordered(">" if op == "max" else "<", *values[i:i + 2]), *values[i:i + 2])
                      if i + 1 < len(values) else values[i] for i in range(0, len(values), 2)]
        return b.select(nan, ir.Constant(values[0].type, [float("nan")] * self.w), values[0])

    def _at_lane(self, e: Expr, lane: int) -> ir.Value:
        """`e` as a scalar at one lane, the lane variable bound to it (a uniform
        expression at lane 0: it may still name the variable where it cancels,
        (v - v) mod 16)."""
        self.cg.env[self.var] = ir.Constant(ir.IntType(64), lane)
        try:
            return self.cg.expr(e)
        finally:
            del self.cg.env[self.var]

    def _vec_ptr(self, buf: str, base: Expr, vtype) -> ir.Value:
        ptr = self.b.gep(self.cg.bufs[buf], [self.cg.index(base)], inbounds=True)
        return self.b.bitcast(ptr, vtype.as_pointer())

    def splat(self, scalar: ir.Value) -> ir.Value:
        vec = self.b.insert_element(ir.Constant(ir.VectorType(scalar.type, self.w), ir.Undefined), scalar,
                                    ir.Constant(ir.IntType(32), 0))
        return self.b.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(ir.IntType(32), self.w), [0] * self.w))

    def expr(self, e: Expr) -> ir.Value:
        b, cg = self.b, self.cg
        if self._coefficient(e) == 0:  # uniform across lanes: compute once, broadcast
            return self.splat(self._at_lane(e, 0))
        if isinstance(e, Var):
            return ir.Constant(ir.VectorType(ir.IntType(64), self.w), list(range(self.w)))
        if isinstance(e, Load):
            stride = self._coefficient(e.index)
            if stride in (1, 2) and e.dtype != "bool":
                return self._strided_load(e, stride)
            column = self._tile_column(e, stride) if stride and e.dtype != "bool" else None
            if column is not None:
                return column
            lanes = [self._at_lane(e, lane) for lane in range(self.w)]
            vec = ir.Constant(ir.VectorType(lanes[0].type, self.w), ir.Undefined)
            for lane, x in enumerate(lanes):
                vec = b.insert_element(vec, x, ir.Constant(ir.IntType(32), lane))
            return vec
        if isinstance(e, Select) and isinstance(e.a, Load) and e.a.dtype != "bool":
            masked = self._guarded_load(e.cond, e.a, e.b)
            if masked is not None:
                return masked
        if isinstance(e, Binary) and e.op in ("min", "max") and _is_float(e.dtype):
            cells = _operands(e, e.op)
            if len(cells) > 2:
                return self._min_max_of(e.op, [self.expr(x) for x in cells])
        if isinstance(e, Call) and e.fn in _LIBM:  # no vector libm: one call per lane
            arg = self.expr(e.args[0])
            vec = ir.Constant(arg.type, ir.Undefined)
            for lane in range(self.w):
                x = b.extract_element(arg, ir.Constant(ir.IntType(32), lane))
                vec = b.insert_element(vec, cg.call(e.fn, [x], e.dtype), ir.Constant(ir.IntType(32), lane))
            return vec
        return cg.expr(e, sub=self.expr)  # arithmetic: the scalar instructions work on vectors too


def _lanes_independent(s: Stmt, var: Var) -> bool:
    """True when `s` is a Store to a distinct element per iteration of var that
    reads its own buffer only at that element: its iterations may run as vector
    lanes. (An accumulation, acc[0] = acc[0] + x[r], is not: LLVM's loop
    vectorizer handles those, as reductions.)"""
    if not isinstance(s, Store) or not _coefficient(s.index, var):
        return False
    return all(e.index == s.index for e in walk_exprs(s.value) if isinstance(e, Load) and e.buf == s.buf)


def _coefficient(e: Expr, var: Var, memo: dict[int, tuple[Expr, int | None]] | None = None) -> int | None:
    """The coefficient of `var` in `e` when e is affine in var (0: independent), else None.

    `memo` (by node identity, holding the node so that its id is not reused)
    serves a vector emitter, which asks this of every node of a tree, top
    down: without it each question walked the subtree again."""
    if memo is None:
        memo = {}
    known = memo.get(id(e))
    if known is not None:
        return known[1]
    if e == var:
        result: int | None = 1
    elif isinstance(e, (Const, Var)):
        result = 0
    elif isinstance(e, Binary) and e.op in ("+", "-", "*") and e.dtype == "i64":
        a, c = _coefficient(e.a, var, memo), _coefficient(e.b, var, memo)
        if a is None or c is None:
            result = None
        elif e.op != "*":
            result = a + c if e.op == "+" else a - c
        elif a == 0 and isinstance(e.a, Const):
            result = c * int(e.a.value)
        elif c == 0 and isinstance(e.b, Const):
            result = a * int(e.b.value)
        else:
            result = 0 if a == 0 and c == 0 else None
    else:  # anything else is affine only when it does not depend on var at all
        result = 0 if all(_coefficient(x, var, memo) == 0 for x in children(e)) else None
    memo[id(e)] = (e, result)
    return result


def _facts(cond: Expr) -> list[Expr]:
    """The integer terms f that `cond`, a conjunction of comparisons, says are >= 0."""
    if isinstance(cond, Binary) and cond.op == "and":
        return _facts(cond.a) + _facts(cond.b)
    if isinstance(cond, Compare) and cond.a.dtype == "i64":
        a, c = cond.a, cond.b
        form = {">=": Binary("-", a, c), ">": Binary("-", Binary("-", a, c), Const(1)),
                "<=": Binary("-", c, a), "<": Binary("-", Binary("-", c, a), Const(1))}.get(cond.op)
        return [] if form is None else [form]
    return []


def _unclamped(index: Expr, var: Var, facts: list[Expr]) -> Expr | None:
    """`index` without the max(i, lo) and min(i, hi) over `var` that `facts`
    prove idle (i - lo >= 0, hi - i >= 0: each differs from a fact by a
    constant >= 0); None if one is not proved."""
    def implied(term: Expr) -> bool:
        return any(isinstance(d := simplify(Binary("-", term, f)), Const) and d.value >= 0 for f in facts)

    def strip(e: Expr) -> Expr | None:
        if var not in walk_exprs(e):
            return e
        if isinstance(e, Binary) and e.dtype == "i64":
            a, c = strip(e.a), strip(e.b)
            if a is None or c is None:
                return None
            if e.op in ("max", "min"):
                i, bound = (a, c) if var in walk_exprs(a) else (c, a)
                return i if implied(Binary("-", i, bound) if e.op == "max" else Binary("-", bound, i)) else None
            return Binary(e.op, a, c)
        return e
    return strip(index)


def _operands(e: Expr, op: str) -> list[Expr]:
    """The operands of a tree of `op`s (max(max(a, b), c) -> [a, b, c])."""
    if isinstance(e, Binary) and e.op == op:
        return _operands(e.a, op) + _operands(e.b, op)
    return [e]
