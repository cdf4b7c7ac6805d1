"""Integer ops: a QDQ pattern around Conv, MatMul or Gemm becomes an integer product.

A quantized ONNX model (PyTorch's or onnxruntime's quantizers write this
form, and so does our `quantize` pass) says "int8" with DequantizeLinear
nodes in front of a float op:

    Conv(DequantizeLinear(xq, sx, zx), DequantizeLinear(wq, sw, zw), b)

Run as written, that is a float convolution of dequantized tensors. The rules
here make it what the quantizer meant, an exact integer product in i32 and
one multiply per output channel:

    qdq-conv     -> Mul(Cast(ConvInteger(xq, wq, zx, zw), f32), sx * sw) + b
    qdq-matmul   -> Mul(Cast(MatMulInteger(aq, bq, za, zb), f32), sa * sb)
    qdq-gemm     -> the same, B transposed at compile time when transB=1,
                    alpha folded into the multiplier, beta * C added

The Cast, Mul, bias add, an activation, and the QuantizeLinear in front of
the next quantized op are elementwise: fusion runs them in the product's
epilogue, so the tensors between quantized layers are 8-bit in memory.
Activations must be quantized per tensor; weights (constants) may be
quantized per output channel.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Value
from .manager import Tolerance, register_pass
from .rewrite import Const, Match, Pat, RewritePass, Rule

_DQ_X = Pat("DequantizeLinear", ("xq", Const("xs"), "..."), name="dqx")
_DQ_W = Pat("DequantizeLinear", ("wq", Const("ws"), "..."), name="dqw")


def _zero_point(graph: Graph, dq: Node) -> tuple[Value | None, str | None]:
    """A DequantizeLinear's zero point (None when absent), or why it cannot be used."""
    zp = dq.inputs[2] if len(dq.inputs) > 2 else None
    if zp is not None and graph.const_value(zp) is None:
        return None, f"the zero point of %{dq.outputs[0].name} is computed at run time"
    return zp, None


def _per_channel_axis(graph: Graph, dq: Node) -> int | None:
    """The axis a DequantizeLinear's scale varies along, or None for one scale."""
    scale = graph.const_value(dq.inputs[1])
    if scale.size == 1:
        return None
    return dq.attrs["axis"] % dq.inputs[0].type.rank


def _check(graph: Graph, m: Match, weight_axis: int | None) -> str | None:
    """Why the match cannot become an integer product, or None.
    `weight_axis` is the axis of the weight that is the output channel."""
    dqx, dqw = m.nodes["dqx"], m.nodes["dqw"]
    for dq in (dqx, dqw):
        if dq.inputs[0].type.dtype not in ("u8", "i8"):
            return f"%{dq.inputs[0].name} is {dq.inputs[0].type.dtype}, not 8-bit"
        if dq.attrs["block_size"]:
            return "blocked quantization"
        if dq.outputs[0].type.dtype != "f32":
            return f"%{dq.outputs[0].name} is not f32"
        _, why = _zero_point(graph, dq)
        if why:
            return why
    if _per_channel_axis(graph, dqx) is not None:
        return "the activation is quantized per channel (integer products need one scale for it)"
    axis = _per_channel_axis(graph, dqw)
    if axis is not None and axis != weight_axis:
        return f"the weight is quantized along axis {axis}, not its output channels"
    return None


def _inputs(graph: Graph, m: Match, wq: Value, w_zp: Value | None) -> list[Value | None]:
    """The integer product's inputs: operands, then zero points (a zero zero point is left out)."""
    x_zp, _ = _zero_point(graph, m.nodes["dqx"])
    zps = [None if z is None or not np.any(graph.const_value(z)) else z for z in (x_zp, w_zp)]
    out = [m["xq"], wq] + zps
    while out[-1] is None:
        out.pop()
    return out


def _multiplier(m: Match, shape: tuple[int, ...], factor: float = 1.0) -> np.ndarray:
    """sx * sw (per channel: reshaped to broadcast along the output channels) in f32."""
    sx, sw = m.const("xs").astype(np.float64), m.const("ws").astype(np.float64)
    mult = (factor * float(sx.reshape(())) * sw.reshape(-1)).astype(np.float32)
    m.explain(f"requantization multiplier s_x·s_w = {float(sx.reshape(())):.4g} × "
              f"{'per-channel ' if mult.size > 1 else ''}s_w" + (f" (× alpha {factor:g})" if factor != 1 else ""))
    return mult.reshape(shape) if mult.size > 1 else mult.reshape(())


def _scaled(m: Match, acc: Value, mult: np.ndarray) -> Value:
    return m.add("Mul", [m.add("Cast", [acc], {"to": "f32"}), m.constant(mult, "multiplier")])


def _conv_check(graph: Graph, m: Match) -> str | None:
    bias = m.root.inputs[2] if len(m.root.inputs) > 2 else None
    if bias is not None and graph.const_value(bias) is None:
        return "the bias is computed at run time"
    return _check(graph, m, 0)


def _conv(graph: Graph, m: Match) -> Value:
    conv = m.root
    w_zp, _ = _zero_point(graph, m.nodes["dqw"])
    acc = m.add("ConvInteger", _inputs(graph, m, m["wq"], w_zp), dict(conv.attrs))
    channels = (1, -1) + (1,) * (conv.outputs[0].type.rank - 2)
    y = _scaled(m, acc, _multiplier(m, channels))
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    if bias is not None:
        y = m.add("Add", [y, m.constant(graph.const_value(bias).reshape(channels), "bias")])
    return y


def _matmul_check(graph: Graph, m: Match) -> str | None:
    b = m.root.inputs[1]
    if b.type.rank != 2:
        return "B is not a matrix"
    if graph.const_value(m["wq"]) is None and _per_channel_axis(graph, m.nodes["dqw"]) is not None:
        return "B is computed at run time and quantized per column"
    return _check(graph, m, 1)


def _matmul(graph: Graph, m: Match) -> Value:
    w_zp, _ = _zero_point(graph, m.nodes["dqw"])
    acc = m.add("MatMulInteger", _inputs(graph, m, m["wq"], w_zp))
    return _scaled(m, acc, _multiplier(m, (-1,)))


def _gemm_check(graph: Graph, m: Match) -> str | None:
    a = m.root.attrs
    if a["transA"]:
        return "transA=1"
    if a["transB"] and graph.const_value(m["wq"]) is None:
        return "transB=1 with B computed at run time"
    return _check(graph, m, 0 if a["transB"] else 1)


def _gemm(graph: Graph, m: Match) -> Value:
    a = m.root.attrs
    wq, w_zp = m["wq"], _zero_point(graph, m.nodes["dqw"])[0]
    if a["transB"]:  # B as (K, N): transposed once, here
        wq = m.constant(np.ascontiguousarray(graph.const_value(wq).T), "weight_t")
    acc = m.add("MatMulInteger", _inputs(graph, m, wq, w_zp))
    y = _scaled(m, acc, _multiplier(m, (-1,), a["alpha"]))
    c = m.root.inputs[2] if len(m.root.inputs) > 2 else None
    if c is not None and a["beta"] != 0:
        y = m.add("Add", [y, c if a["beta"] == 1 else m.add("Mul", [c, m.constant(np.float32(a["beta"]), "beta")])])
    return y


RULES = [
    Rule("qdq-conv", Pat("Conv", (_DQ_X, _DQ_W, "...")), _conv, _conv_check),
    Rule("qdq-matmul", Pat("MatMul", (_DQ_X, _DQ_W)), _matmul, _matmul_check),
    Rule("qdq-gemm", Pat("Gemm", (_DQ_X, _DQ_W, "...")), _gemm, _gemm_check),
]


@register_pass
class IntegerOps(RewritePass):
    name = "integer-ops"
    rules = RULES
    # integer products are exact where the float ones round: a value on a
    # rounding boundary may requantize one step the other way, and move what
    # is computed from it by about that step
    tolerance = Tolerance(rtol=1e-2, atol=1e-2, int_steps=1,
                          why="exact integer products may requantize a boundary value one step differently")
