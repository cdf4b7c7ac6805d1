"""Converters for elementwise ops, and the version differences among them."""
from __future__ import annotations

import numpy as np

from .converters import converter, dtype_of, register_same, same_op

register_same("Mod", "Neg", "Abs", "Sqrt", "Exp", "Log", "Erf", "Reciprocal", "Floor", "Ceil", "Round", "Sign",
              "Sin", "Cos", "Tanh", "Sigmoid", "Relu", "LeakyRelu", "Elu", "Selu", "HardSigmoid", "Softplus",
              "Softsign", "Where", "LessOrEqual", "GreaterOrEqual", "Not", "Identity")
# Versions before these had legacy `broadcast`/`axis` attributes (or no broadcasting).
register_same("Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Equal", "Less", "Greater", "And", "Or", "Xor",
              min_opset=7)
register_same("Sum", "Max", "Min", "Mean", min_opset=8)
register_same("HardSwish", min_opset=14)
register_same("Gelu", min_opset=20)


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
