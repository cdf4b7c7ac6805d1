"""Pooling: MaxPool, AveragePool (windowed) and the global pools.

Fusion kinds: the global pools reduce whole spatial axes, so they are
REDUCTION ops like ReduceMean. The windowed pools are OPAQUE: each output
reads an overlapping window, which neither the reduction nor the injective
lowering describes, so they run as kernels of their own.

Windowed pools take explicit `pads` (auto_pad is resolved by the frontend)
and keep `ceil_mode`, which cannot always be folded into pads because
AveragePool must not count the extra cells it adds.
"""
from __future__ import annotations

import numpy as np

from ..registry import Attr, Kind, fail, register
from ..types import FLOAT_DTYPES, TensorType
from .common import same_dtype
from .windows import Window, windows

_WINDOW = {
    "kernel_shape": Attr("ints"),
    "strides": Attr("ints", ()),
    "pads": Attr("ints", ()),
    "dilations": Attr("ints", ()),
    "ceil_mode": Attr("int", 0, choices=(0, 1)),
}


def _geometry(shape, kernel_shape, strides, pads, dilations, ceil_mode):
    """The window and the output spatial shape for an input of `shape`."""
    if len(shape) < 3 or len(kernel_shape) != len(shape) - 2:
        fail(f"input {list(shape)} must be (N, C, *spatial) with {len(kernel_shape)} spatial axes "
             f"to match kernel_shape {list(kernel_shape)}")
    win = Window.of(kernel_shape, strides, dilations, pads)
    return win, win.out_shape(shape[2:], bool(ceil_mode))


def _lowest(dtype: np.dtype):
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _maxpool_infer(x, *, storage_order, **window):
    same_dtype(x, allowed=FLOAT_DTYPES + ("i8", "u8"))
    _, out = _geometry(x.shape, **window)
    shape = x.shape[:2] + out
    return [TensorType(shape, x.dtype), TensorType(shape, "i64")]


def _maxpool(x, *, storage_order, **window):
    """Max over each window, and where it was: Indices are offsets into the
    flattened input (row-major, or with storage_order=1 column-major over the
    spatial axes); ties go to the first cell in window order, as in ORT, and a
    padding cell is never the one (u8's padding, 0, ties with a 0 inside)."""
    win, out = _geometry(x.shape, **window)
    n = win.rank
    cols = windows(x, win, out, _lowest(x.dtype))
    flat = cols.reshape(cols.shape[:2 + n] + (-1,))
    y = flat.max(axis=-1)
    # Indices: the first cell inside x that holds the max (or a NaN, when the max is
    # one), unravelled into kernel taps, then into input coordinates.
    inside = windows(np.ones((1, 1) + x.shape[2:], bool), win, out, False)
    inside = inside.reshape(inside.shape[:2 + n] + (-1,))
    peak = y[..., None]
    holds = (flat == peak) | (np.isnan(flat) & np.isnan(peak)) if flat.dtype.kind == "f" else flat == peak
    taps = np.unravel_index((holds & inside).argmax(axis=-1), win.kernel)
    grids = np.meshgrid(*(np.arange(o) for o in out), indexing="ij")
    coords = [g * s + t * d - p for g, t, s, d, p in zip(grids, taps, win.strides, win.dilations, win.pads)]
    spatial = x.shape[2:]
    order = range(n) if storage_order == 0 else reversed(range(n))
    index, scale = np.zeros(y.shape, np.int64), 1
    for a in reversed(list(order)):
        index += coords[a] * scale
        scale *= spatial[a]
    base = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(x.shape[:2] + (1,) * n) * scale
    return y, index + base


register("MaxPool", Kind.OPAQUE, _maxpool_infer, _maxpool,
         attrs={**_WINDOW, "storage_order": Attr("int", 0, choices=(0, 1))},
         doc="max over windows; second output: flat indices of the maxima")


def _avgpool_infer(x, *, count_include_pad, **window):
    same_dtype(x, allowed=FLOAT_DTYPES)
    _, out = _geometry(x.shape, **window)
    return TensorType(x.shape[:2] + out, x.dtype)


def _avgpool(x, *, count_include_pad, **window):
    """Window sums over a divisor that is itself pooled: a mask of ones over
    the input (and over the explicit pads when count_include_pad=1), zeros in
    the cells ceil_mode adds."""
    win, out = _geometry(x.shape, **window)
    n = win.rank
    axes = tuple(range(2 + n, 2 + 2 * n))
    total = windows(x.astype(np.float64), win, out).sum(axis=axes)
    mask = np.ones((1, 1) + x.shape[2:])
    if count_include_pad:
        mask = np.pad(mask, [(0, 0), (0, 0)] + list(zip(win.pads[:n], win.pads[n:])), constant_values=1)
        win = Window.of(win.kernel, win.strides, win.dilations, ())
    count = windows(mask, win, out).sum(axis=axes)
    return (total / np.maximum(count, 1)).astype(x.dtype)


register("AveragePool", Kind.OPAQUE, _avgpool_infer, _avgpool,
         attrs={**_WINDOW, "count_include_pad": Attr("int", 0, choices=(0, 1))},
         doc="mean over windows; count_include_pad=1 counts the explicit pads as zeros")


def _global_infer(x):
    same_dtype(x, allowed=FLOAT_DTYPES)
    if x.rank < 3:
        fail(f"input {list(x.shape)} must be (N, C, *spatial)")
    return TensorType(x.shape[:2] + (1,) * (x.rank - 2), x.dtype)


def _global(reduce):
    return lambda x: reduce(x, axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype)


register("GlobalAveragePool", Kind.REDUCTION, _global_infer, _global(np.mean),
         doc="mean over all spatial axes (kept as size 1)")
register("GlobalMaxPool", Kind.REDUCTION, _global_infer, _global(np.max),
         doc="max over all spatial axes (kept as size 1)")
