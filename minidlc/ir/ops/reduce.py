"""Reductions: ReduceSum and friends, ArgMax and ArgMin; and CumSum, the scan
that keeps every partial sum.

Every Reduce* op has two IR attributes: `axes` (non-empty: the axes to reduce,
negative ones counting from the back; empty: all axes) and `keepdims`. ONNX's
`noop_with_empty_axes` has no IR form: the frontend turns such a node into an
Identity, so backends see one meaning of "empty axes".

Reducing over an empty set gives the reduction's identity (0 for sums, 1 for
products, -inf for ReduceMax, NaN for ReduceMean), as ONNX specifies.
Float reductions accumulate in float64, so the oracle is more accurate than
the backends it checks; integer ones stay in their dtype (wrapping on overflow).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..registry import Attr, Kind, fail, register
from ..types import NUMERIC_DTYPES, TensorType
from .common import norm_axis, same_dtype


def reduce_axes(rank: int, axes: list[int]) -> tuple[int, ...]:
    """The sorted, non-negative axes a Reduce* op reduces (all for `[]`)."""
    if not axes:
        return tuple(range(rank))
    out = tuple(sorted(norm_axis(a, rank) for a in axes))
    if len(set(out)) != len(out):
        fail(f"axes {axes} name an axis twice")
    return out


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: int) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _extreme(dtype: np.dtype, largest: bool):
    """The lowest (largest=False) or highest value of `dtype`: the identity
    of max and of min reductions, which an empty reduction returns."""
    if dtype.kind == "f":
        return np.inf if largest else -np.inf
    if dtype.kind == "b":
        return largest
    info = np.iinfo(dtype)
    return info.max if largest else info.min


def _acc(x: np.ndarray) -> np.ndarray:
    """The array to accumulate: float64 for floats, the own dtype (wrapping) for ints."""
    return x.astype(np.float64) if x.dtype.kind == "f" else x


# Each reducer reduces `axes` of x with keepdims=True; the caller shapes the result.
def _sum(x, axes):
    return np.sum(_acc(x), axis=axes, keepdims=True, dtype=_acc(x).dtype)


def _mean(x, axes):
    count = int(np.prod([x.shape[a] for a in axes]))
    with np.errstate(invalid="ignore", divide="ignore"):  # the mean of nothing is NaN
        return np.sum(x.astype(np.float64), axis=axes, keepdims=True) / count


def _prod(x, axes):
    return np.prod(_acc(x), axis=axes, keepdims=True, dtype=_acc(x).dtype)


def _max(x, axes):
    return np.max(x, axis=axes, keepdims=True, initial=_extreme(x.dtype, largest=False))


def _min(x, axes):
    return np.min(x, axis=axes, keepdims=True, initial=_extreme(x.dtype, largest=True))


def _sum_square(x, axes):
    return _sum(np.square(_acc(x)), axes)


def _l2(x, axes):
    return np.sqrt(np.sum(np.square(x.astype(np.float64)), axis=axes, keepdims=True))


_REDUCERS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "ReduceSum": (_sum, NUMERIC_DTYPES),
    "ReduceMean": (_mean, NUMERIC_DTYPES),
    "ReduceProd": (_prod, NUMERIC_DTYPES),
    "ReduceMax": (_max, NUMERIC_DTYPES + ("bool",)),
    "ReduceMin": (_min, NUMERIC_DTYPES + ("bool",)),
    "ReduceSumSquare": (_sum_square, NUMERIC_DTYPES),
    "ReduceL2": (_l2, NUMERIC_DTYPES),
}


def _register_reduce(name: str, fn: Callable, dtypes: tuple[str, ...]) -> None:
    def infer(x, axes, keepdims):
        same_dtype(x, allowed=dtypes)
        return TensorType(reduced_shape(x.shape, reduce_axes(x.rank, axes), keepdims), x.dtype)

    def impl(x, axes, keepdims):
        ax = reduce_axes(x.ndim, axes)
        out = np.asarray(fn(x, ax))  # computed with keepdims, so one reshape serves both cases
        if x.dtype.kind in "iu" and out.dtype.kind == "f":
            out = np.trunc(out)
        return out.reshape(reduced_shape(x.shape, ax, keepdims)).astype(x.dtype)

    register(name, Kind.REDUCTION, infer, impl,
             attrs={"axes": Attr("ints", []), "keepdims": Attr("int", 1, choices=(0, 1))},
             doc=f"{name} over `axes` (all axes when empty)")


for _name, (_fn, _dtypes) in _REDUCERS.items():
    _register_reduce(_name, _fn, _dtypes)


# ---- ArgMax / ArgMin --------------------------------------------------------
def _register_arg(name: str, np_fn: Callable) -> None:
    def infer(x, axis, keepdims, select_last_index):
        same_dtype(x, allowed=NUMERIC_DTYPES)
        ax = norm_axis(axis, x.rank)
        if x.shape[ax] == 0:
            fail(f"{name} over axis {axis} of size 0 has no answer")
        return TensorType(reduced_shape(x.shape, (ax,), keepdims), "i64")

    def impl(x, axis, keepdims, select_last_index):
        ax = axis % x.ndim
        if select_last_index:  # search the reversed axis, then map the index back
            idx = x.shape[ax] - 1 - np_fn(np.flip(x, ax), axis=ax, keepdims=True)
        else:
            idx = np_fn(x, axis=ax, keepdims=True)
        return idx.reshape(reduced_shape(x.shape, (ax,), keepdims)).astype(np.int64)

    register(name, Kind.REDUCTION, infer, impl,
             attrs={"axis": Attr("int", 0), "keepdims": Attr("int", 1, choices=(0, 1)),
                    "select_last_index": Attr("int", 0, choices=(0, 1))},
             doc=f"index (i64) of the {name[3:].lower()} along `axis`; ties go to the first "
                 "(or, with select_last_index, the last) occurrence")


_register_arg("ArgMax", np.argmax)
_register_arg("ArgMin", np.argmin)


# ---- CumSum -------------------------------------------------------------------
def _cumsum(x, axis, exclusive, reverse):
    ax = axis % x.ndim
    acc = _acc(x)
    if reverse:
        acc = np.flip(acc, ax)
    out = np.cumsum(acc, axis=ax, dtype=acc.dtype)
    if exclusive:  # element i holds the sum of the elements before it
        out -= acc
    if reverse:
        out = np.flip(out, ax)
    return out.astype(x.dtype)


def _cumsum_infer(x, axis, exclusive, reverse):
    same_dtype(x, allowed=NUMERIC_DTYPES)
    norm_axis(axis, x.rank)
    return x.type


register("CumSum", Kind.REDUCTION, _cumsum_infer, _cumsum,
         attrs={"axis": Attr("int"), "exclusive": Attr("int", 0, choices=(0, 1)),
                "reverse": Attr("int", 0, choices=(0, 1))},
         doc="running sums along `axis` (from the end if reverse; without the element itself if exclusive)")
