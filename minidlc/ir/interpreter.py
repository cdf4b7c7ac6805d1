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
        ins = [None if v is None else env[id(v)] for v in node.inputs]
        try:
            outs = node.opdef.evaluate(ins, node.attrs)
        except Exception as e:
            raise IRError(f"{node.describe()} failed in the reference interpreter: {type(e).__name__}: {e}") from e
        for v, a in zip(node.outputs, outs):
            a = np.asarray(a)
            if a.shape != v.type.shape or a.dtype != v.type.np_dtype:
                raise IRError(f"{node.describe()}: reference implementation returned "
                              f"{a.dtype}{list(a.shape)}, expected {v.type}")
            env[id(v)] = a
            if on_value is not None:
                on_value(v, a)
    return [env[id(v)] for v in graph.outputs]
