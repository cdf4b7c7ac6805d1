"""The reference backend: interpret the graph with NumPy. Slow, simple, the oracle."""
from __future__ import annotations

from ..ir import Graph, interpret


class ReferenceExecutable:
    def __init__(self, graph: Graph):
        self.graph = graph

    def run(self, arrays):
        return interpret(self.graph, arrays)

    def emit(self, stage: str) -> str:
        raise ValueError(f"the reference backend has no {stage!r} stage; it interprets the graph IR")


def build(graph: Graph, **options) -> ReferenceExecutable:
    return ReferenceExecutable(graph)
