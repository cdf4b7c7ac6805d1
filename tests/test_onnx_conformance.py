"""ONNX backend node tests for every op we support (see onnx_node_cases.py).

Every in-scope case runs on reference and llvm. On numba, whose cold compile
takes about half a second a case, and on cuda (Numba's CUDA simulator, see
conftest.py), the default run takes the cases that cover every op once
(`covering_cases`) and `-m slow` the rest. `-m gpu` runs the covering cases
on a real GPU.

Print the conformance figure for the README with:
    python tests/test_onnx_conformance.py [--target reference] [-O 0]
(cuda without a GPU: NUMBA_ENABLE_CUDASIM=1 python tests/test_onnx_conformance.py --target cuda)
"""
import sys

import pytest

from cuda_marks import gpu, needs_gpu
from onnx_node_cases import covering_cases, expected_failures, run_case, scoped_cases

TARGETS = ["reference", "llvm", "numba", "cuda"]
SLOW_TO_COMPILE = {"numba", "cuda"}

_XFAIL = expected_failures()


def _params():
    covering = {c.name for c in covering_cases()}
    for case in scoped_cases():
        marks = [pytest.mark.xfail(reason=_XFAIL[case.name], strict=True)] if case.name in _XFAIL else []
        for target in TARGETS:
            slow = [pytest.mark.slow] if target in SLOW_TO_COMPILE and case.name not in covering else []
            yield pytest.param(case, target, id=f"{target}-{case.name}", marks=marks + slow)
        if case.name in covering:
            yield pytest.param(case, "cuda", id=f"gpu-{case.name}", marks=marks + [gpu, needs_gpu])


@pytest.mark.parametrize("case,target", list(_params()))
def test_node(case, target):
    run_case(case, target)


if __name__ == "__main__":
    import argparse

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from onnx_node_cases import conformance

    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="reference")
    ap.add_argument("-O", dest="opt_level", type=int, default=0, help="optimization level (default 0)")
    args = ap.parse_args()

    def progress(i, n, name):
        print(f"\r[{i + 1}/{n}] {name[:60]:<60}", end="", file=sys.stderr, flush=True)
    passed, failed, native, fallback = conformance(args.target, args.opt_level, progress)
    print(file=sys.stderr)
    total = passed + len(failed)
    print(f"ONNX node tests on {args.target} at -O{args.opt_level}: {passed}/{total} in-scope cases pass "
          f"({100 * passed / max(total, 1):.1f}%)")
    if args.target != "reference":
        print(f"  of the {passed} that pass: {native} ran fully native, {fallback} with a step on the NumPy fallback")
    for name in failed:
        print(f"  fail: {name}  # {_XFAIL.get(name, 'NOT in onnx_node_xfail.txt')}")
