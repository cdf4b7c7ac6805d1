"""Converters for reductions, and the version differences among them.

ReduceSum took `axes` as an attribute before opset 13, the other Reduce* ops
before opset 18; from then on `axes` is an optional input, which must be known
at compile time, and `noop_with_empty_axes` says what empty axes mean.
In the IR, `axes` is always an attribute and empty axes mean "all"; a no-op
reduction becomes an Identity. CumSum's axis, an input, becomes an attribute.
"""
from __future__ import annotations

from .converters import converter, register_same

# The opset from which each op takes `axes` as an input rather than an attribute.
AXES_INPUT_FROM = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18, "ReduceProd": 18,
                   "ReduceL2": 18, "ReduceSumSquare": 18}


@converter(*AXES_INPUT_FROM)
def reduce(ctx):
    x = ctx.inputs[0]
    if ctx.opset >= AXES_INPUT_FROM[ctx.op_type]:
        axes = ctx.static(1, "axes")
        axes = [] if axes is None else [int(a) for a in axes.reshape(-1)]
    else:
        axes = list(ctx.pop("axes", []))
    noop = ctx.pop("noop_with_empty_axes", 0)
    if not axes and noop:
        return ctx.add("Identity", [x])
    return ctx.add(ctx.op_type, [x], {**ctx.attrs, "axes": axes})


register_same("ArgMax", "ArgMin")


@converter("CumSum")
def cumsum(ctx):
    axis = ctx.static(1, "axis")
    if axis is None or axis.size != 1:
        raise ctx.error("the axis input must be one integer")
    return ctx.add("CumSum", ctx.inputs[:1], {**ctx.attrs, "axis": int(axis.reshape(()))})
