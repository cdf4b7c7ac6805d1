"""ONNX backend node tests for every op we support (see onnx_node_cases.py).

Print the conformance figure for the README with:
    python tests/test_onnx_conformance.py [--target reference]
"""
import sys

import pytest

from onnx_node_cases import expected_failures, run_case, scoped_cases

TARGETS = ["reference", "llvm"]

_XFAIL = expected_failures()


def _params():
    for case in scoped_cases():
        marks = [pytest.mark.xfail(reason=_XFAIL[case.name], strict=True)] if case.name in _XFAIL else []
        for target in TARGETS:
            yield pytest.param(case, target, id=f"{target}-{case.name}", marks=marks)


@pytest.mark.parametrize("case,target", list(_params()))
def test_node(case, target):
    run_case(case, target)


if __name__ == "__main__":
    import argparse

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from onnx_node_cases import conformance

    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="reference")
    args = ap.parse_args()
    passed, failed = conformance(args.target)
    total = passed + len(failed)
    print(f"ONNX node tests on {args.target}: {passed}/{total} in-scope cases pass ({100 * passed / max(total, 1):.1f}%)")
    for name in failed:
        print(f"  fail: {name}  # {_XFAIL.get(name, 'NOT in onnx_node_xfail.txt')}")
