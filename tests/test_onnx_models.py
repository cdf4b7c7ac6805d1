"""The onnx package's model tests (`pytorch-converted`, `pytorch-operator`,
`simple`; see onnx_model_cases.py) at -O2 on every target.

Print the figure for the README, next to onnxruntime's on the same harness:
    python tests/test_onnx_models.py [--target llvm]
"""
import sys

import pytest

from onnx_model_cases import OUT_OF_SCOPE, all_model_cases, run_on_onnxruntime, scoped_model_cases
from onnx_node_cases import covering_cases, run_case
from test_onnx_conformance import SLOW_TO_COMPILE, TARGETS

OPT_LEVEL = 2


def _params():
    cases = scoped_model_cases()
    covering = {c.name for c in covering_cases(cases)}
    for case in cases:
        for target in TARGETS:
            slow = [pytest.mark.slow] if target in SLOW_TO_COMPILE and case.name not in covering else []
            yield pytest.param(case, target, id=f"{target}-{case.suite}-{case.name}", marks=slow)


@pytest.mark.parametrize("case,target", list(_params()))
def test_model(case, target):
    run_case(case, target, OPT_LEVEL)


def test_out_of_scope_cases_are_the_listed_ones():
    """16 cases use sequences, strings or Gradient; every other case is in
    scope, whether or not minidlc has a converter for its ops."""
    out = {c.name: c.out_of_scope() for c in all_model_cases() if c.out_of_scope()}
    assert len(out) == 16, out
    assert sum("sequence" in why for why in out.values()) == 8
    assert sum("string" in why for why in out.values()) == 6
    assert sum("training" in why for why in out.values()) == 2
    assert len(all_model_cases()) - len(out) == len(scoped_model_cases()) == 124


def test_legacy_op_versions_are_exercised():
    """The suites hold the opset-6 forms the frontend converts."""
    legacy = {n.op_type for c in scoped_model_cases() if c.model.opset_import[0].version < 7 for n in c.model.graph.node}
    assert {"Add", "Mul", "Gemm", "BatchNormalization", "PRelu", "Max", "Min", "Sum", "Pow"} <= legacy


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--target", action="append", help=f"one of {TARGETS} (repeatable; default all)")
    args = ap.parse_args()
    cases = scoped_model_cases()
    runners = {f"minidlc {t} -O{OPT_LEVEL}": (lambda c, t=t: run_case(c, t, OPT_LEVEL)) for t in args.target or TARGETS}
    runners["onnxruntime"] = run_on_onnxruntime
    print(f"ONNX model tests ({', '.join(sorted({c.suite for c in cases}))}): {len(cases)} in-scope cases "
          f"of {len(all_model_cases())}; out of scope: {', '.join(sorted(set(OUT_OF_SCOPE.values())))}")
    for label, run in runners.items():
        failed = []
        for i, case in enumerate(cases):
            print(f"\r{label}: [{i + 1}/{len(cases)}] {case.name[:50]:<50}", end="", file=sys.stderr, flush=True)
            try:
                run(case)
            except Exception as e:  # a failure is a figure here, not a crash
                failed.append(f"{case.name}: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
        print(file=sys.stderr)
        print(f"  {label:<22} {len(cases) - len(failed)}/{len(cases)} pass")
        for f in failed:
            print(f"    fail: {f}")
