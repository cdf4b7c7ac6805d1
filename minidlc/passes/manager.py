"""The pass manager: named passes, pipelines, and the hooks instruments use.

A pass is an object with a `name`, `options` (its constructor's keyword
arguments, settable from a pass list: "fold{always_fold_bytes=32}") and
`run(graph) -> (graph, changed)`; it may edit the graph in place and return
it. Pipelines come from an optimization level (`LEVELS`) or an explicit list
of names. Instruments observe the
pipeline (print IR, dump files, time passes, check numerics), in the manner of
LLVM's and TVM's pass instrumentation; the ready-made ones are in
`instruments.py`.

Between passes the pipeline runs the verifier (on by default). Observing
instruments (printers, dumpers) run first, so a broken graph is still printed
and dumped; instruments that need a valid graph (`needs_valid_graph = True`,
such as the numerics checker) run after the verifier.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from ..ir import Graph, Node, verify


class Pass(Protocol):
    name: str
    options: dict[str, Any]  # the values of its constructor's keyword options (set by make_pass)

    def run(self, graph: Graph) -> tuple[Graph, bool]: ...


@dataclass(frozen=True)
class PassContext:
    """What a pipeline knows besides the graph: the target it compiles for, and
    data. A pass (or instrument) that wants it declares a `context` attribute;
    the pipeline sets it."""

    # whether the target can compute a node in a kernel; fusion keeps other nodes out of groups
    can_lower: Callable[[Node], bool] = lambda node: True
    # input batches ({input name: array}) that represent real use: quantization calibrates on them
    calibration: tuple[dict[str, np.ndarray], ...] = ()


@dataclass(frozen=True)
class Tolerance:
    """How far a pass may move the graph's results, as `VerifyNumerics` checks
    them: floats within rtol * |expected| + atol * max|expected|, integers
    within `int_steps`. A pass states its own as a `tolerance` attribute;
    without one it must be lossless (`LOSSLESS`)."""

    rtol: float = 1e-4
    atol: float = 1e-5
    int_steps: int = 0
    why: str = "lossless up to floating-point reassociation"


LOSSLESS = Tolerance()


class Instrument:
    """Hooks called around every pass. Subclass and override what you need."""

    needs_valid_graph = False  # True: after_pass runs only once the verifier passed

    def before_pipeline(self, graph: Graph) -> None: ...
    def before_pass(self, p: Pass, graph: Graph) -> None: ...
    def after_pass(self, p: Pass, graph: Graph, changed: bool) -> None: ...
    def after_pipeline(self, graph: Graph) -> None: ...

    def on_rewrite(self, p: Pass, rule: str, node: Node, note: str | None, detail: str | None = None) -> None:
        """A rewrite rule fired on `node` (note None; `detail` may say what it
        computed), or matched but did not fire (note says why). Only passes
        with a `trace` attribute report."""


# name -> factory returning a Pass; filled by the pass modules via `register_pass`
# (read it through `registered_passes`, which imports them all first).
_PASSES: dict[str, Callable[..., Pass]] = {}

# The pipeline of each optimization level, as pass names.
# Rewriting passes erase the nodes they make dead, so each level runs every pass once.
CLEANUPS = ["fold", "dce", "cse", "simplify"]
LEVELS: dict[int, list[str]] = {0: [], 1: CLEANUPS, 2: CLEANUPS + ["integer-ops", "fuse-layers", "fuse"]}


def register_pass(factory: Callable[..., Pass], name: str | None = None):
    """Make a pass available by name (use as a class decorator)."""
    _PASSES[name or factory.name] = factory
    return factory


def registered_passes() -> dict[str, Callable[..., Pass]]:
    """Every pass by name. Its module registers a pass when it is imported, so
    this imports them all first: a name must not depend on what else ran."""
    from . import _all  # noqa: F401

    return _PASSES


class PassError(Exception):
    """A pass broke the graph; the message names it and the passes before it."""


class Pipeline:
    """Passes run in order on one graph, observed by instruments."""

    def __init__(self, passes: list[Pass], instruments=(), verify_each: bool = True,
                 context: PassContext = PassContext()):
        self.passes = passes
        self.instruments = list(instruments)
        self.verify_each = verify_each
        self.context = context

    def run(self, graph: Graph) -> Graph:
        observers = [i for i in self.instruments if not i.needs_valid_graph]
        checkers = [i for i in self.instruments if i.needs_valid_graph]
        for ins in self.instruments:
            if hasattr(ins, "context"):
                ins.context = self.context
            ins.before_pipeline(graph)
        done: list[str] = []
        for p in self.passes:
            for ins in self.instruments:
                ins.before_pass(p, graph)
            if hasattr(p, "trace"):
                p.trace = self._tracer(p)
            if hasattr(p, "context"):
                p.context = self.context
            try:
                graph, changed = p.run(graph)
            except BrokenPipeError:  # the reader of a trace went away: not the pass's fault
                raise
            except Exception as e:
                raise PassError(f"pass '{p.name}' failed (passes before it: {', '.join(done) or 'none'}): "
                                f"{type(e).__name__}: {e}") from e
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
        def report(rule: str, node: Node, note: str | None = None, detail: str | None = None) -> None:
            for ins in self.instruments:
                ins.on_rewrite(p, rule, node, note, detail)

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
                   verify_each: bool = True, context: PassContext = PassContext()) -> Pipeline:
    """The pipeline for an -O level, or for an explicit list of passes.

    `passes` is a list of pass specs or one comma-separated string of them; a
    spec is a name with optional options in braces, MLIR style:
    "fold{always_fold_bytes=32},dce,simplify{disable=sub-const,div-const}".
    """
    if passes is None:
        if opt_level not in LEVELS:
            raise ValueError(f"opt_level must be one of {sorted(LEVELS)}, got {opt_level}")
        passes = LEVELS[opt_level]
    specs = parse_pass_list(passes) if isinstance(passes, str) else [s for p in passes for s in parse_pass_list(p)]
    known = registered_passes()
    unknown = [name for name, _ in specs if name not in known]
    if unknown:
        raise ValueError(f"unknown pass(es) {unknown}; available: {', '.join(sorted(known))}")
    return Pipeline([make_pass(name, options) for name, options in specs], instruments, verify_each, context)


_SPEC = re.compile(r"\s*([\w-]+)\s*(?:\{([^{}]*)\})?\s*(?:,|$)")


def parse_pass_list(text: str) -> list[tuple[str, dict[str, str]]]:
    """Split "a,b{k=v k2=v2},c" into [(name, {option: text})]."""
    out, pos, text = [], 0, text.strip()
    while pos < len(text):
        m = _SPEC.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot read the pass list {text!r} at {text[pos:]!r}; "
                             "expected name or name{option=value ...}, separated by commas")
        options = {}
        for item in (m.group(2) or "").split():
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"pass '{m.group(1)}': option {item!r} needs the form name=value")
            options[key.replace("-", "_")] = value
        out.append((m.group(1), options))
        pos = m.end()
    return out


def make_pass(name: str, options: dict[str, str] | None = None) -> Pass:
    """Instantiate a registered pass; option texts are converted to the types of
    the keyword defaults of its constructor, and recorded in `p.options`."""
    factory = registered_passes()[name]
    params = {k: v for k, v in inspect.signature(factory).parameters.items() if v.default is not v.empty}
    kwargs = {}
    for key, text in (options or {}).items():
        if key not in params:
            raise ValueError(f"pass '{name}' has no option {key!r}; its options: {', '.join(params) or 'none'}")
        kwargs[key] = _convert(text, params[key].default, f"pass '{name}' option {key}")
    p = factory(**kwargs)
    p.options = {k: kwargs.get(k, v.default) for k, v in params.items()}
    return p


def _convert(text: str, default, where: str):
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            return text.lower() in ("true", "1")
        if isinstance(default, (tuple, list)):
            return tuple(t for t in text.split(",") if t)
        return type(default)(text)
    except ValueError as e:
        raise ValueError(f"{where}: cannot use {text!r}: {e}") from None
