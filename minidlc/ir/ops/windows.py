"""Sliding-window geometry shared by Conv, ConvTranspose and the pools.

Every windowed op sees its input as (N, C, *spatial) and has, per spatial
axis, a kernel size, a stride, a dilation and two pads (ONNX order: all begins,
then all ends). `Window` checks and completes these once; the reference
implementations then work on a strided *view* of the padded input, shaped
(N, C, *out, *kernel), so no Python loop runs per output element.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..registry import fail


@dataclass(frozen=True)
class Window:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # begins then ends, 2 * len(kernel) entries

    @staticmethod
    def of(kernel, strides=(), dilations=(), pads=()) -> "Window":
        """Complete the optional lists (empty = all ones / all zeros) and check them."""
        n = len(kernel)
        strides = tuple(strides) or (1,) * n
        dilations = tuple(dilations) or (1,) * n
        pads = tuple(pads) or (0,) * (2 * n)
        for name, v, want in (("strides", strides, n), ("dilations", dilations, n), ("pads", pads, 2 * n)):
            if len(v) != want:
                fail(f"{name} has {len(v)} entries, expected {want} for {n} spatial axes")
        if min(kernel, default=1) < 1 or min(strides) < 1 or min(dilations) < 1:
            fail(f"kernel {list(kernel)}, strides {list(strides)} and dilations {list(dilations)} must be positive")
        if min(pads) < 0:
            fail(f"negative pads {list(pads)} are not supported")
        return Window(tuple(kernel), strides, dilations, pads)

    @property
    def rank(self) -> int:
        return len(self.kernel)

    @property
    def extent(self) -> tuple[int, ...]:
        """How far one window reaches along each axis: (k - 1) * d + 1."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations))

    def out_shape(self, spatial, ceil_mode: bool = False) -> tuple[int, ...]:
        """Output spatial shape. With ceil_mode a last, partial window is kept
        unless it would start in the end padding (PyTorch's and ONNX's rule)."""
        out = []
        for i, size in enumerate(spatial):
            room = size + self.pads[i] + self.pads[self.rank + i] - self.extent[i]
            if room < 0:
                fail(f"kernel extent {self.extent[i]} is larger than the padded input ({size} + pads) "
                     f"on spatial axis {i}")
            o = (-(-room // self.strides[i]) if ceil_mode else room // self.strides[i]) + 1
            if ceil_mode and (o - 1) * self.strides[i] >= size + self.pads[i]:
                o -= 1
            out.append(o)
        return tuple(out)


def pad_spatial(x: np.ndarray, begins, ends, value) -> np.ndarray:
    """x padded with `value` on its spatial axes (all axes after the first two)."""
    if not any(begins) and not any(ends):
        return x
    width = [(0, 0), (0, 0)] + list(zip(begins, ends))
    return np.pad(x, width, constant_values=value)


def windows(x: np.ndarray, w: Window, out: tuple[int, ...], value=0) -> np.ndarray:
    """x padded with `value`, viewed as (N, C, *out, *kernel) windows.

    The end padding is grown where ceil_mode needs room for a last partial
    window; such extra cells hold `value` too.
    """
    n = w.rank
    begins = w.pads[:n]
    need = [(o - 1) * s + e for o, s, e in zip(out, w.strides, w.extent)]
    ends = [max(p, need_i - size - b) for p, need_i, size, b in zip(w.pads[n:], need, x.shape[2:], begins)]
    xp = pad_spatial(x, begins, ends, value)
    st = xp.strides[2:]
    shape = xp.shape[:2] + tuple(out) + w.kernel
    strides = xp.strides[:2] + tuple(a * s for a, s in zip(st, w.strides)) + tuple(a * d for a, d in zip(st, w.dilations))
    return as_strided(xp, shape, strides, writeable=False)
