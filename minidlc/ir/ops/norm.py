"""Normalizations: BatchNormalization (inference form), LayerNormalization,
InstanceNormalization and LRN.

LayerNormalization and InstanceNormalization compute statistics over axes,
so they are REDUCTION ops. BatchNormalization is OPAQUE: in inference it is
a per-channel affine map, and the passes rewrite it into Mul/Add (or fold it
into the preceding Conv), so it never needs a fused kernel of its own. LRN
sums a window over the channel axis and is OPAQUE as well.
"""
from __future__ import annotations

import numpy as np

from ..registry import Attr, Kind, fail, register
from ..types import FLOAT_DTYPES, TensorType
from .common import like, norm_axis, same_dtype


def _channel_view(p: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast against (N, C, *spatial)."""
    return p.reshape((-1,) + (1,) * (rank - 2))


def _check_channel_params(x, params, names):
    if x.rank < 2:
        fail(f"input {list(x.shape)} must be (N, C, ...)")
    for p, name in zip(params, names):
        if p.shape != (x.shape[1],):
            fail(f"{name} has shape {list(p.shape)}, expected [{x.shape[1]}] (one per channel)")


def _bn_infer(x, scale, bias, mean, var, *, epsilon):
    same_dtype(x, allowed=FLOAT_DTYPES)
    same_dtype(scale, bias, allowed=FLOAT_DTYPES)
    same_dtype(mean, var, allowed=FLOAT_DTYPES)
    _check_channel_params(x, (scale, bias, mean, var), ("scale", "B", "input_mean", "input_var"))
    return x.type


def _bn(x, scale, bias, mean, var, *, epsilon):
    r = x.ndim
    inv = _channel_view(scale / np.sqrt(var.astype(np.float64) + epsilon), r)
    return ((x - _channel_view(mean, r)) * inv + _channel_view(bias, r)).astype(x.dtype)


register("BatchNormalization", Kind.OPAQUE, _bn_infer, _bn, inputs=(5, 5),
         attrs={"epsilon": Attr("float", 1e-5)},
         doc="inference-mode batch norm: (x - mean) / sqrt(var + eps) * scale + B, per channel")


# stash_type is an ONNX TensorProto dtype number: the precision of the statistics.
STASH_DTYPES = {1: "f32", 11: "f64"}


def _ln_infer(x, scale, bias=None, *, axis, epsilon, stash_type):
    same_dtype(x, scale, bias, allowed=FLOAT_DTYPES)
    a = norm_axis(axis, x.rank)
    for p, name in ((scale, "Scale"), (bias, "B")):
        if p is not None:
            try:
                np.broadcast_shapes(p.shape, x.shape[a:])
            except ValueError:
                fail(f"{name} {list(p.shape)} does not broadcast to the normalized shape {list(x.shape[a:])}")
            if p.rank > x.rank - a:
                fail(f"{name} {list(p.shape)} has more axes than the normalized shape {list(x.shape[a:])}")
    stats = TensorType(x.shape[:a] + (1,) * (x.rank - a), STASH_DTYPES[stash_type])
    return [x.type, stats, stats]


def _ln(x, scale, bias=None, *, axis, epsilon, stash_type):
    """Y, and the Mean and 1/StdDev it used, computed in the stash dtype."""
    a = norm_axis(axis, x.ndim)
    xs = x.astype(TensorType((), STASH_DTYPES[stash_type]).np_dtype)
    axes = tuple(range(a, x.ndim))
    mean = xs.mean(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(((xs - mean) ** 2).mean(axis=axes, keepdims=True) + epsilon)
    y = (xs - mean) * inv_std * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype), mean, inv_std


register("LayerNormalization", Kind.REDUCTION, _ln_infer, _ln, inputs=(2, 3),
         attrs={"axis": Attr("int", -1), "epsilon": Attr("float", 1e-5),
                "stash_type": Attr("int", 1, choices=tuple(STASH_DTYPES))},
         doc="normalize over axes [axis, rank); outputs Y, Mean, InvStdDev")


def _in_infer(x, scale, bias, *, epsilon):
    same_dtype(x, scale, bias, allowed=FLOAT_DTYPES)
    if x.rank < 3:
        fail(f"input {list(x.shape)} must be (N, C, *spatial)")
    _check_channel_params(x, (scale, bias), ("scale", "B"))
    return x.type


def _instance_norm(x, scale, bias, *, epsilon):
    r = x.ndim
    axes = tuple(range(2, r))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    var = x64.var(axis=axes, keepdims=True)
    y = (x64 - mean) / np.sqrt(var + epsilon) * _channel_view(scale, r) + _channel_view(bias, r)
    return y.astype(x.dtype)


register("InstanceNormalization", Kind.REDUCTION, _in_infer, _instance_norm, inputs=(3, 3),
         attrs={"epsilon": Attr("float", 1e-5)},
         doc="normalize each (n, c) plane over its spatial axes, then scale and shift per channel")


def _lrn_infer(x, *, alpha, beta, bias, size):
    same_dtype(x, allowed=FLOAT_DTYPES)
    if x.rank < 3:
        fail(f"input {list(x.shape)} must be (N, C, *spatial)")
    return like(x)


def _lrn(x, *, alpha, beta, bias, size):
    """Squares summed over a channel window [c - (size-1)//2, c + size//2],
    via a cumulative sum so the cost does not grow with `size`."""
    sq = np.square(x.astype(np.float64))
    lo, hi = (size - 1) // 2, size // 2
    padded = np.pad(sq, [(0, 0), (lo + 1, hi)] + [(0, 0)] * (x.ndim - 2))
    csum = np.cumsum(padded, axis=1)
    window = csum[:, size:] - csum[:, :-size]
    return (x / (bias + alpha / size * window) ** beta).astype(x.dtype)


register("LRN", Kind.OPAQUE, _lrn_infer, _lrn,
         attrs={"alpha": Attr("float", 1e-4), "beta": Attr("float", 0.75), "bias": Attr("float", 1.0),
                "size": Attr("int", check=lambda s: None if s >= 1 else "must be >= 1")},
         doc="local response normalization across channels")
