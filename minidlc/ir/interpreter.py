"""Run a graph with each op's NumPy reference implementation (the oracle)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .graph import Graph
from .registry import IRError


def interpret(graph: Graph, args: Sequence[np.ndarray], on_value=None) -> list[np.ndarray]:
    """Evaluate `graph` on `args` (one array per graph input, already checked).

    `on_value(value, array)` is called for every value computed, which the
    numerics checker uses to find the first tensor that diverges.
    """
    env = {id(v): a for v, a in zip(graph.inputs, args)}
    for node in graph.nodes:
        outs = evaluate_node(node, [None if v is None else env[id(v)] for v in node.inputs])
        for v, a in zip(node.outputs, outs):
            a = np.asarray(a)
            if a.shape != v.type.shape or a.dtype != v.type.np_dtype:
                raise IRError(f"{node.describe()}: reference implementation returned "
                              f"{a.dtype}{list(a.shape)}, expected {v.type}")
            env[id(v)] = a
            if on_value is not None:
                on_value(v, a)
    return [env[id(v)] for v in graph.outputs]


def evaluate_node(node, ins: Sequence[np.ndarray | None]) -> list:
    """Run one node's NumPy implementation. A failure (say, a Gather index out
    of range in the data) is an IRError that names the node, never a bare
    NumPy traceback."""
    try:
        return node.opdef.evaluate(ins, node.attrs)
    except Exception as e:
        raise IRError(f"{node.describe()} failed in its NumPy implementation: {type(e).__name__}: {e}") from e
