"""Converters for ATen reductions: sum, mean, amax, amin, any, all, var over
dims; argmax/argmin; max/min along a dim (values and indices).

An empty or omitted dim list means every axis, in ATen as in the IR's
Reduce* ops (whose `axes` attribute is empty then).
"""
from __future__ import annotations

from math import prod

from .converters import Ctx, converter

_REDUCERS = {"sum": "ReduceSum", "mean": "ReduceMean", "amax": "ReduceMax", "amin": "ReduceMin",
             "any": "ReduceMax", "all": "ReduceMin"}  # over bools, any is max and all is min


def _axes(x, dim) -> list[int]:
    """ATen's `dim` argument (an int, a list, or None/[] for all) as IR axes."""
    dims = [dim] if isinstance(dim, int) else list(dim or [])
    return [d % max(x.type.rank, 1) for d in dims]


def _reduce(op: str):
    def convert(ctx: Ctx, x, dim=None, keepdim=False, *, dtype=None):
        x = ctx.operand(x, ctx.out_dtype)  # sum(dtype=...), sum of bools, any of floats
        return ctx.add(op, [x], {"axes": _axes(x, dim), "keepdims": int(keepdim)})

    return convert


for _name, _op in _REDUCERS.items():
    converter(f"aten.{_name}.default", f"aten.{_name}.dim", f"aten.{_name}.dims",
              f"aten.{_name}.dim_IntList")(_reduce(_op))


@converter("aten.var.correction", "aten.var.dim")
def var(ctx: Ctx, x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """sum((x - mean)^2) / (n - correction), as torch.var defines it."""
    if correction is None:
        correction = 1 if unbiased is None else int(unbiased)
    axes = _axes(x, dim) or list(range(x.type.rank))
    mean = ctx.add("ReduceMean", [x], {"axes": axes, "keepdims": 1}, hint="mean")
    diff = ctx.add("Sub", [x, mean], hint="diff")
    square = ctx.add("Mul", [diff, diff], hint="square")
    total = ctx.add("ReduceSum", [square], {"axes": axes, "keepdims": int(keepdim)}, hint="sum")
    count = max(prod(x.type.shape[a] for a in axes) - correction, 0)
    return ctx.add("Div", [total, ctx.const(count, x.type.dtype, "count")])


def _arg(op: str):
    def convert(ctx: Ctx, x, dim=None, keepdim=False):
        if dim is None:  # over the flattened tensor
            if keepdim:
                raise ctx.error("keepdim=True without dim is not supported")
            x, dim = ctx.add("Reshape", [x, ctx.const([-1], "i64", "shape")], hint="flat"), 0
        return ctx.add(op, [x], {"axis": dim, "keepdims": int(keepdim)})

    return convert


converter("aten.argmax.default")(_arg("ArgMax"))
converter("aten.argmin.default")(_arg("ArgMin"))


def _with_indices(reduce: str, arg: str):
    def convert(ctx: Ctx, x, dim, keepdim=False):
        """torch.max(x, dim): the values, and where they are (the first, on ties)."""
        values = ctx.add(reduce, [x], {"axes": _axes(x, dim), "keepdims": int(keepdim)})
        return [values, ctx.add(arg, [x], {"axis": dim, "keepdims": int(keepdim)}, hint="indices")]

    return convert


converter("aten.max.dim")(_with_indices("ReduceMax", "ArgMax"))
converter("aten.min.dim")(_with_indices("ReduceMin", "ArgMin"))
