"""Resize: nearest, linear and cubic interpolation, one axis at a time.

The IR op takes its geometry as attributes: `scales` (one per axis) and/or
`sizes` (the output shape), and `roi` for tf_crop_and_resize. The ONNX
frontend turns constant scales/sizes/roi inputs, `axes` and
keep_aspect_ratio_policy into these full-rank lists. With only `sizes`, the
scale of an axis is out/in; with only `scales`, its size is floor(in * scale).

Interpolation is separable: resizing one axis at a time gives the same
result as the ONNX definition. Per axis, every output position maps to a
source coordinate (the coordinate transformation mode), then reads a few
source taps with weights: one tap for nearest, two for linear, four for
cubic, more when `antialias` widens the kernel to downsample. Taps outside
the input clamp to its edge. OPAQUE: no fused kernel reads this pattern.
"""
from __future__ import annotations

import math

import numpy as np

from ..registry import Attr, Kind, fail, register
from ..types import NUMERIC_DTYPES, TensorType
from .common import same_dtype

COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                    "asymmetric", "tf_crop_and_resize", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _geometry(shape, scales, sizes) -> tuple[list[float], list[int]]:
    """Per-axis scales and output sizes from whichever of the two is given."""
    r = len(shape)
    if not scales and not sizes:
        fail("Resize needs `scales` or `sizes`")
    for name, v in (("scales", scales), ("sizes", sizes)):
        if v and len(v) != r:
            fail(f"{name} has {len(v)} entries for an input of rank {r}")
    if scales and min(scales) <= 0:
        fail(f"scales {list(scales)} must be positive")
    if sizes and min(sizes) < 1:
        fail(f"sizes {list(sizes)} must be positive")
    if not scales:
        scales = [o / i for o, i in zip(sizes, shape)]
    if not sizes:
        sizes = [int(s * i) for s, i in zip(scales, shape)]
    return list(scales), list(sizes)


def _infer(x, *, scales, sizes, roi, mode, coordinate_transformation_mode, **_):
    dt = same_dtype(x, allowed=NUMERIC_DTYPES)
    _, out = _geometry(x.shape, scales, sizes)
    if coordinate_transformation_mode == "tf_crop_and_resize" and len(roi) != 2 * x.rank:
        fail(f"tf_crop_and_resize needs roi with {2 * x.rank} entries (starts, then ends), got {len(roi)}")
    if min(out) < 1:
        fail(f"output shape {out} is empty")
    return TensorType(tuple(out), dt)


def source_coordinates(mode: str, n_out: int, n_in: int, scale: float, roi=(0.0, 1.0)) -> np.ndarray:
    """Where each output position of one axis samples the input, as ONNX
    defines it. `scale * n_in` (not n_out) is the exact output length."""
    y = np.arange(n_out, dtype=np.float64)
    length = scale * n_in
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (y + 0.5) / scale - 0.5 if length != 1 else np.full(n_out, -0.5)
    if mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / length)
        return offset + (y + 0.5) / scale - 0.5
    if mode == "align_corners":
        return y * (n_in - 1) / (length - 1) if length != 1 else np.zeros(n_out)
    # tf_crop_and_resize: sample the region [roi start, roi end] of the input
    start, end = roi
    if length == 1:
        return np.full(n_out, (end - start) * (n_in - 1) / 2 + start * (n_in - 1))
    return y * (end - start) * (n_in - 1) / (length - 1) + start * (n_in - 1)


def _nearest(x: np.ndarray, mode: str) -> np.ndarray:
    frac = x - np.floor(x)
    up = {"round_prefer_floor": frac > 0.5, "round_prefer_ceil": frac >= 0.5,
          "floor": np.zeros(x.shape, bool), "ceil": frac > 0}[mode]
    return np.floor(x).astype(np.int64) + up


def _kernel(mode: str, a: float):
    if mode == "linear":
        return lambda d: np.clip(1 - d, 0, None)
    return lambda d: np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                              np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))


def taps(x: np.ndarray, n_in: int, scale: float, attrs: dict) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (n_out, taps), clamped to the input, and their weights."""
    mode = attrs["mode"]
    if mode == "nearest":
        return np.clip(_nearest(x, attrs["nearest_mode"]), 0, n_in - 1)[:, None], np.ones((len(x), 1))
    support = 1 if mode == "linear" else 2
    s = min(scale, 1.0) if attrs["antialias"] else 1.0  # antialias widens the kernel by 1/scale
    first = math.floor(-support / s) + 1
    offsets = np.arange(first, 2 - first)
    # base and ratio as ONNX defines them: an exact integer x counts as base x - 1, ratio 1
    base = np.floor(x)
    ratio = x - base
    whole = ratio == 0
    base, ratio = np.where(whole, base - 1, base), np.where(whole, 1.0, ratio)
    w = _kernel(mode, attrs["cubic_coeff_a"])(np.abs(s * (offsets[None, :] - ratio[:, None])))
    if attrs["antialias"]:
        w = w / w.sum(axis=1, keepdims=True)
    idx = base.astype(np.int64)[:, None] + offsets[None, :]
    if attrs["exclude_outside"]:
        w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
        w = w / np.where(w.sum(axis=1, keepdims=True) == 0, 1.0, w.sum(axis=1, keepdims=True))
    return np.clip(idx, 0, n_in - 1), w


def _resize(x, *, scales, sizes, roi, **attrs):
    scales, sizes = _geometry(x.shape, scales, sizes)
    cmode = attrs["coordinate_transformation_mode"]
    y = x.astype(np.float64)
    for axis, (scale, n_out) in enumerate(zip(scales, sizes)):
        n_in = x.shape[axis]
        axis_roi = (roi[axis], roi[x.ndim + axis]) if cmode == "tf_crop_and_resize" else (0.0, 1.0)
        if n_out == n_in and math.isclose(scale, 1.0) and axis_roi == (0.0, 1.0):
            continue
        src = source_coordinates(cmode, n_out, n_in, scale, axis_roi)
        idx, w = taps(src, n_in, scale, attrs)
        shape = (1,) * axis + w.shape + (1,) * (x.ndim - axis - 1)
        y = (np.take(y, idx, axis=axis) * w.reshape(shape)).sum(axis=axis + 1)
        if cmode == "tf_crop_and_resize":
            outside = ((src < 0) | (src > n_in - 1)).reshape(shape[:axis + 1] + shape[axis + 2:])
            y = np.where(outside, attrs["extrapolation_value"], y)
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        y = np.clip(np.round(y), info.min, info.max)
    return y.astype(x.dtype)


register("Resize", Kind.OPAQUE, _infer, _resize,
         attrs={"scales": Attr("floats", ()), "sizes": Attr("ints", ()), "roi": Attr("floats", ()),
                "mode": Attr("str", "nearest", choices=("nearest", "linear", "cubic")),
                "coordinate_transformation_mode": Attr("str", "half_pixel", choices=COORDINATE_MODES),
                "nearest_mode": Attr("str", "round_prefer_floor", choices=NEAREST_MODES),
                "cubic_coeff_a": Attr("float", -0.75), "exclude_outside": Attr("int", 0, choices=(0, 1)),
                "extrapolation_value": Attr("float", 0.0), "antialias": Attr("int", 0, choices=(0, 1))},
         doc="interpolate to a new shape (nearest, linear, cubic); geometry given as attributes")
