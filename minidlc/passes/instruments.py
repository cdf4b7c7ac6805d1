"""Ready-made pass instruments: print, diff, dump, time, trace, check numerics.

Each one is an `Instrument` (manager.py) and writes to a text stream `out`
(standard output by default), so the CLI and tests use the same objects:

    minidlc.compile(model, instruments=[PrintIR(after="fold"), TimePasses()])

The flag names follow LLVM and MLIR (-print-ir-after-all, -print-changed,
-time-passes) so what students learn here carries over.
"""
from __future__ import annotations

import difflib
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from ..ir import DTYPES, Graph, IRError, Node, interpret
from ..runtime import random_inputs as runtime_random_inputs
from .manager import LOSSLESS, Instrument, Pass, PassContext, PassError, Tolerance


def _banner(what: str) -> str:
    return f"// -----// IR Dump {what} //----- //"


class PrintIR(Instrument):
    """Print the IR before and/or after passes: all of them, or those named."""

    def __init__(self, before: bool | list[str] = False, after: bool | list[str] = False,
                 out: TextIO | None = None):
        self.before, self.after = _selector(before), _selector(after)
        self.out = out

    def before_pass(self, p: Pass, graph: Graph) -> None:
        if self.before(p.name):
            write_text(self.out, f"{_banner(f'Before {p.name}')}\n{graph}\n")

    def after_pass(self, p: Pass, graph: Graph, changed: bool) -> None:
        if self.after(p.name):
            write_text(self.out, f"{_banner(f'After {p.name}')}\n{graph}\n")


def _selector(which: bool | str | list[str]):
    if isinstance(which, bool):
        return lambda name: which
    names = set(which.split(",") if isinstance(which, str) else which)
    return lambda name: name in names


def write_text(out: TextIO | None, text: str) -> None:
    """Write to `out`, or to whatever sys.stdout is now (pytest and the CLI replace it)."""
    (out or sys.stdout).write(text)


class PrintChanged(Instrument):
    """After each pass that changed the IR, print a unified diff of the printed IR."""

    def __init__(self, out: TextIO | None = None):
        self.out = out
        self.text = ""
        self.diffs: list[tuple[str, str]] = []  # (pass, its diff), for the HTML report

    def before_pipeline(self, graph: Graph) -> None:
        self.text = str(graph)
        write_text(self.out, f"{_banner('Input')}\n{self.text}\n")

    def after_pass(self, p: Pass, graph: Graph, changed: bool) -> None:
        text = str(graph)
        if text == self.text:
            write_text(self.out, f"{_banner(f'After {p.name}')} omitted because no change\n")
            return
        diff = "\n".join(difflib.unified_diff(self.text.splitlines(), text.splitlines(),
                                              f"before {p.name}", f"after {p.name}", lineterm=""))
        self.diffs.append((p.name, diff))
        write_text(self.out, f"{_banner(f'After {p.name}')}\n{diff}\n")
        self.text = text


class DumpIR(Instrument):
    """Write the IR to numbered files in `directory`: 000_input.ir, 001_fold.ir, ...
    Dumps of an earlier run in the same directory are removed first, so the
    files always tell the story of one pipeline."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.count = 0
        self.last_path: Path | None = None

    def before_pipeline(self, graph: Graph) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("[0-9][0-9][0-9]_*.ir"):
            old.unlink()
        self.count = 0
        self._dump("input", graph)

    def after_pass(self, p: Pass, graph: Graph, changed: bool) -> None:
        self._dump(p.name, graph)

    def _dump(self, name: str, graph: Graph) -> None:
        self.last_path = self.dir / f"{self.count:03d}_{name}.ir"
        self.last_path.write_text(str(graph) + "\n")
        self.count += 1


class TimePasses(Instrument):
    """Time each pass; print a table, slowest first, when the pipeline ends."""

    def __init__(self, out: TextIO | None = None):
        self.out = out
        self.rows: list[tuple[str, float, bool]] = []

    def before_pipeline(self, graph: Graph) -> None:
        self.rows = []

    def before_pass(self, p: Pass, graph: Graph) -> None:
        self.start = time.perf_counter()

    def after_pass(self, p: Pass, graph: Graph, changed: bool) -> None:
        self.rows.append((p.name, time.perf_counter() - self.start, changed))

    def after_pipeline(self, graph: Graph) -> None:
        write_text(self.out, self.table() + "\n")

    def table(self) -> str:
        total = sum(t for _, t, _ in self.rows) or 1e-12
        lines = ["===-------------------------------------------===",
                 "                 Pass execution timing report",
                 "===-------------------------------------------===",
                 f"  {'Wall time (ms)':>14}  {'%':>6}  changed  pass"]
        for name, t, changed in sorted(self.rows, key=lambda r: -r[1]):
            lines.append(f"  {t * 1e3:14.3f}  {100 * t / total:5.1f}%  {'yes' if changed else 'no':>7}  {name}")
        lines.append(f"  {total * 1e3:14.3f}  100.0%           total")
        return "\n".join(lines)


class TraceRewrites(Instrument):
    """Log which named rule fired on which node (and near misses, with the reason)."""

    def __init__(self, out: TextIO | None = None, near_misses: bool = True):
        self.out = out
        self.near_misses = near_misses

    def on_rewrite(self, p: Pass, rule: str, node: Node, note: str | None, detail: str | None = None) -> None:
        if note is None:
            write_text(self.out, f"[{p.name}] {rule} fired on {node.describe()}\n")
            if detail:
                write_text(self.out, "".join(f"    {line}\n" for line in detail.splitlines()))
        elif self.near_misses:
            write_text(self.out, f"[{p.name}] {rule} matched {node.describe()} but did not fire: {note}\n")


class ExplainFusion(Instrument):
    """After the fuse pass: each group it made (ops and kind), and each place
    where a group stopped growing, with the reason (from the pass's trace)."""

    def __init__(self, out: TextIO | None = None):
        self.out = out
        self.groups: list[str] = []
        self.stops: list[str] = []
        self.ran = False

    def on_rewrite(self, p: Pass, rule: str, node: Node, note: str | None, detail: str | None = None) -> None:
        if p.name != "fuse":
            return
        if note is None:
            self.groups.append(rule.removeprefix("group "))
        else:
            self.stops.append(f"at {node.describe()}: {note}")

    def after_pass(self, p: Pass, graph: Graph, changed: bool) -> None:
        if p.name == "fuse":
            self.ran = True
            lines = [f"fusion: {len(self.groups)} groups, {len(self.stops)} boundaries",
                     "groups:", *(f"  {g}" for g in self.groups),
                     "boundaries (where a group stopped growing, and why):", *(f"  {b}" for b in self.stops)]
            write_text(self.out, "\n".join(lines) + "\n")
            self.groups, self.stops = [], []

    def after_pipeline(self, graph: Graph) -> None:
        if not self.ran:
            write_text(self.out, "fusion: the pipeline has no fuse pass (it runs at -O2)\n")


class VerifyNumerics(Instrument):
    """After each pass, run fixed inputs through the reference interpreter and
    compare with the graph before the pipeline. The first pass that breaks
    its tolerance raises PassError naming it and the first value (in the
    order the optimized graph computes them) that differs from the original's
    value of the same name.

    Lossless passes are held to `rtol`/`atol`. A pass that declares a
    `tolerance` (quantization) is held to that one, and its results become
    the baseline the passes after it are compared with. The inputs are the
    first calibration batch when the pipeline has one (quantized ranges fit
    real data, not random), else fixed random ones."""

    needs_valid_graph = True

    def __init__(self, seed: int = 0, rtol: float = LOSSLESS.rtol, atol: float = LOSSLESS.atol):
        self.seed, self.default = seed, Tolerance(rtol, atol)
        self.done: list[str] = []
        self.context = PassContext()

    def before_pipeline(self, graph: Graph) -> None:
        self.done = []
        if self.context.calibration:
            batch = self.context.calibration[0]
            self.inputs = [batch[v.name] for v in graph.inputs]
        else:
            self.inputs = random_inputs(graph, self.seed)
        self._baseline(graph)
        self.output_names = [v.name for v in graph.outputs]

    def _baseline(self, graph: Graph) -> None:
        self.reference: dict[str, np.ndarray] = {}
        self.expected = interpret(graph, self.inputs,
                                  on_value=lambda v, a: self.reference.__setitem__(v.name, a))

    def after_pass(self, p: Pass, graph: Graph, changed: bool) -> None:
        tol = getattr(p, "tolerance", self.default)
        try:
            got = interpret(graph, self.inputs)
        except IRError as e:
            raise PassError(f"pass '{p.name}' made a graph the reference interpreter cannot run "
                            f"(passes before it: {', '.join(self.done) or 'none'}): {e}") from e
        bad = [i for i, (a, b) in enumerate(zip(got, self.expected)) if not close(a, b, tol)]
        if bad:
            raise PassError(f"pass '{p.name}' changed the numerics "
                            f"(passes before it: {', '.join(self.done) or 'none'}): "
                            f"output %{self.output_names[bad[0]]} differs by "
                            f"{_max_error(got[bad[0]], self.expected[bad[0]])}, beyond the pass's tolerance "
                            f"(rtol {tol.rtol:g}, atol {tol.atol:g} of the largest value, {tol.int_steps} integer "
                            f"steps: {tol.why}); {self._first_divergence(graph, tol)}")
        if tol is not self.default and changed:
            self._baseline(graph)  # the passes after a lossy one are checked against its results
        self.done.append(p.name)

    def _first_divergence(self, graph: Graph, tol: Tolerance) -> str:
        found: list[str] = []

        def on_value(v, a):
            ref = self.reference.get(v.name)
            if not found and ref is not None and not close(a, ref, tol):
                found.append(f"first diverging tensor: %{v.name} ({v.producer.describe()}), "
                             f"max error {_max_error(a, ref)}")

        interpret(graph, self.inputs, on_value=on_value)
        return found[0] if found else "no intermediate tensor of the same name differs"


def close(a: np.ndarray, b: np.ndarray, tol: Tolerance) -> bool:
    """Whether `a` is within `tol` of the expected `b` (types must match)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == DTYPES["bf16"]:  # ml_dtypes' bfloat16 (kind "V", not "f"): the floats it holds, exactly
        a, b = a.astype(np.float32), b.astype(np.float32)
    if a.dtype.kind != "f":
        return bool(np.all(np.abs(a.astype(np.int64) - b.astype(np.int64)) <= tol.int_steps))
    scale = max(1.0, float(np.max(np.abs(b[np.isfinite(b)]), initial=0)))
    return bool(np.allclose(a, b, rtol=tol.rtol, atol=tol.atol * scale, equal_nan=True))


def _max_error(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"type ({a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)})"
    return f"{float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0)):.3g}"


def random_inputs(graph: Graph, seed: int = 0) -> list[np.ndarray]:
    """Fixed pseudo-random arrays for the graph's inputs, in input order: the
    same arrays `CompiledModel.random_inputs` makes (normal floats, small
    non-negative integers valid as indices, random booleans)."""
    feeds = runtime_random_inputs({v.name: v.type for v in graph.inputs}, seed)
    return [feeds[v.name] for v in graph.inputs]
