"""Common subexpression elimination: compute each distinct expression once.

Two nodes are the same expression when they apply the same op, with equal
attributes, to the same input values. Walking the nodes in order, each node's
key is looked up in a table of nodes seen before; on a hit, readers of the
later node are redirected to the earlier one. Constants are keyed by their
dtype, shape and bytes, so equal weights are shared too (hashed by a few
elements, compared whole only when those match: hashing every byte of a
model's weights would cost more than the rest of the pass). Fused groups
(whose attribute is a whole sub-graph) are never merged.
"""
from __future__ import annotations

from typing import Any, Hashable

import numpy as np

from ..ir import Graph, Node
from .dce import remove_dead_nodes
from .manager import register_pass


class _Tensor:
    """A constant as a key: hashed by its dtype, shape and first and last
    elements; equal to another with the same dtype, shape and bytes."""

    __slots__ = ("array", "_hash")

    def __init__(self, array: np.ndarray):
        flat = array.reshape(-1)
        self.array = array
        self._hash = hash((array.dtype.str, array.shape, flat[:8].tobytes(), flat[-8:].tobytes()))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        a = self.array
        return (isinstance(other, _Tensor) and a.dtype == other.array.dtype and a.shape == other.array.shape
                and a.tobytes() == other.array.tobytes())


def _attr_key(value: Any) -> Hashable:
    if isinstance(value, np.ndarray):
        return _Tensor(value)
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    return value


def node_key(node: Node) -> Hashable | None:
    """A hashable key equal for nodes computing the same thing (None: never merge)."""
    if node.body is not None:
        return None
    attrs = tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items()))
    return node.op, tuple(id(v) for v in node.inputs), attrs


@register_pass
class CommonSubexpressionElimination:
    name = "cse"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        seen: dict[Hashable, Node] = {}
        changed = False
        for node in graph.nodes:
            key = node_key(node)
            if key is None:
                continue
            first = seen.setdefault(key, node)
            if first is not node:
                for old, new in zip(node.outputs, first.outputs):
                    graph.replace_all_uses(old, new)
                changed = True
        if changed:
            remove_dead_nodes(graph)
        return graph, changed
