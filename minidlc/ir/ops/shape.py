"""Data movement and shape ops: Reshape, Transpose, Slice, Concat, Gather, Pad, ...

Shape-like operands that must be known at compile time are attributes here
(Slice bounds, Pad pads, Split sizes, Squeeze/Unsqueeze axes, Tile repeats).
Reshape, Expand, ConstantOfShape and Range keep ONNX's tensor inputs and read
their compile-time values (`Operand.value`), so shape computations such as
Shape -> Gather -> Concat -> Reshape stay visible in the IR until constant
folding removes them. An empty list attribute means ONNX's default for the
omitted operand (all axes, the reversed permutation, unit steps).

Every op here except Shape, Size, ConstantOfShape and Range is injective:
each output element is a copy of one input element (or a constant: a pad,
Trilu's zeros).
"""
from __future__ import annotations

from math import ceil, prod

import numpy as np

from ..registry import Attr, Kind, fail, register
from ..types import NUMERIC_DTYPES, TensorType, dtype_name
from .common import like, norm_axis, same_dtype, static

# Ops that only change the shape of a row-major tensor (the data order stays):
# a view of their input, and an identity to the simplify pass when the shape stays.
VIEW_OPS = ("Reshape", "Squeeze", "Unsqueeze", "Flatten")

INDEX_DTYPES = ("i32", "i64")
INT64_MAX = 2 ** 63 - 1


def _axes(axes, rank: int, what: str = "axes") -> list[int]:
    """Non-negative, distinct axes from ONNX's [-rank, rank)."""
    out = [norm_axis(int(a), rank) for a in axes]
    if len(set(out)) != len(out):
        fail(f"{what} {list(axes)} name an axis twice")
    return out


def _shape_input(op, what: str) -> tuple[int, ...]:
    """A 1-D i64 shape operand's compile-time value, as a tuple."""
    if op.dtype != "i64" or op.rank != 1:
        fail(f"{what} must be a 1-D i64 tensor, got {op.type}")
    return tuple(int(d) for d in static(op, what))


# ---- Reshape, Flatten, Squeeze, Unsqueeze: same elements, new shape ----------
def reshape_target(shape: tuple[int, ...], target, allowzero: int) -> tuple[int, ...]:
    """Resolve ONNX Reshape's target: 0 copies the input dim (unless allowzero),
    one -1 takes whatever size is left."""
    dims = [int(d) for d in target]
    if not allowzero:
        for i, d in enumerate(dims):
            if d == 0:
                if i >= len(shape):
                    fail(f"target shape {dims}: 0 at position {i} copies an input dim, "
                         f"but the input has rank {len(shape)}")
                dims[i] = shape[i]
    if any(d < -1 for d in dims) or dims.count(-1) > 1:
        fail(f"target shape {list(target)} may hold at most one -1 and no other negative size")
    numel = prod(shape)
    if -1 in dims:
        known = prod(d for d in dims if d != -1)
        if known == 0 or numel % known:
            fail(f"cannot reshape {list(shape)} ({numel} elements) to {list(target)}")
        dims[dims.index(-1)] = numel // known
    if prod(dims) != numel:
        fail(f"cannot reshape {list(shape)} ({numel} elements) to {list(target)} ({prod(dims)} elements)")
    return tuple(dims)


def _reshape_infer(x, shape, allowzero):
    return like(x, reshape_target(x.shape, _shape_input(shape, "Reshape's target shape"), allowzero))


register("Reshape", Kind.INJECTIVE, _reshape_infer,
         lambda x, shape, allowzero: x.reshape(reshape_target(x.shape, shape, allowzero)),
         attrs={"allowzero": Attr("int", 0, choices=(0, 1))}, inputs=(2, 2),
         doc="same elements, new shape (given by the compile-time value of input 2)")


def flatten_shape(shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    if not -len(shape) <= axis <= len(shape):
        fail(f"axis {axis} is out of range for rank {len(shape)}")
    axis += len(shape) if axis < 0 else 0
    return prod(shape[:axis]), prod(shape[axis:])


register("Flatten", Kind.INJECTIVE, lambda x, axis: like(x, flatten_shape(x.shape, axis)),
         lambda x, axis: x.reshape(flatten_shape(x.shape, axis)), attrs={"axis": Attr("int", 1)},
         doc="2-D view: dims before `axis` become rows, the rest columns")


def squeeze_shape(shape: tuple[int, ...], axes: list[int]) -> tuple[int, ...]:
    """Drop `axes` (all size-1 dims when empty); each must have size 1."""
    if not axes:
        return tuple(d for d in shape if d != 1)
    drop = _axes(axes, len(shape))
    for a in drop:
        if shape[a] != 1:
            fail(f"cannot squeeze axis {a} of shape {list(shape)}: its size is {shape[a]}, not 1")
    return tuple(d for i, d in enumerate(shape) if i not in drop)


register("Squeeze", Kind.INJECTIVE, lambda x, axes: like(x, squeeze_shape(x.shape, axes)),
         lambda x, axes: x.reshape(squeeze_shape(x.shape, axes)), attrs={"axes": Attr("ints", [])},
         doc="remove size-1 dims `axes` (all of them when empty)")


def unsqueeze_shape(shape: tuple[int, ...], axes: list[int]) -> tuple[int, ...]:
    """Insert size-1 dims at `axes`, which index the output (rank + len(axes))."""
    if not axes:
        fail("Unsqueeze needs at least one axis")
    rank = len(shape) + len(axes)
    new = set(_axes(axes, rank))
    rest = iter(shape)
    return tuple(1 if i in new else next(rest) for i in range(rank))


register("Unsqueeze", Kind.INJECTIVE, lambda x, axes: like(x, unsqueeze_shape(x.shape, axes)),
         lambda x, axes: x.reshape(unsqueeze_shape(x.shape, axes)), attrs={"axes": Attr("ints")},
         doc="insert size-1 dims at `axes` (positions in the output)")


# ---- Transpose --------------------------------------------------------------
def transpose_perm(rank: int, perm: list[int]) -> list[int]:
    """The permutation (reversed axes when `perm` is empty, as in ONNX)."""
    if not perm:
        return list(range(rank))[::-1]
    if sorted(perm) != list(range(rank)):
        fail(f"perm {list(perm)} is not a permutation of the {rank} axes")
    return list(perm)


register("Transpose", Kind.INJECTIVE,
         lambda x, perm: like(x, [x.shape[p] for p in transpose_perm(x.rank, perm)]),
         lambda x, perm: np.transpose(x, transpose_perm(x.ndim, perm)), attrs={"perm": Attr("ints", [])},
         doc="output axis i is input axis perm[i]")


# ---- Concat, Split ----------------------------------------------------------
def _concat_infer(*xs, axis):
    dt = same_dtype(*xs)
    rank = xs[0].rank
    ax = norm_axis(axis, rank)
    for x in xs:
        if x.rank != rank or any(a != b for i, (a, b) in enumerate(zip(x.shape, xs[0].shape)) if i != ax):
            fail(f"cannot concatenate shapes {[list(o.shape) for o in xs]} along axis {axis}")
    shape = list(xs[0].shape)
    shape[ax] = sum(x.shape[ax] for x in xs)
    return TensorType(tuple(shape), dt)


register("Concat", Kind.INJECTIVE, _concat_infer, lambda *xs, axis: np.concatenate(xs, axis=axis),
         attrs={"axis": Attr("int")}, inputs=(1, None), doc="join the inputs along `axis`")


def _split_infer(x, axis, split):
    ax = norm_axis(axis, x.rank)
    if any(s < 0 for s in split) or sum(split) != x.shape[ax]:
        fail(f"split sizes {split} do not add up to dim {ax} of {list(x.shape)} ({x.shape[ax]})")
    return [like(x, x.shape[:ax] + (s,) + x.shape[ax + 1:]) for s in split]


register("Split", Kind.INJECTIVE, _split_infer,
         lambda x, axis, split: np.split(x, np.cumsum(split)[:-1], axis=axis),
         attrs={"axis": Attr("int", 0), "split": Attr("ints", check=lambda s: None if s else "must not be empty")},
         doc="cut `axis` into pieces of the given sizes, one output each")


# ---- Slice --------------------------------------------------------------------
def slice_ranges(shape: tuple[int, ...], starts, ends, axes, steps) -> list[tuple[int, int, int]]:
    """(start, step, count) per input axis: the elements ONNX Slice keeps.

    Follows ONNX: negative starts/ends count from the back, then clamp to
    [0, dim] (positive steps); with negative steps starts clamp to [0, dim-1]
    and ends to [-1, dim-1] (unlike Python, where x[-2::-1] of one element is
    empty). Backends use this to index; the reference implementation too."""
    if not axes:
        axes = list(range(len(starts)))
    if not steps:
        steps = [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        fail(f"starts {list(starts)}, ends {list(ends)}, axes {list(axes)} and steps {list(steps)} "
             "must have the same length")
    ranges = [(0, 1, d) for d in shape]
    for start, end, axis, step in zip(starts, ends, _axes(axes, len(shape)), steps):
        dim = shape[axis]
        if step == 0:
            fail("slice steps must not be 0")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            count = max(0, ceil((end - start) / step))
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            count = max(0, ceil((start - end) / -step))
        ranges[axis] = (start if count else 0, step, count)
    return ranges


def normalize_slice(shape: tuple[int, ...], starts, ends, axes, steps) -> dict[str, list[int]]:
    """Slice attributes with every axis explicit and every bound in range, so
    the printed IR says exactly which elements are kept. (A negative step that
    runs past element 0 ends at -dim-1, which is ONNX's way to say "before 0".)"""
    ranges = slice_ranges(shape, starts, ends, axes, steps)
    out = {"starts": [], "ends": [], "axes": [], "steps": []}
    for axis, ((start, step, count), dim) in enumerate(zip(ranges, shape)):
        end = start + step * count
        out["starts"].append(start)
        out["ends"].append(end if end >= 0 else -dim - 1)
        out["axes"].append(axis)
        out["steps"].append(step)
    return out


def _slice_infer(x, starts, ends, axes, steps):
    return like(x, [count for _, _, count in slice_ranges(x.shape, starts, ends, axes, steps)])


def _slice(x, starts, ends, axes, steps):
    index = tuple(slice(start, start + step * count if start + step * count >= 0 else None, step)
                  for start, step, count in slice_ranges(x.shape, starts, ends, axes, steps))
    return x[index]


register("Slice", Kind.INJECTIVE, _slice_infer, _slice,
         attrs={"starts": Attr("ints"), "ends": Attr("ints"), "axes": Attr("ints", []), "steps": Attr("ints", [])},
         doc="x[starts:ends:steps] along `axes` (ONNX bounds: negative counts back, out of range clamps)")


# ---- Gather, Expand, Tile, Pad ------------------------------------------------
def _gather_infer(data, indices, axis):
    same_dtype(indices, allowed=INDEX_DTYPES)
    ax = norm_axis(axis, data.rank)
    return like(data, data.shape[:ax] + indices.shape + data.shape[ax + 1:])


def _gather(data, indices, axis):
    ax = axis % data.ndim
    n = data.shape[ax]
    if indices.size and (indices.min() < -n or indices.max() >= n):
        raise IndexError(f"Gather indices must lie in [{-n}, {n - 1}] (axis {ax} has size {n}); "
                         f"got values from {indices.min()} to {indices.max()}")
    return np.take(data, np.where(indices < 0, indices + n, indices), axis=ax)


register("Gather", Kind.INJECTIVE, _gather_infer, _gather, attrs={"axis": Attr("int", 0)}, inputs=(2, 2),
         doc="pick slices of `axis` by index (negative indices count from the back)")


def _expand_infer(x, shape):
    target = _shape_input(shape, "Expand's target shape")
    try:
        return like(x, np.broadcast_shapes(x.shape, target))
    except ValueError:
        fail(f"cannot expand {list(x.shape)} to {list(target)}")


register("Expand", Kind.INJECTIVE, _expand_infer,
         lambda x, shape: np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))).copy(),
         inputs=(2, 2), doc="broadcast to the compile-time shape of input 2 (bidirectionally, as ONNX)")


def _tile_infer(x, repeats):
    if len(repeats) != x.rank or any(r < 0 for r in repeats):
        fail(f"repeats {repeats} must hold one non-negative count per axis of {list(x.shape)}")
    return like(x, [d * r for d, r in zip(x.shape, repeats)])


register("Tile", Kind.INJECTIVE, _tile_infer, lambda x, repeats: np.tile(x, repeats),
         attrs={"repeats": Attr("ints")}, doc="repeat the input `repeats[i]` times along axis i")


def _pad_infer(x, pads, mode, value):
    if len(pads) != 2 * x.rank:
        fail(f"pads {pads} must hold 2 * rank = {2 * x.rank} values (all begins, then all ends)")
    shape = [d + b + e for d, b, e in zip(x.shape, pads[:x.rank], pads[x.rank:])]
    if any(d < 0 for d in shape):
        fail(f"negative pads {pads} remove more than all of {list(x.shape)}")
    if mode != "constant":
        for d, b, e in zip(x.shape, pads[:x.rank], pads[x.rank:]):
            if d == 0 and (b > 0 or e > 0):
                fail(f"mode {mode!r} cannot pad an axis of size 0")
    return like(x, shape)


def _pad(x, pads, mode, value):
    rank = x.ndim
    begins, ends = pads[:rank], pads[rank:]
    # Negative pads crop; positive ones pad (with the cropped array's borders).
    x = x[tuple(slice(max(0, -b), d - max(0, -e)) for d, b, e in zip(x.shape, begins, ends))]
    width = [(max(0, b), max(0, e)) for b, e in zip(begins, ends)]
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=np.array(value).astype(x.dtype))
    return np.pad(x, width, mode=mode)


register("Pad", Kind.INJECTIVE, _pad_infer, _pad,
         attrs={"pads": Attr("ints"), "mode": Attr("str", "constant", choices=("constant", "reflect", "edge", "wrap")),
                "value": Attr("float", 0.0)},
         doc="pad (negative: crop) each axis; pads = all begins, then all ends")


# ---- Shape, Size, ConstantOfShape, Range: values that fold away -----------------
# Python slicing clamps start/end exactly as ONNX Shape does.
def _trilu_infer(x, upper, k):
    if x.rank < 2:
        fail(f"Trilu needs a matrix or a stack of them, got shape {list(x.shape)}")
    return x.type


register("Trilu", Kind.INJECTIVE, _trilu_infer,
         lambda x, upper, k: (np.triu if upper else np.tril)(x, k),
         attrs={"upper": Attr("int", 1, choices=(0, 1)), "k": Attr("int", 0)},
         doc="keep the upper (or lower) triangle of the last two axes from diagonal k on; zeros elsewhere")


register("Shape", Kind.OPAQUE, lambda x, start, end: TensorType((len(x.shape[start:end]),), "i64"),
         lambda x, start, end: np.array(x.shape[start:end], np.int64),
         attrs={"start": Attr("int", 0), "end": Attr("int", INT64_MAX)},
         doc="the input's shape (dims start..end) as an i64 vector")

register("Size", Kind.OPAQUE, lambda x: TensorType((), "i64"), lambda x: np.array(x.size, np.int64),
         doc="the number of elements, as an i64 scalar")


def _constant_of_shape_infer(shape, value):
    if value.size != 1:
        fail(f"value must hold one element, got shape {list(value.shape)}")
    return TensorType(_shape_input(shape, "ConstantOfShape's shape"), dtype_name(value.dtype))


register("ConstantOfShape", Kind.OPAQUE, _constant_of_shape_infer,
         lambda shape, value: np.full(tuple(shape), value.reshape(()), value.dtype),
         attrs={"value": Attr("tensor", np.zeros(1, np.float32))},
         doc="a tensor of the compile-time shape of input 1, filled with `value`")


def range_length(start, limit, delta) -> int:
    """ONNX Range's element count: max(ceil((limit - start) / delta), 0)."""
    if delta == 0:
        fail("Range's delta must not be 0")
    return max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)


def _range_infer(start, limit, delta):
    dt = same_dtype(start, limit, delta, allowed=NUMERIC_DTYPES)
    values = [static(o, f"Range's {what}") for o, what in ((start, "start"), (limit, "limit"), (delta, "delta"))]
    if any(v.size != 1 for v in values):
        fail("Range's start, limit and delta must be scalars")
    return TensorType((range_length(*(v.item() for v in values)),), dt)


def _range(start, limit, delta):
    n = range_length(start.item(), limit.item(), delta.item())
    return (start + delta * np.arange(n)).astype(start.dtype)


register("Range", Kind.OPAQUE, _range_infer, _range, inputs=(3, 3),
         doc="start, start + delta, ... up to (not including) limit; all three known at compile time")
