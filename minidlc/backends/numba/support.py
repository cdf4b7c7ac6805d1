"""The loop-IR operations that Python's own operators would get wrong, for Numba.

Python's `//` and `%` floor, `min` and `max` ignore NaN in one operand, and
float-to-int conversion is undefined out of range; the loop IR says
otherwise (docs/LOOP_IR.md). Each function here is a Numba intrinsic that
emits the same LLVM instruction the llvm backend emits, so both backends
compute the same bits. The generated kernels call them as `rt.NAME(...)`.
"""
from __future__ import annotations

import llvmlite.ir as ir
from numba.core import types
from numba.extending import intrinsic


def _binary(make):
    """An intrinsic f(a, b) of one numeric type, emitting `make(builder, a, b, numba type)`.
    (Operands of one loop-IR dtype, except that Numba makes a prange's index
    unsigned: mixed integers compute in i64.)"""
    @intrinsic
    def op(typingctx, a, b):
        if a == b:
            t = a
        elif isinstance(a, types.Integer) and isinstance(b, types.Integer):
            t = types.int64
        else:
            return None

        def codegen(context, builder, sig, args):
            x, y = (context.cast(builder, v, ty, t) for v, ty in zip(args, sig.args))
            return make(builder, x, y, t)
        return t(a, b), codegen
    return op


def _float_intrinsic(name: str):
    def make(builder, a, b, t):
        suffix = "f32" if t == types.float32 else "f64"
        fn = builder.module.declare_intrinsic(f"{name}.{suffix}", fnty=ir.FunctionType(a.type, [a.type, a.type]))
        return builder.call(fn, [a, b])
    return make


def _unsigned(t) -> bool:
    return t == types.boolean or (isinstance(t, types.Integer) and not t.signed)


# min/max that propagate NaN (llvm.minimum/maximum)
fmin = _binary(_float_intrinsic("llvm.minimum"))
fmax = _binary(_float_intrinsic("llvm.maximum"))
# C integer division and remainder: truncating, the remainder takes the dividend's sign
div = _binary(lambda b, x, y, t: b.udiv(x, y) if _unsigned(t) else b.sdiv(x, y))
rem = _binary(lambda b, x, y, t: b.urem(x, y) if _unsigned(t) else b.srem(x, y))


def _saturating_cast(dst):
    """float -> integer `dst`: NaN gives 0, values out of range the nearest end."""
    @intrinsic
    def cast(typingctx, x):
        if not isinstance(x, types.Float):
            return None

        def codegen(context, builder, sig, args):
            src = "f32" if sig.args[0] == types.float32 else "f64"
            name = "llvm.fptoui.sat" if not dst.signed else "llvm.fptosi.sat"
            to = ir.IntType(dst.bitwidth)
            fn = builder.module.declare_intrinsic(f"{name}.i{dst.bitwidth}.{src}",
                                                  fnty=ir.FunctionType(to, [args[0].type]))
            return builder.call(fn, args)
        return dst(x), codegen
    return cast


to_i8, to_u8, to_i16, to_i32, to_i64 = (_saturating_cast(t) for t in
                                         (types.int8, types.uint8, types.int16, types.int32, types.int64))


@intrinsic
def ldexp(typingctx, y, n):
    """y * 2^n for an integral float n, |n| <= 252 (as the llvm backend: two exact
    products by powers of two built in the exponent bits)."""
    if y != n or not isinstance(y, types.Float):
        return None

    def codegen(context, builder, sig, args):
        y, n = args
        bits, mantissa, bias = (32, 23, 127) if sig.args[0] == types.float32 else (64, 52, 1023)
        int_t = ir.IntType(bits)
        floor = builder.module.declare_intrinsic(f"llvm.floor.f{bits}", fnty=ir.FunctionType(y.type, [y.type]))

        def pow2(k):
            biased = builder.add(builder.fptosi(k, int_t), ir.Constant(int_t, bias))
            return builder.bitcast(builder.shl(biased, ir.Constant(int_t, mantissa)), y.type)
        half = builder.call(floor, [builder.fmul(n, ir.Constant(y.type, 0.5))])
        return builder.fmul(builder.fmul(y, pow2(half)), pow2(builder.fsub(n, half)))
    return y(y, n), codegen


@intrinsic
def stack_empty(typingctx, size, dtype):
    """A pointer to `size` elements of `dtype` on the stack, allocated once in the
    function's entry block (as the llvm backend's allocas), so that LLVM can keep
    a register block in registers; wrap it with `numba.carray`."""
    if not isinstance(size, types.IntegerLiteral):
        return None
    elem = dtype.dtype

    def codegen(context, builder, sig, args):
        with builder.goto_entry_block():
            return builder.alloca(context.get_data_type(elem), size=ir.Constant(ir.IntType(64), size.literal_value))
    return types.CPointer(elem)(size, dtype), codegen


# f16 buffers reach Numba, which has no float16, as their uint16 bits (render.as_numba);
# these convert the bits as the llvm backend converts f16 (fpext/fptrunc: F16C's vcvtph2ps/vcvtps2ph)
@intrinsic
def from_f16(typingctx, bits):
    if bits != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(bits), codegen


@intrinsic
def to_f16(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(x), codegen


# bf16 likewise (render.as_numba); converted on the bits as the llvm backend does
@intrinsic
def from_bf16(typingctx, bits):
    if bits != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        word = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(word, ir.FloatType())
    return types.float32(bits), codegen


@intrinsic
def to_bf16(typingctx, x):
    """Round to nearest even on the bits; a NaN stays a quiet NaN."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        top = builder.lshr(bits, ir.Constant(i32, 16))
        bias = builder.add(builder.and_(top, ir.Constant(i32, 1)), ir.Constant(i32, 0x7FFF))
        rounded = builder.lshr(builder.add(bits, bias), ir.Constant(i32, 16))
        nan = builder.fcmp_unordered("uno", args[0], args[0])
        word = builder.select(nan, builder.or_(top, ir.Constant(i32, 0x40)), rounded)
        return builder.trunc(word, ir.IntType(16))
    return types.uint16(x), codegen


def _word_dot(parts: int, widen: str):
    """An intrinsic: acc + the dot product of the `parts` values of two i32
    words (a's zero- or sign-extended by `widen`, b's sign-extended), in LLVM
    vector instructions."""
    def codegen(context, builder, sig, args):
        acc, a, b = args
        part, wide = ir.VectorType(ir.IntType(32 // parts), parts), ir.VectorType(ir.IntType(32), parts)
        prod = builder.mul(getattr(builder, widen)(builder.bitcast(a, part), wide),
                           builder.sext(builder.bitcast(b, part), wide))
        total = acc
        for lane in range(parts):
            total = builder.add(total, builder.extract_element(prod, ir.Constant(ir.IntType(32), lane)))
        return total
    return codegen


@intrinsic
def dot4(typingctx, acc, a, b):
    """The loop IR's dot4 on i32 words: a's four u8 bytes with b's four i8."""
    if not all(t == types.int32 for t in (acc, a, b)):
        return None
    return types.int32(acc, a, b), _word_dot(4, "zext")


@intrinsic
def dot2(typingctx, acc, a, b):
    """The loop IR's dot2 on i32 words: a's two i16 halves with b's."""
    if not all(t == types.int32 for t in (acc, a, b)):
        return None
    return types.int32(acc, a, b), _word_dot(2, "sext")
