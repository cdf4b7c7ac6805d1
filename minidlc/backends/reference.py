"""The reference backend: interpret the graph with NumPy. Slow, simple, the oracle."""
from __future__ import annotations

from ..ir import Graph, interpret
from ..loops.program import LoopProgram


class ReferenceExecutable:
    def __init__(self, graph: Graph):
        self.graph = graph

    def run(self, arrays):
        return interpret(self.graph, arrays)


def build(program: LoopProgram) -> ReferenceExecutable:
    return ReferenceExecutable(program.graph)  # its kernels are never lowered
