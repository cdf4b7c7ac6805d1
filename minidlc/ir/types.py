"""Tensor types of the graph IR: a static shape and a dtype.

Every value in a graph has one `TensorType`. Shapes are static (tuples of
ints) because minidlc compiles for one input shape at a time, as most
ahead-of-time DL compilers do; the frontends bind dynamic dimensions first.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

import ml_dtypes
import numpy as np

# Short dtype names, as the printer writes them, and their NumPy equivalents.
DTYPES: dict[str, np.dtype] = {
    "f16": np.dtype(np.float16),
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "i8": np.dtype(np.int8),
    "u8": np.dtype(np.uint8),
    "i16": np.dtype(np.int16),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
    # bfloat16 (f32's exponent, an 8-bit mantissa) from ml_dtypes, which onnx
    # itself requires; a storage dtype: Cast converts it, no op computes in it
    "bf16": np.dtype(ml_dtypes.bfloat16),
}
_NAME_OF = {dt: name for name, dt in DTYPES.items()}

FLOAT_DTYPES = ("f16", "f32", "f64")
INT_DTYPES = ("i8", "u8", "i16", "i32", "i64")
NUMERIC_DTYPES = FLOAT_DTYPES + INT_DTYPES


def dtype_name(dt) -> str:
    """The short name ('f32') of a NumPy dtype; raises TypeError if unsupported."""
    dt = np.dtype(dt)
    if dt not in _NAME_OF:
        raise TypeError(f"dtype {dt} is not supported; supported: {', '.join(DTYPES)}")
    return _NAME_OF[dt]


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: str = "f32"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise TypeError(f"unknown dtype {self.dtype!r}; supported: {', '.join(DTYPES)}")
        shape = tuple(int(d) for d in self.shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"negative dimension in shape {shape}")
        object.__setattr__(self, "shape", shape)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def nbytes(self) -> int:
        return self.numel * self.np_dtype.itemsize

    @staticmethod
    def of(array) -> "TensorType":
        """The type of a NumPy array (or anything np.asarray accepts)."""
        a = np.asarray(array)
        return TensorType(a.shape, dtype_name(a.dtype))

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"
