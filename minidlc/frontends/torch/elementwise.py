"""Converters for elementwise ATen ops: arithmetic, activations, comparisons, casts.

Binary ops compute in the dtype PyTorch's type promotion chose (read from the
FX node's result), so `int_tensor / 2` casts to float first and the scalar
`2` becomes a scalar Constant of that dtype.
"""
from __future__ import annotations

from .converters import Ctx, converter

_UNARY = {
    "relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
    "neg": "Neg", "abs": "Abs", "erf": "Erf", "sin": "Sin", "cos": "Cos", "floor": "Floor", "ceil": "Ceil",
    "reciprocal": "Reciprocal", "hardswish": "HardSwish", "logical_not": "Not", "sign": "Sign",
}
_ARITHMETIC = {
    "add.Tensor": "Add", "add.Scalar": "Add", "sub.Tensor": "Sub", "sub.Scalar": "Sub", "mul.Tensor": "Mul",
    "mul.Scalar": "Mul", "div.Tensor": "Div", "div.Scalar": "Div", "div.Tensor_mode": "Div",
    "maximum.default": "Max", "minimum.default": "Min", "remainder.Tensor": "Mod", "remainder.Scalar": "Mod",
}
_COMPARISON = {"eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual"}


def _unary(op: str):
    def convert(ctx: Ctx, x):
        return ctx.add(op, [ctx.operand(x, ctx.out_dtype)])  # exp(int) is float, logical_not(x) bool

    return convert


for _name, _op in _UNARY.items():
    converter(f"aten.{_name}.default")(_unary(_op))


def _arithmetic(op: str):
    def convert(ctx: Ctx, a, b, *, alpha=1, rounding_mode=None):
        if rounding_mode is not None:
            raise ctx.error(f"rounding_mode={rounding_mode!r} is not supported")
        dt = ctx.out_dtype
        a, b = ctx.operand(a, dt), ctx.operand(b, dt)
        if alpha != 1:  # add/sub: a + alpha * b
            b = ctx.add("Mul", [b, ctx.const(alpha, dt, "alpha")], hint="scaled")
        return ctx.add(op, [a, b])

    return convert


for _name, _op in _ARITHMETIC.items():
    converter(f"aten.{_name}")(_arithmetic(_op))


def _compare(op: str):
    def convert(ctx: Ctx, a, b):
        dt = ctx.promoted_dtype()
        return ctx.add(op, [ctx.operand(a, dt), ctx.operand(b, dt)])

    return convert


for _name, _op in _COMPARISON.items():
    converter(f"aten.{_name}.Tensor", f"aten.{_name}.Scalar")(_compare(_op))


@converter("aten.ne.Tensor", "aten.ne.Scalar")
def ne(ctx: Ctx, a, b):
    dt = ctx.promoted_dtype()
    return ctx.add("Not", [ctx.add("Equal", [ctx.operand(a, dt), ctx.operand(b, dt)], hint="eq")])


def _logical(op: str):
    def convert(ctx: Ctx, a, b):
        return ctx.add(op, [ctx.operand(a, "bool"), ctx.operand(b, "bool")])

    return convert


for _name, _op in {"and": "And", "or": "Or", "xor": "Xor"}.items():
    converter(f"aten.logical_{_name}.default")(_logical(_op))


@converter("aten.where.self")
def where(ctx: Ctx, cond, a, b):
    dt = ctx.out_dtype
    return ctx.add("Where", [cond, ctx.operand(a, dt), ctx.operand(b, dt)])


@converter("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor")
def pow_(ctx: Ctx, x, exponent):
    dt = ctx.out_dtype
    return ctx.add("Pow", [ctx.operand(x, dt), ctx.operand(exponent, dt)])


@converter("aten.rsqrt.default")
def rsqrt(ctx: Ctx, x):
    return ctx.add("Reciprocal", [ctx.add("Sqrt", [x], hint="sqrt")])


@converter("aten.gelu.default")
def gelu(ctx: Ctx, x, *, approximate="none"):
    return ctx.add("Gelu", [x], {"approximate": approximate})


@converter("aten.leaky_relu.default")
def leaky_relu(ctx: Ctx, x, negative_slope=0.01):
    return ctx.add("LeakyRelu", [x], {"alpha": negative_slope})


@converter("aten.elu.default")
def elu(ctx: Ctx, x, alpha=1.0, scale=1.0, input_scale=1.0):
    if scale != 1 or input_scale != 1:
        raise ctx.error("elu with scale or input_scale other than 1 is not supported")
    return ctx.add("Elu", [x], {"alpha": alpha})


@converter("aten.clamp.default", "aten.hardtanh.default")
def clamp(ctx: Ctx, x, min=None, max=None):
    dt = ctx.out_dtype
    bounds = [None if b is None else ctx.const(b, dt, "bound") for b in (min, max)]
    while bounds and bounds[-1] is None:
        bounds.pop()
    return ctx.add("Clip", [ctx.operand(x, dt), *bounds])


@converter("aten._to_copy.default")
def to_copy(ctx: Ctx, x, *, dtype=None, layout=None, device=None, pin_memory=None, non_blocking=False,
            memory_format=None):
    return ctx.operand(x, ctx.out_dtype)


@converter("aten.clone.default", "aten.alias.default", "aten.detach.default", "aten.lift_fresh_copy.default")
def same_value(ctx: Ctx, x, *, memory_format=None):
    """Copies and aliases compute nothing: the IR value itself."""
    return x


@converter("aten._assert_tensor_metadata.default", "aten._assert_scalar.default")
def assertion(ctx: Ctx, *args, **kwargs):
    """Checks PyTorch placed in the trace; our types are static and checked already."""
    return None


@converter("aten.log1p.default")
def log1p(ctx: Ctx, x):
    """log(1 + x), as softplus decomposes (the IR has no Log1p: less accurate near 0)."""
    x = ctx.operand(x, ctx.out_dtype)
    return ctx.add("Log", [ctx.add("Add", [x, ctx.const(1, x.type.dtype, "one")], hint="plus1")])
