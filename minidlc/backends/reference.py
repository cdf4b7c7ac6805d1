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
    if options:
        raise TypeError(f"the reference backend takes no options, got {sorted(options)}")
    return ReferenceExecutable(graph)
