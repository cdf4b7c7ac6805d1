"""Converters for ATen reductions: sum, mean, amax, amin over dims.

An empty or omitted dim list means every axis, in ATen as in the IR's
Reduce* ops (whose `axes` attribute is empty then).
"""
from __future__ import annotations

from .converters import Ctx, converter

_REDUCERS = {"sum": "ReduceSum", "mean": "ReduceMean", "amax": "ReduceMax", "amin": "ReduceMin",
             "any": "ReduceMax", "all": "ReduceMin"}  # over bools, any is max and all is min


def _reduce(op: str):
    def convert(ctx: Ctx, x, dim=None, keepdim=False, *, dtype=None):
        x = ctx.operand(x, ctx.out_dtype)  # sum(dtype=...), sum of bools, any of floats
        axes = [] if dim is None else [dim] if isinstance(dim, int) else list(dim)
        return ctx.add(op, [x], {"axes": [a % max(x.type.rank, 1) for a in axes], "keepdims": int(keepdim)})

    return convert


for _name, _op in _REDUCERS.items():
    converter(f"aten.{_name}.default", f"aten.{_name}.dim", f"aten.{_name}.dims",
              f"aten.{_name}.dim_IntList")(_reduce(_op))
