"""Converters for the quantization ops.

QuantizeLinear and DequantizeLinear map onto the IR ops of the same name
(the output dtype made explicit); MatMulInteger and ConvInteger too.
The rest are written out in IR ops, so that the compiler sees one form:

* DynamicQuantizeLinear as ONNX's own function body (min/max over the
  tensor, a u8 scale and zero point, then QuantizeLinear);
* QLinearMatMul and QLinearConv as the integer product, then its
  *requantization*: Cast to f32, Mul by a_scale * b_scale / y_scale (per
  output channel where the weight's scale is), QuantizeLinear with scale 1
  and y's zero point. That is the ONNX reference's arithmetic, and the same
  chain the quantize pass emits, so fusion runs it in the product's epilogue.
"""
from __future__ import annotations

import numpy as np
import onnx

from ...ir import Value
from .converters import ONNX_DTYPES, Ctx, converter, dtype_of
from .nn import _check_kernel_shape, _window_attrs


def _trimmed(inputs: list[Value | None]) -> list[Value | None]:
    """Inputs without the omitted optional ones at the end."""
    while inputs and inputs[-1] is None:
        inputs = inputs[:-1]
    return inputs


def _output_dtype(ctx: Ctx, zero_point: Value | None) -> str:
    """QuantizeLinear's output dtype: the zero point's, else output_dtype, else u8."""
    attr = ctx.pop("output_dtype", 0)
    if zero_point is not None:
        if attr and ONNX_DTYPES.get(attr) != zero_point.type.dtype:
            raise ctx.error(f"output_dtype {onnx.TensorProto.DataType.Name(attr)} differs from the zero point's "
                            f"dtype {zero_point.type.dtype}")
        return zero_point.type.dtype
    return dtype_of(attr, f"{ctx.op_type} node '{ctx.node.name}'") if attr else "u8"


def _q_common(ctx: Ctx) -> dict:
    ctx.pop("saturate", 1)  # only float8 outputs saturate optionally; integers always do
    precision = ctx.pop("precision", 0)
    if precision not in (0, onnx.TensorProto.FLOAT):
        raise ctx.error(f"precision={precision} is not supported (only the default, or FLOAT)")
    return {"axis": ctx.pop("axis", 1), "block_size": ctx.pop("block_size", 0)}


@converter("QuantizeLinear", min_opset=10)
def quantize_linear(ctx: Ctx):
    x, scale, zp = ctx.input(0), ctx.input(1), ctx.input(2)
    attrs = {**_q_common(ctx), "dtype": _output_dtype(ctx, zp)}
    return ctx.add("QuantizeLinear", [x, scale] + ([zp] if zp is not None else []), attrs)


@converter("DequantizeLinear", min_opset=10)
def dequantize_linear(ctx: Ctx):
    x, scale, zp = ctx.input(0), ctx.input(1), ctx.input(2)
    out = ctx.pop("output_dtype", 0)
    if out and ONNX_DTYPES.get(out) != scale.type.dtype:
        raise ctx.error("output_dtype must be the scale's dtype")
    attrs = _q_common(ctx)
    return ctx.add("DequantizeLinear", [x, scale] + ([zp] if zp is not None else []), attrs)


@converter("DynamicQuantizeLinear", min_opset=11)
def dynamic_quantize_linear(ctx: Ctx):
    x = ctx.inputs[0]
    zero, qmax = ctx.const(np.float32(0), "zero"), ctx.const(np.float32(255), "qmax")
    lo = ctx.add_one("Min", [ctx.add_one("ReduceMin", [x], {"keepdims": 0}), zero], hint="x_min")
    hi = ctx.add_one("Max", [ctx.add_one("ReduceMax", [x], {"keepdims": 0}), zero], hint="x_max")
    scale = ctx.add_one("Div", [ctx.add_one("Sub", [hi, lo]), qmax], hint="y_scale")
    zp = ctx.add_one("Round", [ctx.add_one("Div", [ctx.add_one("Neg", [lo]), scale])])
    zp = ctx.add_one("Cast", [ctx.add_one("Clip", [zp, zero, qmax])], {"to": "u8"}, hint="y_zero_point")
    y = ctx.add_one("QuantizeLinear", [x, scale, zp], {"axis": 1, "block_size": 0, "dtype": "u8"}, hint="y")
    return [y, scale, zp]


def requantize(ctx: Ctx, acc: Value, multiplier: Value, y_zero_point: Value | None, dtype: str) -> Value:
    """QuantizeLinear(f32(acc) * multiplier, scale 1, y_zero_point): the tail of QLinear*."""
    scaled = ctx.add_one("Mul", [ctx.add_one("Cast", [acc], {"to": "f32"}), multiplier], hint="requant")
    one = np.ones(y_zero_point.type.shape if y_zero_point is not None else (), np.float32)
    inputs = [scaled, ctx.const(one, "one")] + ([y_zero_point] if y_zero_point is not None else [])
    return ctx.add("QuantizeLinear", inputs, {"axis": 1, "block_size": 0, "dtype": dtype})[0]


def _multiplier(ctx: Ctx, a_scale: Value, b_scale: Value, y_scale: Value, shape: tuple[int, ...] | None) -> Value:
    """a_scale * b_scale / y_scale in f32, reshaped to `shape` when per channel."""
    m = ctx.add_one("Div", [ctx.add_one("Mul", [a_scale, b_scale]), y_scale], hint="multiplier")
    if m.type.dtype != "f32":
        m = ctx.add_one("Cast", [m], {"to": "f32"}, hint="multiplier")
    if shape is not None and m.type.numel > 1:
        m = ctx.add_one("Reshape", [m, ctx.const(np.array(shape, np.int64), "shape")], hint="multiplier")
    return m


@converter("QLinearMatMul", min_opset=10)
def qlinear_matmul(ctx: Ctx):
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = (ctx.input(i) for i in range(8))
    for v, what in ((a_scale, "a_scale"), (y_scale, "y_scale")):
        if v.type.numel != 1:
            raise ctx.error(f"{what} has shape {list(v.type.shape)}: QLinearMatMul takes one scale per tensor "
                            "for a and y (b's may be per column)")
    acc = ctx.add_one("MatMulInteger", _trimmed([a, b, a_zp, b_zp]), hint="acc")
    return [requantize(ctx, acc, _multiplier(ctx, a_scale, b_scale, y_scale, None), y_zp,
                       y_zp.type.dtype if y_zp is not None else "u8")]


@converter("MatMulInteger", min_opset=10)
def matmul_integer(ctx: Ctx):
    return ctx.add("MatMulInteger", ctx.inputs)


def _conv_integer(ctx: Ctx, x: Value, w: Value, x_zp: Value | None, w_zp: Value | None, hint: str | None) -> Value:
    kernel = w.type.shape[2:]
    _check_kernel_shape(ctx, kernel)
    attrs = {**_window_attrs(ctx, x.type.shape[2:], kernel), "group": ctx.pop("group", 1)}
    inputs = _trimmed([x, w, x_zp, w_zp])
    if hint is None:
        return ctx.add("ConvInteger", inputs, attrs)[0]
    return ctx.add_one("ConvInteger", inputs, attrs, hint=hint)


@converter("ConvInteger", min_opset=10)
def conv_integer(ctx: Ctx):
    return [_conv_integer(ctx, *(ctx.input(i) for i in range(4)), hint=None)]


@converter("QLinearConv", min_opset=10)
def qlinear_conv(ctx: Ctx):
    x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias = (ctx.input(i) for i in range(9))
    acc = _conv_integer(ctx, x, w, x_zp, w_zp, hint="acc")
    channel = (1, -1) + (1,) * (w.type.rank - 2)
    if bias is not None:
        acc = ctx.add_one("Add", [acc, ctx.add_one("Reshape", [bias, ctx.const(np.array(channel, np.int64))])],
                          hint="acc")
    return [requantize(ctx, acc, _multiplier(ctx, x_scale, w_scale, y_scale, channel), y_zp,
                       y_zp.type.dtype if y_zp is not None else "u8")]
