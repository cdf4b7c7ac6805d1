"""The pass manager: named passes, pipelines, and instruments.

A pass is an object with a `name` and `run(graph) -> (graph, changed)`.
Pipelines come from an optimization level or an explicit list of names.
Instruments observe the pipeline (print IR, time passes, verify between
passes), in the manner of LLVM's and TVM's pass instrumentation.
"""
from __future__ import annotations

from typing import Callable, Protocol

from ..ir import Graph, verify


class Pass(Protocol):
    name: str

    def run(self, graph: Graph) -> tuple[Graph, bool]: ...


class Instrument:
    """Hooks called around every pass. Subclass and override what you need."""

    def before_pipeline(self, graph: Graph) -> None: ...
    def before_pass(self, p: Pass, graph: Graph) -> None: ...
    def after_pass(self, p: Pass, graph: Graph, changed: bool) -> None: ...
    def after_pipeline(self, graph: Graph) -> None: ...


# name -> factory returning a Pass; filled by the pass modules via `register_pass`.
PASSES: dict[str, Callable[[], Pass]] = {}

# The pipeline of each optimization level, as pass names.
LEVELS: dict[int, list[str]] = {0: [], 1: [], 2: []}


def register_pass(factory: Callable[[], Pass], name: str | None = None):
    PASSES[name or factory.name] = factory
    return factory


class PassError(Exception):
    """A pass broke the graph; the message names it and the passes before it."""


class Pipeline:
    def __init__(self, passes: list[Pass], instruments=(), verify_each: bool = True):
        self.passes = passes
        self.instruments = list(instruments)
        self.verify_each = verify_each

    def run(self, graph: Graph) -> Graph:
        for ins in self.instruments:
            ins.before_pipeline(graph)
        done: list[str] = []
        for p in self.passes:
            for ins in self.instruments:
                ins.before_pass(p, graph)
            graph, changed = p.run(graph)
            if self.verify_each:
                try:
                    verify(graph)
                except Exception as e:
                    raise PassError(f"pass '{p.name}' produced an invalid graph "
                                    f"(passes before it: {', '.join(done) or 'none'}):\n{e}\n"
                                    f"--- graph after '{p.name}' ---\n{graph}") from None
            done.append(p.name)
            for ins in self.instruments:
                ins.after_pass(p, graph, changed)
        for ins in self.instruments:
            ins.after_pipeline(graph)
        return graph


def build_pipeline(opt_level: int = 2, passes: list[str] | str | None = None, instruments=(),
                   verify_each: bool = True) -> Pipeline:
    """The pipeline for an -O level, or for an explicit list of pass names."""
    from . import _all  # noqa: F401  (registers every pass)

    if isinstance(passes, str):
        passes = [p for p in passes.split(",") if p]
    if passes is None:
        if opt_level not in LEVELS:
            raise ValueError(f"opt_level must be one of {sorted(LEVELS)}, got {opt_level}")
        passes = LEVELS[opt_level]
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise ValueError(f"unknown pass(es) {unknown}; available: {', '.join(sorted(PASSES))}")
    return Pipeline([PASSES[name]() for name in passes], instruments, verify_each)
