"""Converters for ATen ops that move data without computing: view, permute,
cat, split, slice, select, squeeze/unsqueeze, expand.

Views become copies in the IR (the graph IR has no aliasing), which is what
the model computes as long as it does not write through them, and exported
inference graphs do not.
"""
from __future__ import annotations

import numpy as np

from ...ir import Value
from .converters import Ctx, converter

INT64_MAX = 2**63 - 1


def transpose(ctx: Ctx, x: Value, perm: list[int]) -> Value:
    """x permuted by `perm`: a Transpose node, or for a weight a transposed
    Constant right away (the form ONNX exporters give linear layers)."""
    weight = ctx.graph.const_value(x)
    if weight is not None:
        return ctx.const(np.ascontiguousarray(np.transpose(weight, perm)), hint=f"{x.name}.T")
    return ctx.add("Transpose", [x], {"perm": perm}, hint="transpose")


@converter("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default")
def view(ctx: Ctx, x, size):
    # The result's static shape (any -1 already resolved by PyTorch).
    return ctx.add("Reshape", [x, ctx.const(ctx.out_shape, "i64", "shape")])


@converter("aten.expand.default")
def expand(ctx: Ctx, x, size, *, implicit=False):
    return ctx.add("Expand", [x, ctx.const(ctx.out_shape, "i64", "shape")])


@converter("aten.permute.default")
def permute(ctx: Ctx, x, dims):
    return ctx.add("Transpose", [x], {"perm": [d % max(x.type.rank, 1) for d in dims]})


@converter("aten.transpose.int")
def transpose_int(ctx: Ctx, x, dim0, dim1):
    perm = list(range(x.type.rank))
    perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
    return ctx.add("Transpose", [x], {"perm": perm})


@converter("aten.t.default")
def t(ctx: Ctx, x):
    return ctx.add("Transpose", [x], {"perm": list(range(x.type.rank))[::-1]})


@converter("aten.unsqueeze.default")
def unsqueeze(ctx: Ctx, x, dim):
    return ctx.add("Unsqueeze", [x], {"axes": [dim % (x.type.rank + 1)]})


@converter("aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default")
def squeeze(ctx: Ctx, x, dim=None):
    dims = range(x.type.rank) if dim is None else [dim] if isinstance(dim, int) else dim
    # torch.squeeze(x, d) leaves a dimension that is not 1 alone; ONNX would fail.
    axes = [d % x.type.rank for d in dims if x.type.shape[d] == 1]
    return ctx.add("Squeeze", [x], {"axes": axes}) if axes else x


@converter("aten.cat.default")
def cat(ctx: Ctx, tensors, dim=0):
    dt = ctx.out_dtype
    return ctx.add("Concat", [ctx.operand(v, dt) for v in tensors if v.type.shape != (0,)], {"axis": dim})


@converter("aten.split_with_sizes.default")
def split_with_sizes(ctx: Ctx, x, split_sizes, dim=0):
    return ctx.add_outputs("Split", [x], {"axis": dim, "split": split_sizes}, len(split_sizes))


@converter("aten.split.Tensor")
def split(ctx: Ctx, x, split_size, dim=0):
    n = x.type.shape[dim]
    sizes = [min(split_size, n - i) for i in range(0, n, split_size)]
    return split_with_sizes(ctx, x, sizes, dim) if len(sizes) > 1 else [x]


@converter("aten.slice.Tensor")
def slice_(ctx: Ctx, x, dim=0, start=None, end=None, step=1):
    start = 0 if start is None else start
    end = INT64_MAX if end is None else min(end, INT64_MAX)
    return ctx.add("Slice", [x], {"starts": [start], "ends": [end], "axes": [dim % x.type.rank], "steps": [step]})


@converter("aten.select.int")
def select(ctx: Ctx, x, dim, index):
    """x[..., index, ...]: a Gather with a scalar index drops the axis."""
    return ctx.add("Gather", [x, ctx.const(index, "i64", "index")], {"axis": dim})


@converter("aten.index.Tensor")
def index(ctx: Ctx, x, indices):
    """x[..., idx, ...] with one integer index tensor: a Gather on that axis."""
    axes = [i for i, v in enumerate(indices) if v is not None]
    if len(axes) != 1 or indices[axes[0]].type.dtype not in ("i64", "i32"):
        raise ctx.error("only indexing with one integer tensor is supported (no boolean masks, "
                        "no several index tensors)")
    return ctx.add("Gather", [x, indices[axes[0]]], {"axis": axes[0]})


def _pad(ctx: Ctx, x, pad, mode: str, value=0.0):
    """PyTorch lists (begin, end) pairs from the last axis backwards; the IR
    wants all begins, then all ends, first axis first."""
    rank = x.type.rank
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):
        begins[rank - 1 - i], ends[rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    return ctx.add("Pad", [x], {"pads": begins + ends, "mode": mode, "value": value})


@converter("aten.constant_pad_nd.default")
def constant_pad(ctx: Ctx, x, pad, value=0):
    return _pad(ctx, x, pad, "constant", value)


@converter("aten.reflection_pad1d.default", "aten.reflection_pad2d.default")
def reflection_pad(ctx: Ctx, x, padding):
    return _pad(ctx, x, padding, "reflect")


@converter("aten.replication_pad1d.default", "aten.replication_pad2d.default")
def replication_pad(ctx: Ctx, x, padding):
    return _pad(ctx, x, padding, "edge")
