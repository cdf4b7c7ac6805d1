"""Converters for neural-network ATen ops: linear layers, convolution,
normalization, softmax, pooling, upsampling and embedding.

PyTorch gives pads per spatial axis ([ph, pw]); ONNX ops take begin and end
pads ([ph, pw, ph, pw]). Integer-list arguments may come as one value meant
for every spatial axis (`kernel_size=2`), which `_per_axis` expands.
"""
from __future__ import annotations

import numpy as np

from .converters import Ctx, converter
from .shape import transpose


def _per_axis(values, n: int) -> list[int]:
    values = [values] if isinstance(values, int) else list(values)
    return values * n if len(values) == 1 else values


# ---- linear algebra --------------------------------------------------------------
@converter("aten.linear.default")
def linear(ctx: Ctx, x, weight, bias=None):
    """y = x @ W.T + b: a Gemm for a matrix x, else a MatMul (and an Add)."""
    if x.type.rank == 2 and weight.type.rank == 2:
        return ctx.add("Gemm", [x, weight] + ([bias] if bias is not None else []), {"transB": 1})
    y = ctx.add("MatMul", [x, transpose(ctx, weight, [1, 0])], hint="matmul" if bias is not None else None)
    return y if bias is None else ctx.add("Add", [y, bias])


@converter("aten.matmul.default", "aten.mm.default", "aten.bmm.default")
def matmul(ctx: Ctx, a, b):
    return ctx.add("MatMul", [a, b])


@converter("aten.addmm.default")
def addmm(ctx: Ctx, c, a, b, *, beta=1, alpha=1):
    return ctx.add("Gemm", [a, b, c], {"alpha": alpha, "beta": beta})


# ---- convolution and normalization --------------------------------------------------
@converter("aten.convolution.default")
def convolution(ctx: Ctx, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    """Conv, or ConvTranspose (whose weight PyTorch and ONNX both lay out as
    [C_in, C_out / groups, *kernel])."""
    n = weight.type.rank - 2
    pads = _per_axis(padding, n)
    attrs = {"strides": _per_axis(stride, n), "pads": pads + pads, "dilations": _per_axis(dilation, n),
             "group": groups}
    if transposed:
        attrs["output_padding"] = _per_axis(output_padding, n)
    return ctx.add("ConvTranspose" if transposed else "Conv", [x, weight] + ([bias] if bias is not None else []), attrs)


def _or_const(ctx: Ctx, v, fill: float, shape, dtype: str):
    """An optional affine parameter, or the constant that means "none"."""
    return v if v is not None else ctx.const(np.full(shape, fill), dtype, "ones" if fill else "zeros")


@converter("aten._native_batch_norm_legit_no_training.default")
def batch_norm(ctx: Ctx, x, weight, bias, running_mean, running_var, momentum, eps):
    """Inference batch norm; the saved mean/invstd outputs are training-only."""
    c, dt = (x.type.shape[1],), x.type.dtype
    scale, shift = _or_const(ctx, weight, 1.0, c, dt), _or_const(ctx, bias, 0.0, c, dt)
    return [ctx.add("BatchNormalization", [x, scale, shift, running_mean, running_var], {"epsilon": eps}),
            None, None]


def _layer_norm(ctx: Ctx, x, normalized_shape, weight, bias, eps):
    shape, dt = tuple(normalized_shape), x.type.dtype
    scale, shift = _or_const(ctx, weight, 1.0, shape, dt), _or_const(ctx, bias, 0.0, shape, dt)
    return ctx.add("LayerNormalization", [x, scale, shift], {"axis": -len(shape), "epsilon": eps})


@converter("aten.layer_norm.default")
def layer_norm(ctx: Ctx, x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return _layer_norm(ctx, x, normalized_shape, weight, bias, eps)


@converter("aten.native_layer_norm.default")
def native_layer_norm(ctx: Ctx, x, normalized_shape, weight, bias, eps):
    return [_layer_norm(ctx, x, normalized_shape, weight, bias, eps), None, None]


@converter("aten._softmax.default")
def softmax(ctx: Ctx, x, dim, half_to_float=False):
    return ctx.add("Softmax", [x], {"axis": dim})


@converter("aten._log_softmax.default")
def log_softmax(ctx: Ctx, x, dim, half_to_float=False):
    return ctx.add("LogSoftmax", [x], {"axis": dim})


# ---- pooling ------------------------------------------------------------------------
def _window(x, kernel_size, stride, padding, ceil_mode) -> dict:
    """The window attributes both pools share; stride defaults to the kernel."""
    n = x.type.rank - 2
    pads = _per_axis(padding, n)
    return {"kernel_shape": _per_axis(kernel_size, n), "strides": _per_axis(stride or kernel_size, n),
            "pads": pads + pads, "ceil_mode": int(ceil_mode)}


def _max_pool(ctx: Ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
    attrs = _window(x, kernel_size, stride, padding, ceil_mode)
    attrs["dilations"] = _per_axis(dilation, x.type.rank - 2)
    return ctx.add("MaxPool", [x], attrs)


@converter("aten.max_pool2d.default")
def max_pool2d(ctx: Ctx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return _max_pool(ctx, x, kernel_size, stride, padding, dilation, ceil_mode)


@converter("aten.max_pool2d_with_indices.default")
def max_pool2d_with_indices(ctx: Ctx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """The indices output is for max_unpool (training); only the values are supported."""
    return [_max_pool(ctx, x, kernel_size, stride, padding, dilation, ceil_mode), None]


@converter("aten.avg_pool2d.default")
def avg_pool2d(ctx: Ctx, x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    if divisor_override is not None:
        raise ctx.error("divisor_override is not supported")
    attrs = _window(x, kernel_size, stride, padding, ceil_mode)
    attrs["count_include_pad"] = int(count_include_pad)
    return ctx.add("AveragePool", [x], attrs)


@converter("aten.adaptive_avg_pool2d.default")
def adaptive_avg_pool2d(ctx: Ctx, x, output_size):
    if tuple(_per_axis(output_size, 2)) != (1, 1):
        raise ctx.error(f"adaptive_avg_pool2d to {list(output_size)} is not supported, only to 1x1 "
                        "(global average pooling)")
    return ctx.add("GlobalAveragePool", [x])


def _resize(ctx: Ctx, x, scale_factors, attrs: dict):
    """Given scale factors, PyTorch maps coordinates with them (as Resize
    with `scales` does); given an output size, or with align_corners, with
    the input and output sizes (Resize with `sizes`)."""
    if scale_factors and attrs["coordinate_transformation_mode"] != "align_corners":
        attrs["scales"] = [1.0, 1.0] + list(scale_factors)
    else:
        attrs["sizes"] = list(ctx.out_shape)
    return ctx.add("Resize", [x], attrs)


@converter("aten.upsample_nearest2d.vec")
def upsample_nearest2d(ctx: Ctx, x, output_size, scale_factors):
    return _resize(ctx, x, scale_factors, {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                           "nearest_mode": "floor"})


@converter("aten.upsample_bilinear2d.vec")
def upsample_bilinear2d(ctx: Ctx, x, output_size, align_corners, scale_factors):
    # PyTorch's half-pixel mapping is ONNX's half_pixel (its pytorch_half_pixel
    # describes an older PyTorch that sampled index 0 for a length-1 output).
    mode = "align_corners" if align_corners else "half_pixel"
    return _resize(ctx, x, scale_factors, {"mode": "linear", "coordinate_transformation_mode": mode})


@converter("aten.embedding.default")
def embedding(ctx: Ctx, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return ctx.add("Gather", [weight, indices], {"axis": 0})
