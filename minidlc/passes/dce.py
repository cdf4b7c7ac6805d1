"""Dead code elimination: drop nodes whose outputs nothing reads.

Graph outputs count as reads; graph inputs always stay (they are the
signature). One backward sweep suffices: walking the nodes from last to
first, a node is dead once every reader after it has been found dead.
"""
from __future__ import annotations

from ..ir import Graph
from .manager import register_pass


def remove_dead_nodes(graph: Graph) -> bool:
    """Erase every node whose outputs are unused; True if any was."""
    live = {id(v) for v in graph.outputs}
    keep = []
    for node in reversed(graph.nodes):
        if any(id(v) in live for v in node.outputs):
            keep.append(node)
            live.update(id(v) for v in node.inputs if v is not None)
    if len(keep) == len(graph.nodes):
        return False
    graph.nodes = keep[::-1]
    return True


@register_pass
class DeadCodeElimination:
    name = "dce"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        return graph, remove_dead_nodes(graph)
