"""Helpers shared by the op declarations: type-inference building blocks."""
from __future__ import annotations

import numpy as np

from ..registry import fail
from ..types import FLOAT_DTYPES, TensorType


def same_dtype(*operands, allowed=None) -> str:
    """The common dtype of the given operands (None entries skipped)."""
    dts = {o.dtype for o in operands if o is not None}
    if len(dts) != 1:
        fail(f"inputs must share one dtype, got {sorted(dts)}")
    dt = dts.pop()
    if allowed is not None and dt not in allowed:
        fail(f"dtype {dt} is not supported (supported: {', '.join(allowed)})")
    return dt


def broadcast(*operands) -> tuple[int, ...]:
    """The NumPy-broadcast shape of the operands (multidirectional broadcasting)."""
    try:
        return tuple(np.broadcast_shapes(*(o.shape for o in operands if o is not None)))
    except ValueError:
        fail("shapes " + " and ".join(str(list(o.shape)) for o in operands if o is not None)
             + " do not broadcast")


def norm_axis(axis: int, rank: int) -> int:
    """An axis in [0, rank), from ONNX's [-rank, rank)."""
    if not -rank <= axis < max(rank, 1):
        fail(f"axis {axis} is out of range for rank {rank}")
    return axis % max(rank, 1)


def static(operand, what: str) -> np.ndarray:
    """The compile-time value of a shape-like input, or a clear error."""
    if operand is None:
        fail(f"{what} is missing")
    if operand.value is None:
        fail(f"{what} must be known at compile time (a constant or a shape computation)")
    return np.asarray(operand.value)


def like(operand, shape=None, dtype=None) -> TensorType:
    """The operand's type with shape and/or dtype replaced."""
    return TensorType(operand.shape if shape is None else tuple(shape), dtype or operand.dtype)


def float_only(operand):
    if operand.dtype not in FLOAT_DTYPES:
        fail(f"dtype {operand.dtype} is not supported (supported: {', '.join(FLOAT_DTYPES)})")
