"""Converters for the neural-network ops, and their version differences.

What the converters normalize, so the IR ops have one meaning:
* auto_pad (SAME_UPPER, SAME_LOWER, VALID) and ConvTranspose's output_shape
  become explicit `pads`; kernel_shape is checked against the weight.
* Softmax/LogSoftmax before opset 13 flattened the input to 2-D at `axis`;
  that is a Reshape around a one-axis softmax.
* Resize's scales/sizes/roi inputs, `axes` and keep_aspect_ratio_policy
  become full-rank attributes; Resize-10 and Upsample (opsets 7-9) are
  Resize with asymmetric coordinates.
* BatchNormalization converts in its inference form only; before opset 7
  `is_test` said which form, and the single output Y means inference.
* Gemm before opset 7 broadcast C only with `broadcast=1`.
"""
from __future__ import annotations

from math import prod

import numpy as np

from .converters import Ctx, converter, register_same, same_op

register_same("MatMul", "GlobalAveragePool", "GlobalMaxPool", "InstanceNormalization", "LRN")
register_same("Einsum", min_opset=12)
register_same("LayerNormalization", min_opset=17)


# ---- windows: Conv, ConvTranspose, pools -----------------------------------------
def _spatial_attr(ctx: Ctx, name: str, n: int, default: int) -> list[int]:
    v = list(ctx.pop(name, None) or [default] * n)
    if len(v) != n:
        raise ctx.error(f"{name} has {len(v)} entries, expected {n}")
    return v


def _window_attrs(ctx: Ctx, spatial, kernel) -> dict:
    """strides, dilations and explicit pads, with auto_pad resolved: SAME_*
    pads so that out = ceil(in / stride), the odd cell at the end (UPPER) or
    the beginning (LOWER)."""
    n = len(kernel)
    strides = _spatial_attr(ctx, "strides", n, 1)
    dilations = _spatial_attr(ctx, "dilations", n, 1)
    auto_pad = ctx.pop("auto_pad", "NOTSET")
    pads = list(ctx.pop("pads", None) or [0] * 2 * n)
    if len(pads) != 2 * n:
        raise ctx.error(f"pads has {len(pads)} entries, expected {2 * n}")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        totals = [max(0, (-(-i // s) - 1) * s + (k - 1) * d + 1 - i)
                  for i, k, s, d in zip(spatial, kernel, strides, dilations)]
        pads = _split(totals, upper=auto_pad == "SAME_UPPER")
    elif auto_pad == "VALID":
        pads = [0] * 2 * n
    elif auto_pad != "NOTSET":
        raise ctx.error(f"auto_pad={auto_pad!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    return {"strides": strides, "dilations": dilations, "pads": pads}


def _split(totals: list[int], upper: bool) -> list[int]:
    """Begin and end pads from total pads; the odd one goes to the end if upper."""
    small = [t // 2 for t in totals]
    large = [t - t // 2 for t in totals]
    return small + large if upper else large + small


def _check_kernel_shape(ctx: Ctx, kernel) -> None:
    given = ctx.pop("kernel_shape")
    if given is not None and tuple(given) != tuple(kernel):
        raise ctx.error(f"kernel_shape {list(given)} does not match the weight's spatial shape {list(kernel)}")


@converter("Conv")
def conv(ctx: Ctx):
    x, w = ctx.inputs[:2]
    kernel = w.type.shape[2:]
    _check_kernel_shape(ctx, kernel)
    attrs = _window_attrs(ctx, x.type.shape[2:], kernel)
    return ctx.add("Conv", ctx.inputs, {**attrs, "group": ctx.pop("group", 1)})


@converter("ConvTranspose")
def conv_transpose(ctx: Ctx):
    """output_shape (or auto_pad SAME: output = input * stride) fixes the
    total padding; a negative total means the output is longer than the
    transposed convolution reaches, which is extra output_padding."""
    x, w = ctx.inputs[:2]
    kernel, spatial = w.type.shape[2:], x.type.shape[2:]
    n = len(kernel)
    _check_kernel_shape(ctx, kernel)
    strides = _spatial_attr(ctx, "strides", n, 1)
    dilations = _spatial_attr(ctx, "dilations", n, 1)
    out_pad = _spatial_attr(ctx, "output_padding", n, 0)
    auto_pad = ctx.pop("auto_pad", "NOTSET")
    out_shape = ctx.pop("output_shape")
    pads = list(ctx.pop("pads", None) or [0] * 2 * n)
    if out_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = [i * s for i, s in zip(spatial, strides)]
    if out_shape is not None:
        out_shape = list(out_shape)[-n:]
        totals = [s * (i - 1) + op + (k - 1) * d + 1 - o
                  for i, k, s, d, op, o in zip(spatial, kernel, strides, dilations, out_pad, out_shape)]
        out_pad = [op - min(t, 0) for op, t in zip(out_pad, totals)]
        pads = _split([max(t, 0) for t in totals], upper=auto_pad == "SAME_UPPER")
    elif auto_pad == "VALID":
        pads = [0] * 2 * n
    return ctx.add("ConvTranspose", ctx.inputs, {"strides": strides, "dilations": dilations, "pads": pads,
                                                 "output_padding": out_pad, "group": ctx.pop("group", 1)})


def _pool_attrs(ctx: Ctx) -> dict:
    x = ctx.inputs[0]
    kernel = ctx.pop("kernel_shape")
    if kernel is None:
        raise ctx.error("attribute kernel_shape is required")
    attrs = _window_attrs(ctx, x.type.shape[2:], kernel)
    return {**attrs, "kernel_shape": list(kernel), "ceil_mode": ctx.pop("ceil_mode", 0)}


@converter("MaxPool")
def max_pool(ctx: Ctx):
    attrs = _pool_attrs(ctx)
    return ctx.add("MaxPool", ctx.inputs, {**attrs, "storage_order": ctx.pop("storage_order", 0)})


@converter("AveragePool")
def average_pool(ctx: Ctx):
    attrs = _pool_attrs(ctx)
    return ctx.add("AveragePool", ctx.inputs, {**attrs, "count_include_pad": ctx.pop("count_include_pad", 0)})


@converter("Gemm")
def gemm(ctx: Ctx):
    if ctx.opset < 7 and not ctx.pop("broadcast", 0):
        a, b, c = ctx.inputs
        rows = a.type.shape[1 if ctx.attrs.get("transA") else 0]
        cols = b.type.shape[0 if ctx.attrs.get("transB") else 1]
        if c.type.shape != (rows, cols):
            raise ctx.error(f"C of shape {list(c.type.shape)} must be the result's shape {[rows, cols]} "
                            "under broadcast=0")
    return same_op(ctx)


# ---- normalization -----------------------------------------------------------------
@converter("BatchNormalization")
def batch_norm(ctx: Ctx):
    """Inference form only: training_mode=1, spatial=0 (per-activation
    statistics, opsets 1-8) and the running/saved statistics outputs are errors."""
    ctx.pop("is_test")  # opsets 1-6: the outputs asked for say the same
    if ctx.pop("training_mode", 0):
        raise ctx.error("training_mode=1 is not supported; minidlc compiles models for inference")
    if not ctx.pop("spatial", 1):
        raise ctx.error("spatial=0 (per-activation statistics) is not supported")
    extra = [o for o in ctx.outputs[1:] if o]
    if extra:
        raise ctx.error(f"outputs {extra} (running or saved statistics) exist only in training; "
                        "minidlc supports the inference form with the single output Y")
    ctx.pop("momentum")
    return ctx.add("BatchNormalization", ctx.inputs, {"epsilon": ctx.pop("epsilon", 1e-5)}, num_outputs=1)


# ---- softmax ----------------------------------------------------------------------
@converter("Softmax", "LogSoftmax")
def softmax(ctx: Ctx):
    """Opset 13+: one axis (default -1). Before: flatten to 2-D at `axis`
    (default 1), normalize each row, restore the shape."""
    x = ctx.inputs[0]
    if ctx.opset >= 13:
        return same_op(ctx)
    shape = x.type.shape
    axis = ctx.pop("axis", 1)
    if not -len(shape) <= axis < max(len(shape), 1):
        raise ctx.error(f"axis {axis} is out of range for rank {len(shape)}")
    axis %= max(len(shape), 1)
    if all(d == 1 for d in shape[axis + 1:]):  # already one axis: no reshape needed
        return ctx.add(ctx.op_type, [x], {"axis": axis})
    rows = ctx.add_one("Reshape", [x, ctx.const(np.array([prod(shape[:axis]), -1], np.int64), "shape")],
                       hint="rows")
    y = ctx.add_one(ctx.op_type, [rows], {"axis": 1}, hint=ctx.op_type.lower())
    return ctx.add("Reshape", [y, ctx.const(np.array(shape, np.int64), "shape")])


# ---- resize -----------------------------------------------------------------------
def _present(a) -> np.ndarray | None:
    """An optional input: None when omitted or given as an empty tensor."""
    return None if a is None or a.size == 0 else a


@converter("Resize", min_opset=10)
def resize(ctx: Ctx):
    x = ctx.inputs[0]
    r = x.type.rank
    if ctx.opset < 11:
        return _legacy_resize(ctx, ctx.static(1, "scales"))
    roi, scales, sizes = (_present(ctx.static(i, what)) for i, what in ((1, "roi"), (2, "scales"), (3, "sizes")))
    if (scales is None) == (sizes is None):
        raise ctx.error("exactly one of scales and sizes must be given")
    axes = [a % r for a in (ctx.pop("axes") or range(r))]
    policy = ctx.pop("keep_aspect_ratio_policy", "stretch")
    given = [float(v) for v in (scales if scales is not None else sizes)]
    if len(given) != len(axes):
        raise ctx.error(f"{'scales' if scales is not None else 'sizes'} has {len(given)} entries for {len(axes)} axes")
    attrs = dict(ctx.attrs)  # the interpolation attributes map 1:1
    if scales is not None:
        attrs["scales"] = _fill(axes, given, [1.0] * r)
    else:
        attrs["sizes"] = _fill(axes, [int(v) for v in given], list(x.type.shape))
        if policy != "stretch":
            attrs["scales"], attrs["sizes"] = _keep_aspect(ctx, policy, axes, given, x.type.shape)
    if attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        if roi is None:
            raise ctx.error("tf_crop_and_resize needs the roi input")
        roi = [float(v) for v in roi]
        attrs["roi"] = _fill(axes, roi[:len(axes)], [0.0] * r) + _fill(axes, roi[len(axes):], [1.0] * r)
    return ctx.add("Resize", [x], attrs)


def _fill(axes, values, full):
    full = list(full)
    for a, v in zip(axes, values):
        full[a] = v
    return full


def _keep_aspect(ctx: Ctx, policy: str, axes, sizes, shape):
    """One scale for all `axes` (the smallest or largest asked for); sizes
    rounded half up from it."""
    pick = {"not_larger": min, "not_smaller": max}.get(policy)
    if pick is None:
        raise ctx.error(f"keep_aspect_ratio_policy={policy!r} is not one of stretch, not_larger, not_smaller")
    scale = pick(s / shape[a] for a, s in zip(axes, sizes))
    scales = [scale if a in axes else 1.0 for a in range(len(shape))]
    return scales, [int(scale * d + 0.5) if a in axes else d for a, d in enumerate(shape)]


def _legacy_resize(ctx: Ctx, scales):
    """Resize-10 and Upsample: asymmetric coordinates; nearest rounds down
    when upsampling and up when downsampling (onnxruntime's rule)."""
    mode = ctx.attrs.get("mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode  # Upsample-1's name for it
    scales = [float(s) for s in scales]
    if min(scales) < 1 < max(scales):
        raise ctx.error(f"scales {scales} mix upsampling and downsampling, whose nearest rounding differs")
    return ctx.add("Resize", [ctx.inputs[0]], {"mode": mode, "scales": scales,
                                               "coordinate_transformation_mode": "asymmetric",
                                               "nearest_mode": "ceil" if min(scales) < 1 else "floor"})


@converter("Upsample", min_opset=7)
def upsample(ctx: Ctx):
    scales = ctx.pop("scales") if ctx.opset < 9 else ctx.static(1, "scales")
    if scales is None:
        raise ctx.error("scales is required")
    return _legacy_resize(ctx, np.asarray(scales))
