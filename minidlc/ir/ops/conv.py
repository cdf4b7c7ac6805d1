"""Convolutions: Conv and ConvTranspose over 1, 2 or 3 spatial axes.

Both take explicit `pads` (the ONNX frontend resolves auto_pad and
ConvTranspose's output_shape); empty `strides`/`dilations`/`pads` mean all ones
/ all zeros. The kernel shape is the weight's shape, so there is no
kernel_shape attribute. Conv is out-fusable (a bias add or activation can run
in its epilogue); ConvTranspose is opaque.
"""
from __future__ import annotations

import numpy as np

from ..registry import Attr, Kind, fail, register
from ..types import FLOAT_DTYPES, TensorType
from .common import same_dtype
from .windows import Window, windows

_GEOMETRY = {
    "strides": Attr("ints", ()),
    "pads": Attr("ints", ()),
    "dilations": Attr("ints", ()),
    "group": Attr("int", 1, check=lambda g: None if g >= 1 else "must be >= 1"),
}


def _check_common(x, w, b, group: int, w_channel_axis: int):
    """Shared checks; returns the weight's channel count per group."""
    same_dtype(x, w, b, allowed=FLOAT_DTYPES)
    if x.rank < 3 or w.rank != x.rank:
        fail(f"input {list(x.shape)} and weight {list(w.shape)} must both be (N, C, *spatial) "
             "with 1 to 3 spatial axes")
    channels = x.shape[1]
    if channels % group:
        fail(f"{channels} input channels are not divisible by group={group}")
    return w.shape[w_channel_axis]


def _check_bias(b, out_channels: int):
    if b is not None and b.shape != (out_channels,):
        fail(f"bias has shape {list(b.shape)}, expected [{out_channels}]")


def _conv_infer(x, w, b=None, *, strides, pads, dilations, group):
    per_group = _check_common(x, w, b, group, 1)
    if per_group * group != x.shape[1]:
        fail(f"weight {list(w.shape)} expects {per_group * group} input channels "
             f"(group={group}), the input has {x.shape[1]}")
    if w.shape[0] % group:
        fail(f"{w.shape[0]} output channels are not divisible by group={group}")
    _check_bias(b, w.shape[0])
    win = Window.of(w.shape[2:], strides, dilations, pads)
    return TensorType((x.shape[0], w.shape[0]) + win.out_shape(x.shape[2:]), x.dtype)


def _conv(x, w, b=None, *, strides, pads, dilations, group):
    """im2col as a strided view, then one tensordot (a BLAS matmul) per group."""
    win = Window.of(w.shape[2:], strides, dilations, pads)
    out_sp = win.out_shape(x.shape[2:])
    cols = windows(x, win, out_sp)  # (N, C, *out, *k)
    n = win.rank
    cg, mg = x.shape[1] // group, w.shape[0] // group
    k_axes = list(range(2 + n, 2 + 2 * n))
    parts = []
    for g in range(group):
        y = np.tensordot(cols[:, g * cg:(g + 1) * cg], w[g * mg:(g + 1) * mg],
                         axes=([1] + k_axes, [1] + list(range(2, 2 + n))))  # (N, *out, Mg)
        parts.append(np.moveaxis(y, -1, 1))
    y = parts[0] if group == 1 else np.concatenate(parts, axis=1)
    if b is not None:
        y = y + b.reshape((-1,) + (1,) * n)
    return np.ascontiguousarray(y, dtype=x.dtype)


register("Conv", Kind.OUT_FUSABLE, _conv_infer, _conv, inputs=(2, 3), attrs=dict(_GEOMETRY),
         doc="N-d convolution (cross-correlation) with groups, strides, dilations, explicit pads, optional bias")


def _transpose_out(x_spatial, win: Window, output_padding) -> tuple[int, ...]:
    n = win.rank
    return tuple(s * (i - 1) + op + e - win.pads[a] - win.pads[n + a]
                 for a, (i, s, e, op) in enumerate(zip(x_spatial, win.strides, win.extent, output_padding)))


def _output_padding(output_padding, n: int) -> tuple[int, ...]:
    out = tuple(output_padding) or (0,) * n
    if len(out) != n:
        fail(f"output_padding has {len(out)} entries, expected {n}")
    return out


def _convt_infer(x, w, b=None, *, strides, pads, dilations, group, output_padding):
    if w.shape[0] != x.shape[1]:
        fail(f"weight {list(w.shape)} expects {w.shape[0]} input channels, the input has {x.shape[1]}")
    per_group = _check_common(x, w, b, group, 1)
    _check_bias(b, per_group * group)
    win = Window.of(w.shape[2:], strides, dilations, pads)
    out = _transpose_out(x.shape[2:], win, _output_padding(output_padding, win.rank))
    if min(out) < 1:
        fail(f"output spatial shape {list(out)} is empty (pads too large)")
    return TensorType((x.shape[0], per_group * group) + out, x.dtype)


def _conv_transpose(x, w, b=None, *, strides, pads, dilations, group, output_padding):
    """Scatter form: each kernel tap adds x @ W[tap] into a strided slice of
    the (unpadded) output; then the pads are cropped off. One matmul per tap."""
    win = Window.of(w.shape[2:], strides, dilations, pads)
    n = win.rank
    out_pad = _output_padding(output_padding, n)
    full = [s * (i - 1) + e + op for i, s, e, op in zip(x.shape[2:], win.strides, win.extent, out_pad)]
    cg, mg = x.shape[1] // group, w.shape[1]
    y = np.zeros((x.shape[0], mg * group, *full), dtype=np.result_type(x.dtype, np.float32))
    for g in range(group):
        xg = x[:, g * cg:(g + 1) * cg]
        for tap in np.ndindex(*win.kernel):
            contrib = np.tensordot(xg, w[(slice(g * cg, (g + 1) * cg), slice(None)) + tap], axes=([1], [0]))
            where = tuple(slice(t * d, t * d + s * (i - 1) + 1, s)
                          for t, d, s, i in zip(tap, win.dilations, win.strides, x.shape[2:]))
            y[(slice(None), slice(g * mg, (g + 1) * mg)) + where] += np.moveaxis(contrib, -1, 1)
    crop = tuple(slice(win.pads[a], full[a] - win.pads[n + a]) for a in range(n))
    y = y[(slice(None), slice(None)) + crop]
    if b is not None:
        y = y + b.reshape((-1,) + (1,) * n)
    return np.ascontiguousarray(y, dtype=x.dtype)


register("ConvTranspose", Kind.OPAQUE, _convt_infer, _conv_transpose, inputs=(2, 3),
         attrs={**_GEOMETRY, "output_padding": Attr("ints", ())},
         doc="transposed convolution (the gradient of Conv); pads crop the full output, "
             "output_padding extends its end")
