"""Layer fusion: fold whole layers into their neighbours' weights, as rules.

    conv-bn            BatchNormalization(Conv(x, W, b))  -> Conv(x, W*s, (b-mean)*s + B)
                       with s = scale / sqrt(var + eps), per output channel
    bn-affine          a standalone BatchNormalization     -> x * s + (B - mean*s)  (Mul, Add)
    matmul-add-gemm    MatMul(a, b) + c, a and b matrices  -> Gemm(a, b, c)
    conv-add-bias      Conv(x, W) + per-channel constant   -> Conv(x, W, b + bias)

The new weights are computed here with NumPy (in float64, rounded once to the
weight dtype), so no BatchNormalization is left for a kernel to run. A rule
that would duplicate work (the Conv or MatMul output has other readers) does
not fire.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Value
from .manager import register_pass
from .rewrite import Const, Match, Pat, RewritePass, Rule, all_of

_BN_PARAMS = (Const("scale"), Const("B"), Const("mean"), Const("var"))


def _only_reader(name: str):
    """A check: the node bound as `name` feeds only the root (so fusing duplicates nothing)."""

    def check(graph: Graph, m: Match) -> str | None:
        out = m.nodes[name].outputs[0]
        uses = graph.use_counts().get(out, 0)
        return None if uses == 1 else f"%{out.name} has {uses} readers; fusing would duplicate {m.nodes[name].op}"

    return check


def _const_conv_bias(graph: Graph, m: Match) -> str | None:
    conv = m.nodes["conv"]
    if len(conv.inputs) == 3 and conv.inputs[2] is not None and graph.const_value(conv.inputs[2]) is None:
        return "the conv bias is not a constant"
    return None


def _conv_bias(graph: Graph, m: Match) -> np.ndarray:
    conv = m.nodes["conv"]
    b = graph.const_value(conv.inputs[2]) if len(conv.inputs) == 3 else None
    return np.zeros(conv.outputs[0].type.shape[1], np.float64) if b is None else b.astype(np.float64)


def _bn_scale_shift(m: Match) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (s, t) with BN(x) = x * s + t, in float64."""
    eps = m.root.attrs["epsilon"]
    s = m.const("scale").astype(np.float64) / np.sqrt(m.const("var").astype(np.float64) + eps)
    t = m.const("B").astype(np.float64) - m.const("mean").astype(np.float64) * s
    g, mu, var, beta = (float(m.const(k).reshape(-1)[0]) for k in ("scale", "mean", "var", "B"))
    m.explain(f"s = γ/√(σ²+ε), t = β − μ·s per channel ({s.size} channels); channel 0: γ={g:.4g}, σ²={var:.4g}, "
              f"ε={eps:.3g}, μ={mu:.4g}, β={beta:.4g} → s={s[0]:.4g}, t={t[0]:.4g}")
    return s, t


def _rebuild_conv(m: Match, w: Value, b: np.ndarray):
    """The matched conv again, with weights `w` and the constant bias `b`."""
    conv = m.nodes["conv"]
    bias = m.constant(b.astype(conv.outputs[0].type.np_dtype), "bias")
    return m.add("Conv", [m["x"], w, bias], dict(conv.attrs))


def _conv_bn(graph: Graph, m: Match):
    s, t = _bn_scale_shift(m)
    w = m.const("w").astype(np.float64) * s.reshape((-1,) + (1,) * (m["w"].type.rank - 1))
    b = _conv_bias(graph, m)
    m.explain(f"w' = w·s (w {m['w'].type}), b' = b·s + t = (b − μ)·γ/√(σ²+ε) + β; "
              f"channel 0: w[0,0,...] {m.const('w').reshape(len(s), -1)[0, 0]:.4g} → {w.reshape(len(s), -1)[0, 0]:.4g}, "
              f"b {b[0]:.4g} → {b[0] * s[0] + t[0]:.4g}")
    return _rebuild_conv(m, m.constant(w.astype(m["w"].type.np_dtype), "weight"), b * s + t)


def _bn_affine(graph: Graph, m: Match):
    s, t = _bn_scale_shift(m)
    m.explain("BN(x) = x·s + t: a Mul and an Add")
    t_ = m.root.outputs[0].type
    view = (-1,) + (1,) * (t_.rank - 2)
    scaled = m.add("Mul", [m["x"], m.constant(s.reshape(view).astype(t_.np_dtype), "scale")])
    return m.add("Add", [scaled, m.constant(t.reshape(view).astype(t_.np_dtype), "shift")])


def _gemm_applies(graph: Graph, m: Match) -> str | None:
    a, b, c = m["a"].type, m["b"].type, m["c"].type
    if a.rank != 2 or b.rank != 2:
        return f"MatMul operands {a} and {b} are not both matrices"
    mn = (a.shape[0], b.shape[1])
    if c.rank > 2 or np.broadcast_shapes(c.shape, mn) != mn:
        return f"the bias {c} does not broadcast to [{mn[0]},{mn[1]}] without growing it"
    return None


def _gemm(graph: Graph, m: Match):
    return m.add("Gemm", [m["a"], m["b"], m["c"]])


def _per_channel(graph: Graph, m: Match) -> np.ndarray | None:
    """The Add's constant as one value per output channel, or None if it is not."""
    out = m.nodes["conv"].outputs[0].type
    b = m.const("b")
    if b.ndim > out.rank:
        return None
    b = b.reshape((1,) * (out.rank - b.ndim) + b.shape)
    if b.shape[0] != 1 or any(d != 1 for d in b.shape[2:]) or b.shape[1] not in (1, out.shape[1]):
        return None
    return np.broadcast_to(b.reshape(-1).astype(np.float64), (out.shape[1],))


def _is_channel_bias(graph: Graph, m: Match) -> str | None:
    return None if _per_channel(graph, m) is not None else f"{m['b'].type} is not a per-channel bias"


def _conv_add_bias(graph: Graph, m: Match):
    b, c = _conv_bias(graph, m), _per_channel(graph, m)
    m.explain(f"b' = b + c per output channel ({b.size} channels); channel 0: {b[0]:.4g} + {c[0]:.4g} = {b[0] + c[0]:.4g}")
    return _rebuild_conv(m, m["w"], b + c)


_CONV = Pat("Conv", ("x", Const("w"), "..."), name="conv")

RULES: list[Rule] = [
    Rule("conv-bn", Pat("BatchNormalization", (_CONV, *_BN_PARAMS)), _conv_bn,
         all_of(_only_reader("conv"), _const_conv_bias)),
    Rule("bn-affine", Pat("BatchNormalization", ("x", *_BN_PARAMS)), _bn_affine),
    Rule("matmul-add-gemm", Pat("Add", (Pat("MatMul", ("a", "b"), name="mm"), "c")), _gemm,
         all_of(_gemm_applies, _only_reader("mm"))),
    Rule("conv-add-bias", Pat("Add", (_CONV, Const("b"))), _conv_add_bias,
         all_of(_is_channel_bias, _only_reader("conv"), _const_conv_bias)),
]


@register_pass
class FuseLayers(RewritePass):
    name = "fuse-layers"
    rules = RULES
