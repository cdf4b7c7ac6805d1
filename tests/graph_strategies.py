"""Hypothesis strategies for random, well-typed graphs (used by IR and pass tests)."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from minidlc.ir import Graph, TensorType

UNARY = ["Neg", "Abs", "Exp", "Tanh", "Sigmoid", "Relu", "Sqrt", "Floor", "Softsign", "Identity"]
BINARY = ["Add", "Sub", "Mul", "Max", "Min"]


@st.composite
def elementwise_graphs(draw, max_nodes: int = 8) -> Graph:
    """A graph of unary and broadcasting binary ops over f32 inputs and constants."""
    g = Graph("random")
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    values = [g.add_input("x", TensorType(shape))]
    if draw(st.booleans()):
        values.append(g.add_input("y", TensorType(shape[1:] or shape)))
    for _ in range(draw(st.integers(1, max_nodes))):
        choice = draw(st.sampled_from(["unary", "binary", "const"]))
        a = draw(st.sampled_from(values))
        if choice == "unary":
            op = draw(st.sampled_from(UNARY))
            if op == "Sqrt":
                a = g.add("Abs", [a]).output
            values.append(g.add(op, [a]).output)
        elif choice == "binary":
            values.append(g.add(draw(st.sampled_from(BINARY)), [a, draw(st.sampled_from(values))]).output)
        else:
            cshape = a.type.shape[draw(st.integers(0, a.type.rank)):]
            arr = np.asarray(draw(st.floats(-3, 3, width=32)), np.float32) * np.ones(cshape, np.float32)
            values.append(g.add(draw(st.sampled_from(BINARY)), [a, g.constant(arr)]).output)
    outs = draw(st.lists(st.sampled_from(values[len(g.inputs):] or values), min_size=1, max_size=2, unique=True))
    g.outputs = outs
    return g


def random_feeds(graph: Graph, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(v.type.shape).astype(v.type.np_dtype) for v in graph.inputs]
