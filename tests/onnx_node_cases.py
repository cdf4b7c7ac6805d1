"""The ONNX package's own backend node tests, filtered to what minidlc claims.

A case is *in scope* when every op in it has a converter and every tensor
uses a dtype we support. In-scope cases that we knowingly fail are listed,
with the reason, in `onnx_node_xfail.txt` (one `name  # reason` per line).
"""
from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

XFAIL_FILE = Path(__file__).with_name("onnx_node_xfail.txt")


@lru_cache(maxsize=1)
def all_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases(None) if c.kind == "node"]


def expected_failures() -> dict[str, str]:
    out = {}
    if XFAIL_FILE.exists():
        for line in XFAIL_FILE.read_text().splitlines():
            name, _, reason = line.partition("#")
            if name.strip():
                out[name.strip()] = reason.strip() or "no reason given"
    return out


def in_scope(case) -> bool:
    from minidlc.frontends.onnx.converters import CONVERTERS, ONNX_DTYPES

    g = case.model.graph
    if any(n.domain not in ("", "ai.onnx") or n.op_type not in CONVERTERS for n in g.node):
        return False
    for vi in list(g.input) + list(g.output):
        if not vi.type.HasField("tensor_type") or vi.type.tensor_type.elem_type not in ONNX_DTYPES:
            return False
    return True


def scoped_cases():
    return [c for c in all_cases() if in_scope(c)]


def covering_cases(cases=None):
    """A few of `cases` (default: the in-scope node cases) that together use
    every op they use (each case is kept if it brings an op not seen before):
    for targets whose compile is slow, the default test run takes these,
    `-m slow` all."""
    seen, out = set(), []
    for case in scoped_cases() if cases is None else cases:
        ops = {n.op_type for n in case.model.graph.node}
        if ops - seen:
            seen |= ops
            out.append(case)
    return out


def run_case(case, target: str = "reference", opt_level: int = 0):
    """Compile and run one case on `target`; raise AssertionError on a mismatch.
    Returns the compiled model (of the last data set)."""
    for inputs, expected in case.data_sets:
        m, feeds = compile_binding_static_inputs(case.model, _feeds(case, inputs), target, opt_level)
        expected = [_array(x) for x in expected]
        outs = m.run(feeds)
        for vi, want in zip(case.model.graph.output, expected):
            got = outs[vi.name]
            want = np.asarray(want)
            assert got.shape == want.shape, f"{vi.name}: shape {got.shape} != {want.shape}"
            assert got.dtype == want.dtype, f"{vi.name}: dtype {got.dtype} != {want.dtype}"
            np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol, equal_nan=True,
                                       err_msg=f"output {vi.name}")
    return m


def compile_binding_static_inputs(model, feeds: dict, target: str, opt_level: int = 0):
    """Compile `model` (see `load_binding_static_inputs`); returns the compiled
    model and the remaining feeds."""
    import minidlc

    graph, feeds = load_binding_static_inputs(model, feeds)
    return minidlc.compile(graph, target=target, opt_level=opt_level), feeds


def load_binding_static_inputs(model, feeds: dict):
    """Import `model`; graph inputs that minidlc needs at compile time become constants.

    The node tests feed shape-like operands (Reshape's shape, Slice's starts,
    Reduce* axes, Pad's pads, a window's size) as graph inputs. minidlc
    compiles static shapes, so, as a user would, we bind the inputs such an
    operand is computed from to the test's data, as initializers. Returns the
    graph and the remaining feeds."""
    import minidlc
    from minidlc.frontends.onnx.converters import StaticValueError
    from onnx import numpy_helper

    feeds = dict(feeds)
    while True:
        try:
            return minidlc.load(model), feeds
        except StaticValueError as e:
            bind = _graph_inputs_behind(model.graph, e.value) & set(feeds)
            if not bind:
                raise
            model = model.__class__.FromString(model.SerializeToString())
            model.graph.initializer.extend(numpy_helper.from_array(feeds.pop(n), n) for n in sorted(bind))


def loop_program(case, target: str, opt_level: int = 2):
    """The loop program `target` builds for a case (its first data set), without
    compiling or running anything: enough to see which steps run natively."""
    from minidlc.backends import get_backend
    from minidlc.passes.manager import PassContext, build_pipeline

    graph, _ = load_binding_static_inputs(case.model, _feeds(case, case.data_sets[0][0]))
    backend = get_backend(target)
    return backend.program(build_pipeline(opt_level=opt_level, context=PassContext(backend.can_lower)).run(graph))


def _feeds(case, inputs) -> dict:
    """A data set's inputs by graph input name (old models list weights as inputs too)."""
    weights = {t.name for t in case.model.graph.initializer}
    names = [vi.name for vi in case.model.graph.input if vi.name not in weights]
    return dict(zip(names, (_array(x) for x in inputs)))


def _graph_inputs_behind(graph, name: str) -> set[str]:
    """The graph inputs that the ONNX value `name` is computed from."""
    producer = {out: node for node in graph.node for out in node.output}
    found, todo, seen = set(), [name], set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in producer:
            todo.extend(i for i in producer[n].input if i)
        else:
            found.add(n)
    return found


def _array(x) -> np.ndarray:
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(x) if isinstance(x, TensorProto) else np.asarray(x)


def conformance(target: str = "reference", opt_level: int = 0, progress=None):
    """Over all in-scope cases: (passed, failed names, passed cases that ran
    fully native, passed cases with a step on the NumPy fallback)."""
    from minidlc.loops.program import StepKind

    passed, failed, native, fallback = 0, [], 0, 0
    cases = scoped_cases()
    for i, case in enumerate(cases):
        if progress:
            progress(i, len(cases), case.name)
        try:
            m = run_case(case, target, opt_level)
        except Exception:
            failed.append(case.name)
            continue
        passed += 1
        if m.backend.runs_kernels:
            if m.program.count(StepKind.HOST):
                fallback += 1
            else:
                native += 1
    return passed, failed, native, fallback
