"""Op versions of opsets 1-6, converted to their modern forms by the ONNX
frontend: the results agree with NumPy, and what the old versions forbid is
a clear error naming the node."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import minidlc
from minidlc.frontends.onnx import UnsupportedOpError
from minidlc.frontends.onnx.converters import ConversionError
from test_frontend_errors import model, vi

rng = np.random.default_rng(0)


def run(m, **feeds):
    return minidlc.compile(m, target="llvm").run(feeds)


@pytest.mark.parametrize("opset", [1, 6])
def test_broadcast_at_an_axis(opset):
    """B [3] lined up with A [2, 3, 4] at axis 1: NumPy alone would line it up with the last axis."""
    node = helper.make_node("Mul", ["a", "b"], ["y"], broadcast=1, axis=1,
                            **({"consumed_inputs": [0, 0]} if opset == 1 else {}))
    m = model([node], [vi("a", [2, 3, 4]), vi("b", [3])], [vi("y", [2, 3, 4])], opset=opset)
    a, b = rng.standard_normal((2, 3, 4), np.float32), rng.standard_normal(3, np.float32)
    np.testing.assert_allclose(run(m, a=a, b=b)["y"], a * b[:, None], rtol=1e-6)


def test_broadcast_without_axis_is_trailing():
    m = model([helper.make_node("Sub", ["a", "b"], ["y"], broadcast=1)], [vi("a", [2, 3]), vi("b", [3])],
              [vi("y", [2, 3])], opset=6)
    a, b = rng.standard_normal((2, 3), np.float32), rng.standard_normal(3, np.float32)
    np.testing.assert_allclose(run(m, a=a, b=b)["y"], a - b, rtol=1e-6)


def test_no_broadcast_without_the_attribute():
    m = model([helper.make_node("Add", ["a", "b"], ["y"], name="add0")], [vi("a", [2, 3]), vi("b", [3])],
              [vi("y", [2, 3])], opset=6)
    with pytest.raises(ConversionError, match=r"Add node 'add0' \(opset 6\): inputs of shapes \[\[2, 3\], \[3\]\] "
                                              r"must have one shape under broadcast=0"):
        minidlc.load(m)


def test_b_must_broadcast_to_a():
    m = model([helper.make_node("Add", ["a", "b"], ["y"], name="add0", broadcast=1)],
              [vi("a", [3]), vi("b", [2, 3])], [vi("y", [2, 3])], opset=6)
    with pytest.raises(ConversionError, match=r"add0.*B of shape \[2, 3\] does not broadcast to A's shape \[3\]"):
        minidlc.load(m)
    m = model([helper.make_node("Add", ["a", "b"], ["y"], name="add1", broadcast=1, axis=1)],
              [vi("a", [2, 3]), vi("b", [3, 1])], [vi("y", [2, 3])], opset=6)
    with pytest.raises(ConversionError, match=r"add1.*B of shape \[3, 1\] does not fit into A of shape \[2, 3\] "
                                              "from axis 1"):
        minidlc.load(m)


def test_variadic_ops_before_opset_8_take_one_shape():
    m = model([helper.make_node("Max", ["a", "b"], ["y"], name="max0")], [vi("a", [2, 3]), vi("b", [3])],
              [vi("y", [2, 3])], opset=6)
    with pytest.raises(ConversionError, match="max0.*must have one shape under opset 6"):
        minidlc.load(m)


def test_prelu_slope_per_channel():
    m = model([helper.make_node("PRelu", ["x", "s"], ["y"])], [vi("x", [2, 3, 4]), vi("s", [3])],
              [vi("y", [2, 3, 4])], opset=6)
    x, s = rng.standard_normal((2, 3, 4), np.float32), rng.standard_normal(3, np.float32)
    np.testing.assert_allclose(run(m, x=x, s=s)["y"], np.where(x < 0, x * s[:, None], x), rtol=1e-6)


def test_gemm_broadcast_attribute():
    inputs = [vi("a", [2, 3]), vi("b", [3, 4]), vi("c", [4])]
    a, b, c = (rng.standard_normal(s, np.float32) for s in ((2, 3), (3, 4), (4,)))
    m = model([helper.make_node("Gemm", ["a", "b", "c"], ["y"], broadcast=1)], inputs, [vi("y", [2, 4])], opset=6)
    np.testing.assert_allclose(run(m, a=a, b=b, c=c)["y"], a @ b + c, rtol=1e-5)
    m = model([helper.make_node("Gemm", ["a", "b", "c"], ["y"], name="g")], inputs, [vi("y", [2, 4])], opset=6)
    with pytest.raises(ConversionError, match=r"'g'.*C of shape \[4\] must be the result's shape \[2, 4\]"):
        minidlc.load(m)


def test_batchnorm_is_test_and_consumed_inputs():
    x = rng.standard_normal((2, 3, 4), np.float32)
    p = [rng.random(3, dtype=np.float32) + 0.5 for _ in range(4)]
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [3], v) for n, v in zip("sbmv", p)]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], is_test=1, epsilon=1e-5,
                            consumed_inputs=[0, 0, 0, 1, 1])
    m = model([node], [vi("x", [2, 3, 4])], [vi("y", [2, 3, 4])], opset=1, inits=inits)
    s, b, mean, var = (v[:, None] for v in p)
    np.testing.assert_allclose(run(m, x=x)["y"], (x - mean) / np.sqrt(var + 1e-5) * s + b, rtol=1e-5, atol=1e-6)


def test_unsupported_version_names_the_opset_and_the_supported_range():
    m = model([helper.make_node("Reshape", ["x"], ["y"], shape=[6])], [vi("x", [2, 3])], [vi("y", [6])], opset=4)
    with pytest.raises(UnsupportedOpError, match=r"Reshape \(1 node; the version of Reshape in opset 4 \(since "
                                                 r"opset 1\) is not supported; supported from opset 5\)"):
        minidlc.load(m)
