"""Quantization ops: QuantizeLinear, DequantizeLinear, and the integer
products MatMulInteger and ConvInteger (ONNX semantics).

    QuantizeLinear:   q = saturate(round_half_even(x / scale) + zero_point)
    DequantizeLinear: x = (q - zero_point) * scale

`scale` (and `zero_point`, of the same shape) is a scalar (per tensor), a 1-D
tensor along `axis` (per axis, e.g. one scale per output channel), or, with
`block_size` > 0, a tensor of x's rank whose `axis` dimension is
ceil(x.shape[axis] / block_size) (blocked). `scale_index` maps an element
of x to the element of scale that applies to it; the reference below and the
loop lowering (loops/rules.py) both use it.

The integer products compute (A - a_zero_point) @ (B - b_zero_point) and
the Conv of (x - x_zero_point) with (w - w_zero_point), exactly, in i32.
QLinearMatMul and QLinearConv are not IR ops: the frontend writes them as an
integer product followed by its requantization (Cast, Mul, QuantizeLinear),
the same form the quantize pass produces, so fusion puts requantization in
the product's epilogue.
"""
from __future__ import annotations

import numpy as np

from ..registry import Attr, Kind, fail, register
from ..types import DTYPES, FLOAT_DTYPES, TensorType
from .common import like, norm_axis, same_dtype
from .conv import _GEOMETRY, _conv, _conv_infer
from .nn import _matmul_infer

QUANT_DTYPES = ("i8", "u8", "i16")  # what QuantizeLinear can produce
INTEGER_INPUTS = ("i8", "u8")        # what MatMulInteger/ConvInteger read


def quant_range(dtype: str) -> tuple[int, int]:
    info = np.iinfo(DTYPES[dtype])
    return int(info.min), int(info.max)


def scale_axis(x_shape: tuple[int, ...], s_shape: tuple[int, ...], axis: int, block_size: int, what: str) -> int | None:
    """Check the scale's shape against x; the axis it varies along, or None per tensor."""
    if len(s_shape) == 0 or (len(s_shape) == 1 and s_shape[0] == 1 and block_size == 0):
        return None
    ax = norm_axis(axis, len(x_shape))
    if block_size > 0:
        want = tuple(-(-d // block_size) if a == ax else d for a, d in enumerate(x_shape))
        if tuple(s_shape) != want:
            fail(f"{what} has shape {list(s_shape)}; blocked (block_size={block_size}, axis={axis}) "
                 f"needs {list(want)} for an input of shape {list(x_shape)}")
        return ax
    if len(s_shape) != 1 or s_shape[0] != x_shape[ax]:
        fail(f"{what} has shape {list(s_shape)}: it must be a scalar, or 1-D of length {x_shape[ax]} "
             f"(axis {axis} of {list(x_shape)}), or blocked with block_size > 0")
    return ax


def scale_index(idx: list, s_shape: tuple[int, ...], axis: int | None, block_size: int, div, zero=0) -> list:
    """The index into scale for element `idx` of x. `div(i, n)` divides an index
    and `zero` is index 0 (NumPy here, loop-IR expressions in the lowering)."""
    if axis is None:
        return [zero] * len(s_shape)
    if block_size > 0:
        return [div(i, block_size) if a == axis else i for a, i in enumerate(idx)]
    return [idx[axis]]


def expand_scale(s: np.ndarray, x_shape: tuple[int, ...], axis: int | None, block_size: int) -> np.ndarray:
    """scale (or zero point) broadcast to x's shape, by `scale_index`."""
    if axis is None:
        return np.broadcast_to(s.reshape(()), x_shape)
    idx = list(np.indices(x_shape, sparse=True))
    return np.broadcast_to(s[tuple(scale_index(idx, s.shape, axis, block_size, lambda i, n: i // n))], x_shape)


def _q_attrs(x, scale, zero_point, axis, block_size, what):
    if zero_point is not None and zero_point.shape != scale.shape:
        fail(f"zero point {list(zero_point.shape)} and scale {list(scale.shape)} differ in shape")
    return scale_axis(x.shape, scale.shape, axis, block_size, what)


def _quantize_infer(x, scale, zero_point=None, *, axis, block_size, dtype):
    same_dtype(x, allowed=FLOAT_DTYPES + ("i32",))
    same_dtype(scale, allowed=FLOAT_DTYPES + ("i32",))
    if zero_point is not None and zero_point.dtype != dtype:
        fail(f"zero point is {zero_point.dtype}, the output dtype is {dtype}")
    _q_attrs(x, scale, zero_point, axis, block_size, "scale")
    return like(x, dtype=dtype)


def _quantize(x, scale, zero_point=None, *, axis, block_size, dtype):
    ax = scale_axis(x.shape, scale.shape, axis, block_size, "scale")
    s = expand_scale(scale, x.shape, ax, block_size)
    q = np.rint(x.astype(np.float32) / s.astype(np.float32))  # round half to even, as ONNX
    if zero_point is not None:
        q = q + expand_scale(zero_point, x.shape, ax, block_size).astype(np.float32)
    lo, hi = quant_range(dtype)
    return np.clip(np.nan_to_num(q, nan=0.0), lo, hi).astype(DTYPES[dtype])  # NaN to 0, as the native casts


register("QuantizeLinear", Kind.BROADCAST, _quantize_infer, _quantize, inputs=(2, 3),
         attrs={"axis": Attr("int", 1), "block_size": Attr("int", 0), "dtype": Attr("dtype", "u8", choices=QUANT_DTYPES)},
         doc="saturate(round_half_even(x / scale) + zero_point) as `dtype`; scale per tensor, per axis or blocked")


def _dequantize_infer(x, scale, zero_point=None, *, axis, block_size):
    same_dtype(x, allowed=QUANT_DTYPES + ("i32",))
    same_dtype(scale, allowed=FLOAT_DTYPES)
    if zero_point is not None and zero_point.dtype != x.dtype:
        fail(f"zero point is {zero_point.dtype}, the input is {x.dtype}")
    _q_attrs(x, scale, zero_point, axis, block_size, "scale")
    return like(x, dtype=scale.dtype)


def _dequantize(x, scale, zero_point=None, *, axis, block_size):
    ax = scale_axis(x.shape, scale.shape, axis, block_size, "scale")
    y = x.astype(np.float32)
    if zero_point is not None:
        y = y - expand_scale(zero_point, x.shape, ax, block_size).astype(np.float32)
    return (y * expand_scale(scale, x.shape, ax, block_size).astype(np.float32)).astype(scale.dtype)


register("DequantizeLinear", Kind.BROADCAST, _dequantize_infer, _dequantize, inputs=(2, 3),
         attrs={"axis": Attr("int", 1), "block_size": Attr("int", 0)},
         doc="(x - zero_point) * scale; scale per tensor, per axis or blocked")


# ---- integer products -----------------------------------------------------------------
def _zero_point(zp, length: int, what: str):
    """Check a zero point: a scalar, or 1-D of `length` (per row, column or channel)."""
    if zp is not None and zp.type.numel != 1 and zp.shape != (length,):
        fail(f"{what} has shape {list(zp.shape)}; it must be a scalar or have shape [{length}]")


def _integer_dtypes(a, b, za, zb):
    same_dtype(a, allowed=INTEGER_INPUTS)
    same_dtype(b, allowed=INTEGER_INPUTS)
    for z, v, what in ((za, a, "first"), (zb, b, "second")):
        if z is not None and z.dtype != v.dtype:
            fail(f"the {what} zero point is {z.dtype}, its operand {v.dtype}")


def _matmul_integer_infer(a, b, a_zero_point=None, b_zero_point=None):
    _integer_dtypes(a, b, a_zero_point, b_zero_point)
    out = _matmul_infer(like(a, dtype="i32"), like(b, dtype="i32"))
    _zero_point(a_zero_point, a.shape[-2] if a.rank > 1 else 1, "a_zero_point")
    _zero_point(b_zero_point, b.shape[-1], "b_zero_point")
    return out


def centered(v: np.ndarray, zp: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """v - zp in i32, zp reshaped to `shape` (it broadcasts against v)."""
    v = v.astype(np.int32)
    return v if zp is None else v - zp.astype(np.int32).reshape(shape if zp.size > 1 else ())


def _matmul_integer(a, b, a_zero_point=None, b_zero_point=None):
    return np.matmul(centered(a, a_zero_point, (-1, 1)), centered(b, b_zero_point, (-1,))).astype(np.int32)


register("MatMulInteger", Kind.OUT_FUSABLE, _matmul_integer_infer, _matmul_integer, inputs=(2, 4),
         doc="(A - a_zero_point) @ (B - b_zero_point) in i32; zero points per tensor, per row of A, per column of B")


def _conv_integer_infer(x, w, x_zero_point=None, w_zero_point=None, **geometry):
    _integer_dtypes(x, w, x_zero_point, w_zero_point)
    if x_zero_point is not None and x_zero_point.type.numel != 1:
        fail("x_zero_point must be a scalar")
    _zero_point(w_zero_point, w.shape[0], "w_zero_point")
    return TensorType(_conv_infer(like(x, dtype="f32"), like(w, dtype="f32"), **geometry).shape, "i32")


def _conv_integer(x, w, x_zero_point=None, w_zero_point=None, **geometry):
    n = w.ndim - 1
    # padding is zero after centering: x's zero point, as ONNX's ConvInteger pads
    xc = centered(x, x_zero_point, ()).astype(np.int64)
    wc = centered(w, w_zero_point, (-1,) + (1,) * n).astype(np.int64)
    return _conv(xc, wc, **geometry).astype(np.int32)


register("ConvInteger", Kind.OUT_FUSABLE, _conv_integer_infer, _conv_integer, inputs=(2, 4), attrs=dict(_GEOMETRY),
         doc="Conv of (x - x_zero_point) with (w - w_zero_point) in i32; w's zero point per tensor or per output channel")
