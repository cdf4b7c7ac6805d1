"""Quantization ops: ONNX semantics in the reference, native integer kernels
on the CPU backends, constant folding that keeps int8 weights int8.
(The ONNX node tests of these ops run in test_onnx_conformance.py.)"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import minidlc
from minidlc.ir import IRError
from minidlc.loops.gemm import int8_word_values
from ort_util import ORT_U8S8_EXACT

TARGETS = ["llvm", "numba"]
WORD_CALL = "dot4" if int8_word_values() == 4 else "dot2"  # what this CPU's int8 products step by
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
@pytest.mark.parametrize("a_dtype,zb_range,k", [(np.uint8, (-3, 3), 70), (np.uint8, (0, 1), 70), (np.int8, (0, 1), 70),
                                                (np.uint8, (0, 1), 13)])
def test_matmul_integer_with_constant_weights_is_native(target, a_dtype, zb_range, k):
    """Symmetric int8 weights (zero point 0) take the dot4 path, k in words of
    four bytes (an s8 A shifted into u8, k = 13 padded); others the widening one."""
    info = np.iinfo(a_dtype)
    a = rng.integers(info.min, info.max + 1, (37, k)).astype(a_dtype)
    b = rng.integers(-128, 128, (k, 45)).astype(np.int8)
    zb = rng.integers(*zb_range, (45,)).astype(np.int8)
    za = np.array(info.min + 129, a_dtype)
    model = _model([helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])],
                   [_vi("a", helper.np_dtype_to_tensor_dtype(np.dtype(a_dtype)), [37, k])],
                   [_vi("y", TensorProto.INT32, [37, 45])], [("b", b), ("za", za), ("zb", zb)])
    m = minidlc.compile(model, target=target)
    assert _native(m)
    assert (f"{WORD_CALL}(" in m.emit("loops")) == (not np.any(zb))
    want = (a.astype(np.int32) - za.astype(np.int32)) @ (b.astype(np.int32) - zb.astype(np.int32))
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
    assert (f"{WORD_CALL}(" in m.emit("loops")) == (group == 1)  # grouped int8 convs widen to i32 instead
    np.testing.assert_array_equal(m.run({"x": x})["y"], want)
    if ORT_U8S8_EXACT:  # (see there: else onnxruntime is the one off)
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


@pytest.mark.parametrize("features", [(), ("sse2", "avx", "avx2")])
def test_int8_words_without_vnni_are_exact(monkeypatch, tmp_path, features):
    """On a CPU without VNNI, the words hold two k as i16 halves and dot2
    adds their products in i32 (AVX2's pmaddwd, or plain multiplies): exact,
    where a vpmaddubsw of u8 255 * s8 -128 pairs would saturate."""
    from minidlc import cpu
    from minidlc.backends import cache
    if not all(cpu.has(f) for f in features):
        pytest.skip(f"this CPU lacks one of {features}")
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)  # code compiled for this pretend CPU stays apart
    monkeypatch.setattr(cpu, "has", lambda feature: feature in features)  # (what every code generator asks)
    a = np.full((8, 64), 255, np.uint8)
    b = np.full((64, 32), -128, np.int8)
    model = _model([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], [_vi("a", TensorProto.UINT8, [8, 64])],
                   [_vi("y", TensorProto.INT32, [8, 32])], [("b", b)])
    m = minidlc.compile(model, target="llvm")
    asm = m.emit("asm")
    assert "dot2(" in m.emit("loops") and "vpdpbusd" not in asm and (not features or "vpmaddwd" in asm)
    np.testing.assert_array_equal(m.run({"a": a})["y"], np.full((8, 32), 64 * 255 * -128, np.int32))


def test_qlinear_matmul_rejects_a_per_row_scale():
    inits = [("a_s", np.array([0.01, 0.02, 0.03, 0.04], np.float32)), ("a_z", np.array(0, np.uint8)),
             ("b", np.ones((4, 4), np.uint8)), ("b_s", np.array(0.1, np.float32)), ("b_z", np.array(0, np.uint8)),
             ("y_s", np.array(0.5, np.float32)), ("y_z", np.array(0, np.uint8))]
    model = _model([helper.make_node("QLinearMatMul", ["a", "a_s", "a_z", "b", "b_s", "b_z", "y_s", "y_z"], ["y"],
                                     name="qmm")],
                   [_vi("a", TensorProto.UINT8, [4, 4])], [_vi("y", TensorProto.UINT8, [4, 4])], inits)
    with pytest.raises(IRError, match=r"QLinearMatMul node 'qmm'.*a_scale has shape \[4\]"):
        minidlc.load(model)
