"""Converters for elementwise ops, and the version differences among them."""
from __future__ import annotations

import numpy as np

from .converters import converter, dtype_of, register_same, same_op

register_same("Mod", "Neg", "Abs", "Sqrt", "Exp", "Log", "Erf", "Reciprocal", "Floor", "Ceil", "Round", "Sign",
              "Shrink", "Sin", "Cos", "Tanh", "Sigmoid", "Relu", "LeakyRelu", "Elu", "Selu", "HardSigmoid", "Softplus",
              "Softsign", "Where", "LessOrEqual", "GreaterOrEqual", "Not", "Identity")
register_same("HardSwish", min_opset=14)
register_same("Gelu", min_opset=20)

# Before opset 7 these broadcast only with `broadcast=1`, and only B to A.
LEGACY_BROADCAST = ("Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "And", "Or", "Xor")
NUMPY_BROADCAST_FROM = 7
# Before opset 8 the variadic ops took inputs of one shape.
VARIADIC_BROADCAST_FROM = 8


@converter(*LEGACY_BROADCAST)
def binary(ctx):
    """Opset 7+: NumPy broadcasting. Before: with broadcast=1, B broadcasts
    to A, its axes lined up with A's from `axis` on (default: the trailing
    axes, as NumPy); with broadcast=0 the shapes must be equal. B gets the
    trailing unit axes that make NumPy line it up the same way."""
    if ctx.opset >= NUMPY_BROADCAST_FROM:
        return same_op(ctx)
    a, b = ctx.inputs
    axis = ctx.pop("axis")
    if not ctx.pop("broadcast", 0):
        _check_same_shapes(ctx, "broadcast=0")
        return ctx.add(ctx.op_type, [a, b])
    trailing = 0 if axis is None else a.type.rank - axis % max(a.type.rank, 1) - b.type.rank
    if trailing < 0:
        raise ctx.error(f"B of shape {list(b.type.shape)} does not fit into A of shape {list(a.type.shape)} "
                        f"from axis {axis}")
    if trailing:
        shape = ctx.const(np.array(b.type.shape + (1,) * trailing, np.int64), "shape")
        b = ctx.add_one("Reshape", [b, shape], hint=f"{b.name}_at_axis{axis}")
    if _broadcast_shape(a.type.shape, b.type.shape) != a.type.shape:
        raise ctx.error(f"B of shape {list(b.type.shape)} does not broadcast to A's shape {list(a.type.shape)}")
    return ctx.add(ctx.op_type, [a, b])


@converter("Sum", "Max", "Min", "Mean")
def variadic(ctx):
    if ctx.opset < VARIADIC_BROADCAST_FROM:
        _check_same_shapes(ctx, f"opset {ctx.opset} (broadcasting came in opset {VARIADIC_BROADCAST_FROM})")
    return same_op(ctx)


def _broadcast_shape(*shapes) -> tuple[int, ...] | None:
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        return None


def _check_same_shapes(ctx, why: str) -> None:
    shapes = [list(v.type.shape) for v in ctx.inputs]
    if any(s != shapes[0] for s in shapes):
        raise ctx.error(f"inputs of shapes {shapes} must have one shape under {why}")


@converter("PRelu")
def prelu(ctx):
    """Before opset 7, a 1-D slope of one entry per channel applies along axis 1
    (as PyTorch exports it); from opset 7 the slope broadcasts NumPy-style."""
    x, slope = ctx.inputs
    channels = x.type.shape[1] if x.type.rank > 2 else None
    if ctx.opset < NUMPY_BROADCAST_FROM and slope.type.shape == (channels,) and channels != 1:
        shape = ctx.const(np.array((channels,) + (1,) * (x.type.rank - 2), np.int64), "shape")
        slope = ctx.add_one("Reshape", [slope, shape], hint=f"{slope.name}_per_channel")
    return ctx.add("PRelu", [x, slope])


@converter("Cast")
def cast(ctx):
    to = dtype_of(ctx.attrs["to"], f"Cast node '{ctx.node.name}' attribute to")
    ctx.pop("saturate")
    ctx.pop("round_mode")
    return ctx.add("Cast", ctx.inputs, {"to": to})


@converter("Clip")
def clip(ctx):
    if ctx.opset < 11:  # bounds were attributes
        x = ctx.inputs[0]
        dt = x.type.np_dtype
        lo = ctx.const(np.array(ctx.pop("min", -np.inf), dt), "min")
        hi = ctx.const(np.array(ctx.pop("max", np.inf), dt), "max")
        return ctx.add("Clip", [x, lo, hi])
    return same_op(ctx)


@converter("Dropout")
def dropout(ctx):
    # Inference only. Opset < 12: `ratio` and `is_test` attributes; 12+: inputs.
    ctx.pop("seed")
    ctx.pop("ratio")
    if ctx.pop("is_test", 1) == 0 and ctx.opset < 7:
        raise ctx.error("Dropout in training mode (is_test=0) is not supported")
    inputs = ctx.inputs if ctx.opset >= 12 else ctx.inputs[:1]
    return ctx.add("Dropout", inputs, num_outputs=len(ctx.outputs))


@converter("Constant")
def constant(ctx):
    (key, value), = ctx.attrs.items()
    arrays = {"value": lambda v: v, "value_float": lambda v: np.array(v, np.float32),
              "value_floats": lambda v: np.array(v, np.float32), "value_int": lambda v: np.array(v, np.int64),
              "value_ints": lambda v: np.array(v, np.int64)}
    if key not in arrays:
        raise ctx.error(f"attribute {key} is not supported (sparse and string constants)")
    return [ctx.graph.constant(arrays[key](value), ctx.outputs[0], loc=ctx.loc)]
