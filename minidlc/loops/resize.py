"""Lowering of Resize: per-axis tap tables computed at compile time.

Interpolation is separable (ir/ops/resize.py): along each resized axis,
output position o reads T source positions idx[o, t] with weights w[o, t]
(T = 1 for nearest, 2 for linear, 4 for cubic, more with antialias). The
shapes and the geometry are static, so the tables are computed once, by the
reference's own `taps`, and become constant kernel parameters; the kernel is

    for each output element o:
        y[o] = sum over taps (t_a) of  prod_a w_a[o_a, t_a] * x[idx_a[o_a, t_a] ...]

(nearest: y[o] = x[idx[o] ...], exact for every dtype). tf_crop_and_resize
writes its extrapolation value where any axis samples outside the input.
Integer outputs round half to even and saturate, as the reference does.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import DTYPES, Node
from ..ir.ops.resize import _geometry, source_coordinates, taps
from .ir import Allocate, Binary, Call, Cast, Const, Expr, If, Load, Stmt, Store, add, cast, const, loop_nest, mul, row_major, \
    seq
from .lower import Lowerer, register_lowering
from .rules import FLOATS, STORAGE_DTYPES, Unsupported, clamp_index

MAX_TAPS = 256  # more taps per output element (a large antialiased downscale) is left to NumPy


@register_lowering("Resize")
def _resize(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    x, y = node.inputs[0], node.outputs[0]
    a = node.attrs
    dt = x.type.dtype
    scales, sizes = _geometry(x.type.shape, a["scales"], a["sizes"])
    nearest = a["mode"] == "nearest"
    acc_dt = dt if dt in FLOATS else "f32" if dt in STORAGE_DTYPES else "f64"
    cmode = a["coordinate_transformation_mode"]
    out, taps_of, outside = lw.vars(y.type.rank, "o"), {}, None
    for axis, (scale, n_out) in enumerate(zip(scales, sizes)):
        n_in = x.type.shape[axis]
        roi = (a["roi"][axis], a["roi"][x.type.rank + axis]) if cmode == "tf_crop_and_resize" else (0.0, 1.0)
        if n_out == n_in and math.isclose(scale, 1.0) and roi == (0.0, 1.0):
            continue  # the reference leaves this axis alone too
        src = source_coordinates(cmode, n_out, n_in, scale, roi)
        idx, w = taps(src, n_in, scale, a)
        taps_of[axis] = (lw.constant_param(f"{y.name}_idx{axis}", idx.astype(np.int64), "i64"),
                         None if nearest else lw.constant_param(f"{y.name}_w{axis}", w.astype(DTYPES[acc_dt]), acc_dt),
                         idx.shape[1], n_in)
        if cmode == "tf_crop_and_resize" and ((src < 0) | (src > n_in - 1)).any():
            mask = lw.constant_param(f"{y.name}_outside{axis}", ((src < 0) | (src > n_in - 1)), "bool")
            here = Load(mask, out[axis], "bool")
            outside = here if outside is None else Binary("or", outside, here)
    if math.prod(t for _, _, t, _ in taps_of.values()) > MAX_TAPS:
        raise Unsupported(f"Resize with more than {MAX_TAPS} taps per output element")
    tap = {axis: lw.var("t") for axis in taps_of}

    def source(axis: int) -> Expr:
        table, _, count, n_in = taps_of[axis]
        i = Load(table, add(mul(out[axis], const(count)), tap[axis]), "i64")
        return clamp_index(i, n_in)  # the tables are clamped already: this proves it

    element = lw.read(x, [source(ax) if ax in taps_of else o for ax, o in enumerate(out)])
    buf = lw.buffer_for(y)
    at = row_major(list(out), y.type.shape)
    if nearest:  # one tap, weight 1: the element itself
        body: Stmt = Store(buf, at, element)
        body = loop_nest([tap[ax] for ax in taps_of], [1] * len(taps_of), body)
    else:
        acc, zero = lw.fresh("acc"), const(0)
        weight = None
        for axis, (_, wt, count, _) in taps_of.items():
            wv = Load(wt, add(mul(out[axis], const(count)), tap[axis]), acc_dt)
            weight = wv if weight is None else mul(weight, wv)
        value = cast(element, acc_dt)
        term = value if weight is None else mul(weight, value)
        total: Expr = Load(acc, zero, acc_dt)
        if dt != acc_dt:  # integers round half to even (and saturate); f16 and bf16 convert
            total = Cast(total if dt in STORAGE_DTYPES else Call("round", (total,)), dt)
        body = Allocate(acc, acc_dt, 1, seq(
            Store(acc, zero, Const(0.0, acc_dt)),
            loop_nest([tap[ax] for ax in taps_of], [taps_of[ax][2] for ax in taps_of],
                      Store(acc, zero, add(Load(acc, zero, acc_dt), term))),
            Store(buf, at, total)))
    if outside is not None:
        body = seq(body, _extrapolate(buf, at, outside, a["extrapolation_value"], dt))
    lw.buffers[id(y)] = buf
    return loop_nest(list(out), list(y.type.shape), body)


def _extrapolate(buf: str, at: Expr, outside: Expr, value: float, dt: str) -> Stmt:
    if dt not in FLOATS and dt not in STORAGE_DTYPES:
        info = np.iinfo(DTYPES[dt])
        value = int(np.clip(np.round(value), info.min, info.max))
    return If(outside, Store(buf, at, Const(value, dt)))
