"""Helpers for the pass tests: run passes on IR text, compare against the interpreter."""
from __future__ import annotations

import textwrap

import numpy as np

from hypothesis import strategies as st

from minidlc.ir import Graph, Kind, TensorType, get_op, interpret, parse_graph, verify
from minidlc.passes.instruments import random_inputs
from minidlc.passes.manager import build_pipeline


def ir(text: str) -> str:
    return textwrap.dedent(text).strip()


def run_passes(graph: Graph, passes: str, **kw) -> Graph:
    return build_pipeline(passes=passes, **kw).run(graph)


def assert_same_results(before: Graph, after: Graph, seeds=(0, 1), rtol=1e-4, atol=1e-5) -> None:
    """The optimized graph computes what the original does (reference interpreter)."""
    verify(after)
    assert [v.type for v in before.inputs] == [v.type for v in after.inputs]
    for seed in seeds:
        feeds = random_inputs(before, seed)
        for want, got in zip(interpret(before, feeds), interpret(after, feeds)):
            assert got.dtype == want.dtype and got.shape == want.shape
            scale = max(1.0, float(np.max(np.abs(want[np.isfinite(want)]), initial=0)))
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, equal_nan=True)


def check_golden(passes: str, before: str, expected: str) -> Graph:
    """Run `passes` on the IR text `before`: the printed result must be `expected`,
    and the result must compute what the input did."""
    source = parse_graph(ir(before))
    after = run_passes(source.copy(), passes)
    assert str(after) == ir(expected), f"got:\n{after}"
    assert_same_results(source, after)
    return after


@st.composite
def mixed_graphs(draw) -> Graph:
    """Random graphs mixing what the passes rewrite: neutral constants, views,
    transposes, casts, matmuls and reductions, over a 3-D input."""
    g = Graph("random")
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=3, max_size=3)))
    v = x = g.add_input("x", TensorType(shape))
    for _ in range(draw(st.integers(1, 8))):
        step = draw(st.sampled_from(["neutral", "subdiv", "reshape", "transpose", "squeeze", "cast",
                                     "matmul", "reduce", "softmax", "unary", "residual", "bn", "conv", "dense"]))
        r, s = v.type.rank, v.type.shape
        if step == "neutral":
            op, c = draw(st.sampled_from([("Mul", 1.0), ("Add", 0.0), ("Sub", 0.0), ("Div", 1.0)]))
            v = g.add(op, [v, g.constant(np.full(s[draw(st.integers(0, r)):], c, np.float32))]).output
        elif step == "subdiv":
            c = draw(st.sampled_from([0.5, 2.0, 3.0, -0.25]))
            v = g.add(draw(st.sampled_from(["Sub", "Div"])), [v, g.constant(np.float32(c))]).output
        elif step == "reshape":
            target = draw(st.sampled_from([[-1], [s[0], -1], [1, -1, s[-1]]]))
            v = g.add("Reshape", [v, g.constant(np.array(target, np.int64))]).output
        elif step == "transpose":
            v = g.add("Transpose", [v], {"perm": draw(st.permutations(range(r)))}).output
        elif step == "squeeze":
            u = g.add("Unsqueeze", [v], {"axes": [draw(st.integers(0, r))]}).output
            v = g.add("Squeeze", [u], {"axes": [i for i, d in enumerate(u.type.shape) if d == 1][:1]}).output
        elif step == "cast":
            mid = draw(st.sampled_from(["f64", "f16", "i32"]))
            v = g.add("Cast", [g.add("Cast", [v], {"to": mid}).output], {"to": "f32"}).output
        elif step == "matmul":
            w = np.random.default_rng(r).standard_normal((s[-1], 3)).astype(np.float32)
            v = g.add("MatMul", [v, g.constant(w)]).output
        elif step == "reduce":
            op = draw(st.sampled_from(["ReduceSum", "ReduceMean", "ReduceMax"]))
            v = g.add(op, [v], {"axes": [draw(st.integers(-r, r - 1))], "keepdims": 1}).output
        elif step == "softmax":
            v = g.add("Softmax", [v], {"axis": -1}).output
        elif step == "unary":
            v = g.add(draw(st.sampled_from(["Relu", "Tanh", "Exp", "Identity", "Neg"])), [v]).output
        elif step == "dense":  # a 2-D MatMul + bias: a Gemm for fuse-layers
            v2 = g.add("Reshape", [v, g.constant(np.array([s[0], -1], np.int64))]).output
            w = np.random.default_rng(5).standard_normal((v2.type.shape[1], 3)).astype(np.float32)
            mm = g.add("MatMul", [v2, g.constant(w)]).output
            v = g.add("Add", [mm, g.constant(np.array([0.5, -1.0, 2.0], np.float32))]).output
        elif step == "bn" and r == 3:
            v = g.add("BatchNormalization", [v, *_bn_params(g, s[1])]).output
        elif step == "conv" and r == 3:
            v = _conv_layer(g, v, draw(st.sampled_from(["BatchNormalization", "Add", None])))
        elif step == "residual" and v.type.numel == x.type.numel:
            v = g.add("Add", [v, g.add("Reshape", [x, g.constant(np.array(s, np.int64))]).output]).output
    g.outputs = [v]
    return g


def check_groups(g: Graph) -> None:
    """Every group has at most one master, and only fusable ops."""
    for n in g.nodes:
        if n.op == "Fused":
            kinds = [get_op(m.op).kind for m in n.body.nodes if m.op != "Constant"]
            assert sum(k in (Kind.OUT_FUSABLE, Kind.REDUCTION) for k in kinds) <= 1
            assert Kind.OPAQUE not in kinds


def _bn_params(g: Graph, channels: int) -> list:
    rng = np.random.default_rng(channels)
    return [g.constant(a.astype(np.float32)) for a in (rng.standard_normal(channels), rng.standard_normal(channels),
                                                       rng.standard_normal(channels), rng.random(channels) + 0.5)]


def _conv_layer(g: Graph, v, after: str | None):
    """[A,B,C] -> [1,A,B,C] -> 1x1 Conv to 2 channels (+ BN or bias Add) -> [2,B,C]."""
    w = np.random.default_rng(3).standard_normal((2, v.type.shape[0], 1, 1)).astype(np.float32)
    y = g.add("Unsqueeze", [v], {"axes": [0]}).output
    y = g.add("Conv", [y, g.constant(w)], {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1],
                                            "group": 1}).output
    if after == "BatchNormalization":
        y = g.add(after, [y, *_bn_params(g, 2)]).output
    elif after == "Add":
        y = g.add(after, [y, g.constant(np.array([[[0.5]], [[-1.0]]], np.float32))]).output
    return g.add("Squeeze", [y], {"axes": [0]}).output
