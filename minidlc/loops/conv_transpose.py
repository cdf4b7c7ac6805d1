"""Lowering of ConvTranspose in gather form: each output element sums its own taps.

The reference scatters (each input pixel adds a kernel-sized patch into the
output); a kernel cannot scatter without races, so each output element
gathers instead. Output position o along an axis receives tap k from input
position i where i * stride + k * dilation - pad = o, that is

    t = o + pad - k * dilation,   valid when t >= 0, t % stride == 0, t / stride < n_in

    y[n, m, o] = bias[m] + sum over c (the group's input channels), k (kernel cells)
                 of  valid ? x[n, c, t / stride] * w[c, m % M_g, k] : 0

Only 1/stride of the taps along an axis are valid, so this does stride^d
times the multiply-adds it needs: simple and native, not fast.
"""
from __future__ import annotations

from ..ir import Node
from ..ir.ops.windows import Window
from .ir import Binary, Compare, Const, Expr, Select, Stmt, Store, add, const, loop_nest, mul, row_major, seq
from .lower import Lowerer, accumulate, register_lowering, with_accumulators
from .rules import FLOATS, Unsupported


@register_lowering("ConvTranspose")
def _conv_transpose(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    dt = y.type.dtype
    if dt not in FLOATS:
        raise Unsupported(f"ConvTranspose on {dt}")
    a = node.attrs
    win = Window.of(w.type.shape[2:], a["strides"], a["dilations"], a["pads"])
    group, channels = a["group"], x.type.shape[1]
    cg, mg = channels // group, w.type.shape[1]
    spatial_in, kernel = x.type.shape[2:], w.type.shape[2:]
    n, m, *out = lw.vars(y.type.rank, "o")
    c, cells = lw.var("c"), lw.vars(len(kernel), "k")
    channel = add(mul(Binary("/", m, const(mg)), const(cg)), c)
    valid, src = None, []
    for d, (o, k) in enumerate(zip(out, cells)):
        t = Binary("-", add(o, const(win.pads[d])), mul(k, const(win.dilations[d])))
        stride, size = win.strides[d], spatial_in[d]
        here = Binary("and", Compare(">=", t, const(0)), Compare("<", t, const(size * stride)))
        if stride > 1:
            here = Binary("and", here, Compare("==", Binary("mod", t, const(stride)), const(0)))
        valid = here if valid is None else Binary("and", valid, here)
        # clamped: in bounds whatever t is (the value is used only where valid)
        src.append(Binary("min", Binary("/", Binary("max", t, const(0)), const(stride)), const(size - 1)))
    term = mul(lw.read(x, [n, channel] + src), lw.read(w, [channel, Binary("%", m, const(mg))] + cells))
    acc, body, total = accumulate(lw, dt, Const(0.0, dt), [(c, cg)] + list(zip(cells, kernel)),
                                  lambda s: add(s, Select(valid, term, Const(0.0, dt))), lambda s: s)
    value: Expr = total if bias is None else add(total, lw.read(bias, [m]))
    buf = lw.buffer_for(y)
    lw.buffers[id(y)] = buf
    store = Store(buf, row_major([n, m] + out, y.type.shape), value)
    return loop_nest([n, m] + out, list(y.type.shape), with_accumulators([(acc, dt)], seq(body, store)))
