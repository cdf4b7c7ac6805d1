"""The pass manager: named passes, pipelines, and the hooks instruments use.

A pass is an object with a `name` and `run(graph) -> (graph, changed)`; it may
edit the graph in place and return it. Pipelines come from an optimization
level (`LEVELS`) or an explicit list of names. Instruments observe the
pipeline (print IR, dump files, time passes, check numerics), in the manner of
LLVM's and TVM's pass instrumentation; the ready-made ones are in
`instruments.py`.

Between passes the pipeline runs the verifier (on by default). Observing
instruments (printers, dumpers) run first, so a broken graph is still printed
and dumped; instruments that need a valid graph (`needs_valid_graph = True`,
such as the numerics checker) run after the verifier.
"""
from __future__ import annotations

from typing import Callable, Protocol

from ..ir import Graph, Node, verify


class Pass(Protocol):
    name: str

    def run(self, graph: Graph) -> tuple[Graph, bool]: ...


class Instrument:
    """Hooks called around every pass. Subclass and override what you need."""

    needs_valid_graph = False  # True: after_pass runs only once the verifier passed

    def before_pipeline(self, graph: Graph) -> None: ...
    def before_pass(self, p: Pass, graph: Graph) -> None: ...
    def after_pass(self, p: Pass, graph: Graph, changed: bool) -> None: ...
    def after_pipeline(self, graph: Graph) -> None: ...

    def on_rewrite(self, p: Pass, rule: str, node: Node, note: str | None) -> None:
        """A rewrite rule fired on `node` (note None), or matched but did not
        fire (note says why). Only passes with a `trace` attribute report."""


# name -> factory returning a Pass; filled by the pass modules via `register_pass`.
PASSES: dict[str, Callable[[], Pass]] = {}

# The pipeline of each optimization level, as pass names.
# Rewriting passes erase the nodes they make dead, so each level runs every pass once.
CLEANUPS = ["fold", "dce", "cse", "simplify"]
LEVELS: dict[int, list[str]] = {0: [], 1: CLEANUPS, 2: CLEANUPS + ["fuse-layers", "fuse"]}


def register_pass(factory: Callable[[], Pass], name: str | None = None):
    """Make a pass available by name (use as a class decorator)."""
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
        observers = [i for i in self.instruments if not i.needs_valid_graph]
        checkers = [i for i in self.instruments if i.needs_valid_graph]
        for ins in self.instruments:
            ins.before_pipeline(graph)
        done: list[str] = []
        for p in self.passes:
            for ins in self.instruments:
                ins.before_pass(p, graph)
            if hasattr(p, "trace"):
                p.trace = self._tracer(p)
            graph, changed = p.run(graph)
            for ins in observers:
                ins.after_pass(p, graph, changed)
            if self.verify_each:
                self._verify(p, graph, done)
            for ins in checkers:
                ins.after_pass(p, graph, changed)
            done.append(p.name)
        for ins in self.instruments:
            ins.after_pipeline(graph)
        return graph

    def _tracer(self, p: Pass):
        def report(rule: str, node: Node, note: str | None = None) -> None:
            for ins in self.instruments:
                ins.on_rewrite(p, rule, node, note)

        return report if self.instruments else None

    def _verify(self, p: Pass, graph: Graph, done: list[str]) -> None:
        try:
            verify(graph)
        except Exception as e:
            dumps = [str(ins.last_path) for ins in self.instruments if getattr(ins, "last_path", None)]
            where = f"dumped to {dumps[0]}" if dumps else f"--- graph after '{p.name}' ---\n{graph}"
            raise PassError(f"pass '{p.name}' produced an invalid graph "
                            f"(passes before it: {', '.join(done) or 'none'}):\n{e}\n{where}") from None


def build_pipeline(opt_level: int = 2, passes: list[str] | str | None = None, instruments=(),
                   verify_each: bool = True) -> Pipeline:
    """The pipeline for an -O level, or for an explicit list of pass names."""
    from . import _all  # noqa: F401  (registers every pass)

    if isinstance(passes, str):
        passes = [p.strip() for p in passes.split(",") if p.strip()]
    if passes is None:
        if opt_level not in LEVELS:
            raise ValueError(f"opt_level must be one of {sorted(LEVELS)}, got {opt_level}")
        passes = LEVELS[opt_level]
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise ValueError(f"unknown pass(es) {unknown}; available: {', '.join(sorted(PASSES))}")
    return Pipeline([PASSES[name]() for name in passes], instruments, verify_each)
