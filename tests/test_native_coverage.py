"""Native coverage: on the ONNX node tests, every op runs in native kernels at
-O2, except for the dtypes and operands listed here, each with its reason. A
new fallback (an op that stopped lowering, or a new case that does not) fails
this test, and so does a listed limit that no case runs into any more.

Lowering only: nothing is compiled or run (test_onnx_conformance.py runs them).
The counts per target are printed by `python tests/test_onnx_conformance.py`.
"""
import re

import pytest

from minidlc.loops.program import StepKind
from onnx_node_cases import expected_failures, loop_program, scoped_cases

# the dtypes and operands that lowered ops leave to NumPy, as the lowering says
# them (pattern: reason). None at present: every case runs natively.
LIMITS: dict[str, str] = {}


@pytest.mark.parametrize("target", ["llvm", pytest.param("cuda", marks=pytest.mark.slow)])  # cuda: 13 s
def test_every_op_runs_natively_but_for_the_listed_limits(target):
    xfail = expected_failures()
    unexplained, used = [], set()
    for case in scoped_cases():
        if case.name in xfail:
            continue
        for step in loop_program(case, target).steps:
            if step.kind != StepKind.HOST:
                continue
            why = next((p for p in LIMITS if re.search(p, step.reason)), None)
            if why is None:
                unexplained.append(f"{case.name}: {step.node.op}: {step.reason}")
            used.add(why)
    assert not unexplained, "\n".join(unexplained)
    stale = {p for p in LIMITS if p not in used}
    assert not stale, f"listed, but no case runs into it any more: {stale}"
