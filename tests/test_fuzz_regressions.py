"""Counterexamples that the differential fuzzer (test_fuzz_onnxruntime.py)
found, as it shrank them, kept so that the bug stays fixed. Each names what
was wrong."""
import pytest

from onnx_fuzz import Const, ModelSpec, NodeSpec, check_against_onnxruntime
from test_onnx_conformance import TARGETS


def ints(*values) -> Const:
    return Const("ints", (len(values),), "i64", values)


def sliced_empty() -> tuple:
    """x[0:0]: an empty tensor."""
    return NodeSpec("Slice", (0, ints(0), ints(0), ints(0), ints(1))),


COUNTEREXAMPLES = {
    # (The fuzzer's own false alarms are fixed in onnx_fuzz.py instead: a ceil_mode pool whose last
    # window starts in the padding has a shape that ONNX's inference and onnxruntime disagree on.)
    # Slice with a negative step clamped its start to -1 (Python's rule) instead of 0 (ONNX's):
    # x[-2:-2:-1] of one element is that element in ONNX, empty in NumPy.
    "slice_backwards_from_before_the_start": ModelSpec(
        (((1,), "f32"),), (NodeSpec("Slice", (0, ints(-2), ints(-2), ints(0), ints(-1))),), (1,)),
    # The reference Softmax took the max of an empty axis (NumPy raises).
    "softmax_of_an_empty_tensor": ModelSpec(
        (((1,), "f32"),), (*sliced_empty(), NodeSpec("Softmax", (1,), {"axis": 0})), (2,)),
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(COUNTEREXAMPLES))
def test_counterexample(name, target):
    check_against_onnxruntime(COUNTEREXAMPLES[name], target)
