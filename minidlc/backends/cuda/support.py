"""The loop-IR operations that Python's operators would get wrong, as CUDA device functions.

The same names as the Numba CPU backend's support module (the generated
kernels call `rt.NAME(...)`), written in plain Python so that they run both
compiled by Numba CUDA and in Numba's CUDA simulator (which runs kernels as
Python). docs/LOOP_IR.md defines each operation.
"""
from __future__ import annotations

import inspect
import math

import numpy as np
from numba import cuda
from numba.core import config


def _device_function_decorator():
    """`cuda.jit` for a device function that NVVM inlines into its caller.
    Numba's built-in CUDA target spells that `inline=True`; NVIDIA's numba-cuda
    spells it `forceinline=True` (the LLVM attribute alwaysinline), where
    `inline=True` inlines at the level of Numba's IR instead. That is slow: each
    inlined call re-runs Numba's dataflow analyses over the whole kernel, and a
    tiled GEMM makes hundreds of `rt.udiv`/`rt.urem` calls: numba-cuda 0.68 took
    131 s to compile sgemm's kernel on the H200 machine, nearly all of it in
    those analyses (Numba's built-in target, inlining in NVVM: 5 s)."""
    if "forceinline" in inspect.signature(cuda.jit).parameters:
        return cuda.jit(device=True, forceinline=True)
    return cuda.jit(device=True, inline=True)


device_function = _device_function_decorator()

# The math functions. On a GPU, math's (libdevice: IEEE results, inf and NaN
# included); the simulator runs Python, whose math raises on log(0) or
# exp(1000) where a GPU returns -inf or inf: there, NumPy's scalar functions.
if config.ENABLE_CUDASIM:
    exp, log, sqrt, tanh, sin, cos, pow = np.exp, np.log, np.sqrt, np.tanh, np.sin, np.cos, np.power
else:
    exp, log, sqrt, tanh, sin, cos, pow = math.exp, math.log, math.sqrt, math.tanh, math.sin, math.cos, math.pow


# f16 and bf16 buffers reach kernels as their uint16 bits (numba.render.bits_dtype).
# On a GPU, the numba backend's conversions (LLVM intrinsics, which NVVM takes as
# they are); the simulator runs Python, where NumPy and ml_dtypes convert.
if config.ENABLE_CUDASIM:
    def from_f16(bits):
        return np.float32(np.uint16(bits).view(np.float16))

    def to_f16(x):
        return np.float16(x).view(np.uint16)

    def from_bf16(bits):
        return np.uint32(np.uint32(bits) << np.uint32(16)).view(np.float32)

    def to_bf16(x):
        """Round to nearest even on the bits; a NaN stays a quiet NaN (as the intrinsic)."""
        bits = int(np.float32(x).view(np.uint32))
        top = bits >> 16
        if x != x:
            return np.uint16(top | 0x40)
        return np.uint16(((bits + (top & 1) + 0x7FFF) >> 16) & 0xFFFF)
else:
    from ..numba.support import from_bf16, from_f16, to_bf16, to_f16  # noqa: F401


@device_function
def fmax(a, b):
    """max that propagates NaN (llvm.maximum)."""
    if a != a or b != b:
        return a + b
    return a if a > b else b


@device_function
def fmin(a, b):
    """min that propagates NaN (llvm.minimum)."""
    if a != a or b != b:
        return a + b
    return a if a < b else b


@device_function
def div(a, b):
    """C integer division: truncates toward zero, where Python's // floors
    (one more where the two differ: a remainder, and operands of opposite
    signs). Nothing overflows: abs(a) would, for the most negative a."""
    q = a // b
    if a % b != 0 and (a < 0) != (b < 0):
        q += 1
    return q


@device_function
def rem(a, b):
    """C remainder: takes the dividend's sign."""
    return a - div(a, b) * b


if config.ENABLE_CUDASIM:  # Python's operators: the same numbers, and the simulator's hot path
    def udiv(a, b):
        return a // b

    def urem(a, b):
        return a % b
else:
    @device_function
    def udiv(a, b):
        """a // b of two indices known to lie in [0, 2^32): in 32 bits, where a
        division by a constant is one multiply-high (64 bits: several)."""
        return np.int64(np.uint32(a) // np.uint32(b))

    @device_function
    def urem(a, b):
        """a % b of two indices known to lie in [0, 2^32), in 32 bits (see udiv)."""
        return np.int64(np.uint32(a) % np.uint32(b))


def _saturating_cast(lo: int, hi: int):
    """float -> integer in [lo, hi]: NaN gives 0, values out of range the nearest end."""
    @device_function
    def cast(x):
        if x != x:
            return 0
        if x <= lo:
            return lo
        if x >= hi:
            return hi
        return int(x)
    return cast


to_i8, to_u8, to_i16, to_i32, to_i64 = (_saturating_cast(int(np.iinfo(t).min), int(np.iinfo(t).max))
                                         for t in (np.int8, np.uint8, np.int16, np.int32, np.int64))


@device_function
def ldexp(y, n):
    """y * 2^n for an integral float n."""
    return math.ldexp(y, int(n))


@device_function
def floor(x):
    """floor in the argument's float type (math.floor gives an integer)."""
    if not abs(x) < 4503599627370496.0:  # 2^52: already integral, or inf or NaN
        return x
    f = x - math.fmod(x, 1.0)  # truncated toward zero; exact
    return f - 1 if f > x else f


@device_function
def ceil(x):
    return -floor(-x)


@device_function
def rint(x):
    """Round half to even (np.rint), keeping the sign of a zero result (-0.3 gives -0.0)."""
    f = floor(x)
    d = x - f
    if d > 0.5 or (d == 0.5 and math.fmod(f, 2.0) != 0):
        f = f + 1
    return math.copysign(f, x)


@device_function
def imin(a, b):
    """min of integers (Numba CUDA's builtin min does not compile here)."""
    return a if a < b else b


@device_function
def imax(a, b):
    return a if a > b else b
