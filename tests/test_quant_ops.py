"""Quantization ops: ONNX semantics in the reference, native integer kernels
on the CPU backends, constant folding that keeps int8 weights int8.
(The ONNX node tests of these ops run in test_onnx_conformance.py.)"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import minidlc
from minidlc.ir import IRError

TARGETS = ["llvm", "numba"]
rng = np.random.default_rng(0)


def _model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "q", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def _native(m) -> bool:
    return "runs on NumPy" not in m.emit("loops")


def test_quantize_rounds_half_to_even_and_saturates():
    x = np.array([-300.0, -0.5, 0.5, 1.5, 2.5, 3.49, 1e9, np.nan], np.float32)
    model = _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])],
                   [_vi("x", TensorProto.FLOAT, [8])], [_vi("y", TensorProto.INT8, [8])],
                   [("s", np.array(1.0, np.float32)), ("z", np.array(1, np.int8))])
    want = np.array([-128, 1, 1, 3, 3, 4, 127], np.int8)  # round(-0.5)=-0, round(0.5)=0, round(2.5)=2
    for target in ["reference"] + TARGETS:
        got = minidlc.compile(model, target=target).run({"x": x})["y"]
        assert got[:7].tolist() == want.tolist(), target


@pytest.mark.parametrize("target", TARGETS)
def test_matmul_integer_with_constant_weights_is_native(target):
    a = rng.integers(0, 256, (37, 70)).astype(np.uint8)
    b = rng.integers(-128, 128, (70, 45)).astype(np.int8)
    zb = rng.integers(-3, 3, (45,)).astype(np.int8)  # per column: packed as i16
    model = _model([helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])],
                   [_vi("a", TensorProto.UINT8, [37, 70])], [_vi("y", TensorProto.INT32, [37, 45])],
                   [("b", b), ("za", np.array(129, np.uint8)), ("zb", zb)])
    m = minidlc.compile(model, target=target)
    assert _native(m)
    want = (a.astype(np.int32) - 129) @ (b.astype(np.int32) - zb.astype(np.int32))
    np.testing.assert_array_equal(m.run({"a": a})["y"], want)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("group,stride,pads,channels", [(1, 1, [1, 1, 1, 1], 16), (1, 2, [0, 1, 2, 0], 4),
                                                        (2, 1, [1, 0, 1, 0], 8)])
def test_qlinear_conv_is_native_and_exact(target, group, stride, pads, channels):
    x = rng.integers(0, 256, (2, 4, 9, 11)).astype(np.uint8)
    w = rng.integers(-127, 128, (channels, 4 // group, 3, 3)).astype(np.int8)
    inits = [("xs", np.array(0.02, np.float32)), ("xz", np.array(100, np.uint8)), ("w", w),
             ("ws", rng.uniform(0.001, 0.01, channels).astype(np.float32)), ("wz", np.zeros(channels, np.int8)),
             ("ys", np.array(0.5, np.float32)), ("yz", np.array(7, np.uint8)),
             ("bias", rng.integers(-1000, 1000, channels).astype(np.int32))]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "bias"], ["y"],
                            strides=[stride, stride], pads=pads, group=group)
    model = _model([node], [_vi("x", TensorProto.UINT8, x.shape)], [_vi("y", TensorProto.UINT8, None)], inits)
    want = minidlc.compile(model, target="reference").run({"x": x})["y"]
    m = minidlc.compile(model, target=target)
    assert _native(m)
    np.testing.assert_array_equal(m.run({"x": x})["y"], want)
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0].astype(int), want.astype(int), atol=1)


def test_fold_keeps_int8_weights_int8():
    w = rng.integers(-127, 128, (1000,)).astype(np.int8)
    model = _model([helper.make_node("DequantizeLinear", ["w", "s"], ["wf"]), helper.make_node("Add", ["x", "wf"], ["y"])],
                   [_vi("x", TensorProto.FLOAT, [1000])], [_vi("y", TensorProto.FLOAT, [1000])],
                   [("w", w), ("s", np.array(0.1, np.float32))])
    m = minidlc.compile(model, target="reference", opt_level=1)
    consts = [n.attrs["value"] for n in m.graph.nodes if n.op == "Constant"]
    assert any(c.dtype == np.int8 and c.size == 1000 for c in consts)
    assert not any(c.dtype == np.float32 and c.size == 1000 for c in consts)


def test_bad_scale_shape_names_the_node():
    model = _model([helper.make_node("QuantizeLinear", ["x", "s"], ["y"], name="q1", axis=1)],
                   [_vi("x", TensorProto.FLOAT, [2, 3])], [_vi("y", TensorProto.UINT8, [2, 3])],
                   [("s", np.ones(4, np.float32))])
    with pytest.raises(IRError, match=r"q1.*scale has shape \[4\].*length 3"):
        minidlc.load(model)
