"""Converters for shape and data-movement ops, and their version differences.

Over the opsets, many attributes became inputs: Slice's starts/ends/axes
(opset 10), Pad's pads and constant value (11) and axes (18), Split's sizes
(13, with num_outputs from 18), Squeeze/Unsqueeze's axes (13); Trilu's
diagonal `k` has always been an input. The IR keeps
them as attributes (see `ir/ops/shape.py`): the converters read the inputs'
compile-time values with `ctx.static` and fill in ONNX's defaults, so that
the printed IR states every axis and bound explicitly.
"""
from __future__ import annotations

from math import ceil

import numpy as np

from ...ir.ops.shape import normalize_slice
from .converters import converter, register_same, same_op

register_same("Flatten", "Gather", "Size")
register_same("Concat", min_opset=4)  # Concat-1 had a default axis


def _ints(array) -> list[int]:
    return [int(v) for v in np.asarray(array).reshape(-1)]


def _static_ints(ctx, i: int, what: str) -> list[int]:
    """Input i's compile-time value as a list of ints ([] when omitted)."""
    value = ctx.static(i, what)
    return [] if value is None else _ints(value)


@converter("Reshape", "Expand", min_opset=5)  # Reshape-1 took the shape as an attribute
def with_static_shape(ctx):
    # The shape input stays in the IR (shape computations fold later), but it
    # must be computable now: check here for an error that names the node.
    ctx.static(1, "target shape")
    return same_op(ctx)


@converter("ConstantOfShape")
def constant_of_shape(ctx):
    ctx.static(0, "shape")
    return same_op(ctx)


@converter("Range")
def range_(ctx):
    for i, what in enumerate(("start", "limit", "delta")):
        ctx.static(i, what)
    return same_op(ctx)


@converter("Shape")
def shape(ctx):
    dims = range(ctx.inputs[0].type.rank)[ctx.pop("start", 0):ctx.pop("end", None)]  # clamps as ONNX does
    return ctx.add("Shape", ctx.inputs, {**ctx.attrs, "start": dims.start, "end": dims.stop})


@converter("Transpose")
def transpose(ctx):
    perm = ctx.pop("perm", None)
    rank = ctx.inputs[0].type.rank
    return ctx.add("Transpose", ctx.inputs, {**ctx.attrs, "perm": list(range(rank))[::-1] if perm is None else perm})


def _axes(ctx, input_from: int, what: str = "axes") -> list[int]:
    """`axes` from the attribute (opset < input_from) or from input 1."""
    if ctx.opset < input_from:
        return list(ctx.pop(what, []))
    return _static_ints(ctx, 1, what)


@converter("Squeeze", "Unsqueeze")
def squeeze(ctx):
    return ctx.add(ctx.op_type, ctx.inputs[:1], {**ctx.attrs, "axes": _axes(ctx, 13)})


@converter("Tile", min_opset=6)  # Tile-1 had `tiles` and `axis` inputs
def tile(ctx):
    return ctx.add("Tile", ctx.inputs[:1], {"repeats": _ints(ctx.static(1, "repeats"))})


@converter("Trilu")
def trilu(ctx):
    k = ctx.static(1, "k")
    return ctx.add("Trilu", ctx.inputs[:1], {"upper": ctx.pop("upper", 1), "k": 0 if k is None else _ints(k)[0]})


@converter("Split", min_opset=2)  # Split-1 took sizes as an input or an attribute
def split(ctx):
    x = ctx.inputs[0]
    axis = ctx.attrs.get("axis", 0)
    sizes = _axes(ctx, 13, "split")
    parts = ctx.pop("num_outputs", len(ctx.outputs))
    if not sizes:
        dim = x.type.shape[axis] if -x.type.rank <= axis < x.type.rank else 0
        if ctx.opset < 18 and dim % parts:
            raise ctx.error(f"cannot split an axis of size {dim} into {parts} equal parts")
        chunk = ceil(dim / parts)  # opset 18+: the last part may be smaller
        sizes = [chunk] * (parts - 1) + [dim - chunk * (parts - 1)]
    return ctx.add("Split", ctx.inputs[:1], {**ctx.attrs, "split": sizes})


@converter("Slice")
def slice_(ctx):
    x = ctx.inputs[0]
    if ctx.opset < 10:
        starts, ends, axes = ctx.pop("starts"), ctx.pop("ends"), ctx.pop("axes", [])
        steps = []
    else:
        starts, ends, axes, steps = (_static_ints(ctx, i, what)
                                     for i, what in enumerate(("starts", "ends", "axes", "steps"), start=1))
    if starts is None or ends is None:
        raise ctx.error("Slice needs starts and ends")
    return ctx.add("Slice", [x], {**ctx.attrs, **normalize_slice(x.type.shape, starts, ends, axes, steps)})


@converter("Pad")
def pad(ctx):
    x = ctx.inputs[0]
    rank = x.type.rank
    if ctx.opset < 11:
        pads = ctx.pop("pads", None) or ctx.pop("paddings")  # `paddings` before opset 2
        value, axes = ctx.pop("value", 0.0), []
    else:
        pads = _static_ints(ctx, 1, "pads")
        value = ctx.static(2, "constant_value")
        value = 0.0 if value is None or value.size == 0 else float(value.reshape(-1)[0])
        axes = [a % max(rank, 1) for a in _static_ints(ctx, 3, "axes")]
    if axes:  # opset 18: pads are given for `axes` only
        if len(pads) != 2 * len(axes):
            raise ctx.error(f"pads {pads} must hold 2 values per axis of {axes}")
        full = [0] * (2 * rank)
        for i, a in enumerate(axes):
            full[a], full[rank + a] = pads[i], pads[len(axes) + i]
        pads = full
    return ctx.add("Pad", [x], {**ctx.attrs, "pads": pads, "value": value})
