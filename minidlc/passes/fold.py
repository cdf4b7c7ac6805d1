"""Constant folding: evaluate at compile time what depends only on constants.

Walking the nodes in order, a node whose inputs are all constants is run
through its op's NumPy reference implementation (`opdef.evaluate`, the same
code the interpreter runs) and replaced by Constant nodes. `Shape` and `Size`
need no constant input: their result is in the input's static type. Because
the walk is in topological order, a whole shape computation
(Shape -> Gather -> Concat -> Reshape's shape input) folds in one sweep.

Folding must not blow up the model: a result is materialized only when it
takes no more bytes than its inputs together (or is tiny), so `Expand` of a
scalar to a large tensor stays an op that a kernel computes on the fly, and
the DequantizeLinear of int8 weights stays: folded, the weights would take
four times the bytes as f32.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..ir.types import TensorType
from .dce import remove_dead_nodes
from .manager import register_pass

# Results up to this many bytes are always folded (shape vectors, scalars).
ALWAYS_FOLD_BYTES = 256
# Ops computed from the input's type alone.
SHAPE_OPS = ("Shape", "Size")


def fold_node(graph: Graph, node: Node, always_fold_bytes: int = ALWAYS_FOLD_BYTES) -> list[np.ndarray] | None:
    """The output arrays of `node` if it can and should be folded, else None."""
    if node.op == "Constant" or node.body is not None or node.op.startswith("Random"):
        return None
    if node.op in SHAPE_OPS:
        return [graph.static_value(node.outputs[0])]
    args = [None if v is None else graph.const_value(v) for v in node.inputs]
    if any(a is None and v is not None for a, v in zip(args, node.inputs)):
        return None
    budget = max(always_fold_bytes, sum(a.nbytes for a in args if a is not None))
    if sum(v.type.nbytes for v in node.outputs) > budget:
        return None
    try:
        with np.errstate(all="ignore"):
            outs = node.opdef.evaluate(args, node.attrs)
    except Exception:  # noqa: BLE001 - leave it to run time, where the error names the node
        return None
    outs = [np.asarray(a) for a in outs[:len(node.outputs)]]
    if any(TensorType.of(a) != v.type for a, v in zip(outs, node.outputs)):
        return None
    return outs


@register_pass
class ConstantFolding:
    name = "fold"

    def __init__(self, always_fold_bytes: int = ALWAYS_FOLD_BYTES):
        self.always_fold_bytes = always_fold_bytes

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        changed = False
        for node in list(graph.nodes):
            outs = fold_node(graph, node, self.always_fold_bytes)
            if outs is None:
                continue
            if len(outs) == 1:  # becomes a Constant in place: the value keeps its name and readers
                node.op, node.inputs, node.attrs = "Constant", [], {"value": outs[0]}
            else:
                for v, a in zip(node.outputs, outs):
                    graph.replace_all_uses(v, graph.constant(a, name=v.name, loc=v.loc, before=node))
            changed = True
        if changed:
            remove_dead_nodes(graph)
        return graph, changed
