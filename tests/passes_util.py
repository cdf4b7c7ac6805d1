"""Helpers for the pass tests: run passes on IR text, compare against the interpreter."""
from __future__ import annotations

import textwrap

import numpy as np

from minidlc.ir import Graph, interpret, parse_graph, verify
from minidlc.passes.instruments import random_inputs
from minidlc.passes.manager import build_pipeline


def ir(text: str) -> str:
    return textwrap.dedent(text).strip()


def run_passes(graph: Graph, passes: str, **kw) -> Graph:
    return build_pipeline(passes=passes, **kw).run(graph)


def assert_same_results(before: Graph, after: Graph, seeds=(0, 1), rtol=1e-4, atol=1e-5) -> None:
    """The optimized graph computes what the original does (reference interpreter)."""
    verify(after)
    assert [v.type for v in before.inputs] == [v.type for v in after.inputs]
    for seed in seeds:
        feeds = random_inputs(before, seed)
        for want, got in zip(interpret(before, feeds), interpret(after, feeds)):
            assert got.dtype == want.dtype and got.shape == want.shape
            scale = max(1.0, float(np.max(np.abs(want[np.isfinite(want)]), initial=0)))
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, equal_nan=True)


def check_golden(passes: str, before: str, expected: str) -> Graph:
    """Run `passes` on the IR text `before`: the printed result must be `expected`,
    and the result must compute what the input did."""
    source = parse_graph(ir(before))
    after = run_passes(source.copy(), passes)
    assert str(after) == ir(expected), f"got:\n{after}"
    assert_same_results(source, after)
    return after
