"""The neural-network ops against onnxruntime, one ONNX node at a time.

Each case builds a one-node model with onnx.helper (weights and shape-like
operands as initializers, data as graph inputs), runs it through minidlc's
reference backend with no passes and through onnxruntime, and compares.
Older opsets check that the converters normalize each version's semantics.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import minidlc
from minidlc.frontends.onnx.converters import ConversionError
from minidlc.ir import IRError
from minidlc.ir.registry import Kind, get_op

RNG = np.random.default_rng(0)

_ONNX_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
              np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int64): TensorProto.INT64}


def rand(*shape, dtype=np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def one_node_model(op: str, feeds: dict, consts: dict | None = None, attrs: dict | None = None,
                   opset: int = 22, n_outputs: int = 1, inputs: list[str] | None = None) -> onnx.ModelProto:
    """A model with one `op` node reading `inputs` (default: feeds, then consts, in
    that order; '' marks an omitted optional input)."""
    consts = consts or {}
    names = inputs if inputs is not None else list(feeds) + list(consts)
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outs, name="node0", **(attrs or {}))
    graph = helper.make_graph(
        [node], "one_node",
        [helper.make_tensor_value_info(k, _ONNX_TYPE[v.dtype], v.shape) for k, v in feeds.items()],
        [helper.make_empty_tensor_value_info(o) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def check(op: str, feeds: dict, consts: dict | None = None, attrs: dict | None = None, opset: int = 22,
          n_outputs: int = 1, inputs: list[str] | None = None, rtol=1e-4, atol=1e-5) -> None:
    """minidlc (reference backend, no passes) agrees with onnxruntime on every output."""
    model = one_node_model(op, feeds, consts, attrs, opset, n_outputs, inputs)
    ours = minidlc.compile(model, target="reference", opt_level=0).run(feeds)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = sess.run(None, feeds)
    for i, want in enumerate(theirs):
        got = ours[f"y{i}"]
        assert got.shape == want.shape and got.dtype == want.dtype, f"output {i}: {got.dtype}{got.shape} vs {want.dtype}{want.shape}"
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"output y{i}")


def load_error(op: str, feeds: dict, consts=None, attrs=None, opset: int = 22, n_outputs: int = 1, inputs=None) -> str:
    with pytest.raises(IRError) as e:
        minidlc.load(one_node_model(op, feeds, consts, attrs, opset, n_outputs, inputs))
    return str(e.value)


# ---- MatMul, Gemm, Einsum ------------------------------------------------------------
@pytest.mark.parametrize("a,b", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (2, 4, 3)), ((2, 1, 3, 4), (5, 4, 2)),
                                 ((4,), (4,)), ((2, 3, 4), (4,))])
def test_matmul(a, b):
    check("MatMul", {"a": rand(*a), "b": rand(*b)}, opset=13)


@pytest.mark.parametrize("attrs", [{}, {"transA": 1}, {"transB": 1}, {"alpha": 0.5, "beta": 2.0, "transA": 1, "transB": 1}])
@pytest.mark.parametrize("c_shape", [None, (), (5,), (1, 5), (3, 1), (3, 5)])
def test_gemm(attrs, c_shape):
    a = rand(4, 3) if attrs.get("transA") else rand(3, 4)
    b = rand(5, 4) if attrs.get("transB") else rand(4, 5)
    consts = {"b": b} | ({} if c_shape is None else {"c": rand(*c_shape)})
    check("Gemm", {"a": a}, consts, attrs, opset=13)


def test_gemm_opset7_requires_c_and_broadcasts_it():
    check("Gemm", {"a": rand(3, 4)}, {"b": rand(4, 5), "c": rand(5)}, {"beta": 0.5}, opset=7)


@pytest.mark.parametrize("equation,shapes", [
    ("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("ij->ji", [(3, 4)]),
    ("ij->i", [(3, 4)]), ("i,i", [(5,), (5,)]), ("ij,jk", [(3, 4), (4, 5)]), ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]), ("ii->i", [(4, 4)])])
def test_einsum(equation, shapes):
    check("Einsum", {f"x{i}": rand(*s) for i, s in enumerate(shapes)}, attrs={"equation": equation}, opset=12)


# ---- Conv, ConvTranspose ------------------------------------------------------------
CONV_CASES = [
    ((1, 3, 8, 8), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 4, 9, 7), (6, 2, 3, 2), {"group": 2, "strides": [2, 1], "pads": [0, 1, 2, 0]}),
    ((1, 3, 10, 10), (4, 3, 3, 3), {"dilations": [2, 2], "strides": [1, 2]}),
    ((1, 4, 7, 7), (4, 1, 3, 3), {"group": 4, "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 2, 6, 7), (3, 2, 4, 2), {"auto_pad": "SAME_LOWER"}),
    ((1, 2, 6, 7), (3, 2, 3, 3), {"auto_pad": "VALID", "kernel_shape": [3, 3]}),
    ((2, 3, 11), (5, 3, 3), {"strides": [2], "pads": [1, 2]}),
    ((1, 2, 5, 4, 6), (3, 2, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1]}),
]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("x,w,attrs", CONV_CASES)
def test_conv(x, w, attrs, bias):
    consts = {"w": rand(*w)} | ({"b": rand(w[0])} if bias else {})
    check("Conv", {"x": rand(*x)}, consts, attrs)


def test_conv_opset1_version():
    check("Conv", {"x": rand(1, 2, 5, 5)}, {"w": rand(3, 2, 3, 3)}, {"pads": [1, 1, 1, 1]}, opset=9)


CONVT_CASES = [
    ((1, 2, 3, 3), (2, 3, 3, 3), {}),
    ((1, 2, 3, 4), (2, 3, 3, 3), {"strides": [2, 2], "output_padding": [1, 0]}),
    ((1, 2, 4, 4), (2, 2, 3, 3), {"strides": [2, 2], "pads": [1, 0, 1, 2]}),
    ((2, 4, 3, 3), (4, 2, 2, 3), {"group": 2, "dilations": [2, 1]}),
    ((1, 1, 3, 3), (1, 2, 3, 3), {"strides": [3, 2], "output_shape": [10, 8]}),
    ((1, 1, 3, 3), (1, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 1, 3, 3), (1, 2, 4, 4), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((1, 3, 5), (3, 2, 3), {"strides": [3], "pads": [1, 1]}),
]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("x,w,attrs", CONVT_CASES)
def test_conv_transpose(x, w, attrs, bias):
    consts = {"w": rand(*w)} | ({"b": rand(w[1] * attrs.get("group", 1))} if bias else {})
    check("ConvTranspose", {"x": rand(*x)}, consts, attrs)


# ---- pools -----------------------------------------------------------------------------
POOL_CASES = [
    ((1, 2, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((2, 3, 7, 5), {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1], "strides": [2, 1]}),
    ((1, 2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 2, 8, 8), {"kernel_shape": [3, 3], "strides": [3, 3], "ceil_mode": 1, "pads": [1, 1, 1, 1]}),
    ((1, 2, 7, 6), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 2, 7, 6), {"kernel_shape": [2, 3], "auto_pad": "SAME_LOWER"}),
    ((1, 3, 9), {"kernel_shape": [3], "strides": [2]}),
    ((1, 1, 4, 5, 6), {"kernel_shape": [2, 2, 3], "pads": [0, 1, 1, 1, 0, 1]}),
]


@pytest.mark.parametrize("x,attrs", POOL_CASES)
def test_max_pool(x, attrs):
    check("MaxPool", {"x": rand(*x)}, attrs=attrs)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("x,attrs", [POOL_CASES[1], POOL_CASES[3], POOL_CASES[6]])
def test_max_pool_indices(x, attrs, storage_order):
    check("MaxPool", {"x": rand(*x)}, attrs=attrs | {"storage_order": storage_order}, n_outputs=2)


def test_max_pool_dilations_and_uint8():
    check("MaxPool", {"x": rand(1, 2, 9, 9)}, attrs={"kernel_shape": [2, 2], "dilations": [2, 3], "strides": [1, 2]})
    x = RNG.integers(0, 255, (1, 2, 6, 6)).astype(np.uint8)
    check("MaxPool", {"x": x}, attrs={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("x,attrs", POOL_CASES)
def test_average_pool(x, attrs, count_include_pad):
    check("AveragePool", {"x": rand(*x)}, attrs=attrs | {"count_include_pad": count_include_pad})


def test_average_pool_dilations():
    check("AveragePool", {"x": rand(1, 2, 9, 9)},
          attrs={"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1},
          opset=19)


def test_pools_opset7():
    check("MaxPool", {"x": rand(1, 2, 6, 6)}, attrs={"kernel_shape": [2, 2], "pads": [1, 1, 0, 0]}, opset=7)
    check("AveragePool", {"x": rand(1, 2, 6, 6)}, attrs={"kernel_shape": [3, 3], "count_include_pad": 1}, opset=7)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 4, 5)])
def test_global_pools(op, shape):
    check(op, {"x": rand(*shape)})


# ---- normalizations ---------------------------------------------------------------------
@pytest.mark.parametrize("opset", [7, 9, 14, 15])
@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4, 5)])
def test_batch_norm(shape, opset):
    c = shape[1]
    params = {"scale": rand(c), "bias": rand(c), "mean": rand(c), "var": RNG.random(c).astype(np.float32) + 0.5}
    check("BatchNormalization", {"x": rand(*shape)}, params, {"epsilon": 1e-3}, opset=opset)


@pytest.mark.parametrize("axis", [-1, 1, 0])
@pytest.mark.parametrize("bias", [False, True])
def test_layer_norm(axis, bias):
    x = rand(2, 3, 4)
    norm_shape = x.shape[axis % 3:]
    consts = {"scale": rand(*norm_shape)} | ({"b": rand(*norm_shape)} if bias else {})
    check("LayerNormalization", {"x": x}, consts, {"axis": axis, "epsilon": 1e-3}, opset=17, n_outputs=3)


def test_layer_norm_broadcast_scale_and_transformer_shape():
    check("LayerNormalization", {"x": rand(2, 128, 256)}, {"scale": rand(256), "b": rand(256)}, opset=17)


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5)])
def test_instance_norm(shape):
    check("InstanceNormalization", {"x": rand(*shape)}, {"scale": rand(3), "b": rand(3)}, {"epsilon": 1e-3})


@pytest.mark.parametrize("attrs", [{"size": 3}, {"size": 5, "alpha": 0.01, "beta": 0.5, "bias": 2.0}, {"size": 1}])
def test_lrn(attrs):
    check("LRN", {"x": rand(2, 6, 3, 3)}, attrs=attrs)


# ---- softmax ------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,attrs", [(13, {}), (13, {"axis": 0}), (13, {"axis": 1}), (11, {}), (11, {"axis": 0}),
                                         (11, {"axis": -1}), (7, {"axis": 2}), (7, {})])
def test_softmax(op, opset, attrs):
    check(op, {"x": rand(2, 3, 4, 5) * 5}, attrs=attrs, opset=opset)


def test_old_softmax_flattens_at_axis():
    """Before opset 13, softmax normalizes over all axes from `axis` on."""
    g = minidlc.load(one_node_model("Softmax", {"x": rand(2, 3, 4)}, attrs={"axis": 1}, opset=11))
    assert [n.op for n in g.nodes if n.op != "Constant"] == ["Reshape", "Softmax", "Reshape"]


# ---- Resize, Upsample -----------------------------------------------------------------------
def _resize(x, opset=19, scales=None, sizes=None, roi=None, **attrs):
    consts = {"roi": np.asarray(roi or [], np.float32), "scales": np.asarray(scales or [], np.float32)}
    names = ["x", "roi", "scales"]
    if sizes is not None:
        consts["sizes"] = np.asarray(sizes, np.int64)
        names.append("sizes")
    return dict(feeds={"x": x}, consts=consts, attrs=attrs, opset=opset, inputs=names)


RESIZE_CASES = [
    _resize(rand(1, 2, 3, 4), scales=[1, 1, 2, 1.5]),
    _resize(rand(1, 2, 6, 8), scales=[1, 1, 0.5, 0.6]),
    _resize(rand(1, 2, 3, 4), sizes=[1, 2, 7, 5], nearest_mode="round_prefer_ceil",
            coordinate_transformation_mode="asymmetric"),
    _resize(rand(1, 2, 3, 4), sizes=[1, 2, 7, 9], nearest_mode="floor", coordinate_transformation_mode="align_corners"),
    _resize(rand(1, 2, 3, 4), scales=[1, 1, 2.5, 2], nearest_mode="ceil",
            coordinate_transformation_mode="tf_half_pixel_for_nn", opset=13),
    _resize(rand(1, 2, 4, 4), scales=[1, 1, 2, 2], mode="linear"),
    _resize(rand(1, 2, 5, 7), sizes=[1, 2, 3, 4], mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    _resize(rand(1, 2, 5, 7), sizes=[1, 2, 9, 4], mode="linear", coordinate_transformation_mode="align_corners"),
    _resize(rand(1, 2, 5, 7), scales=[1, 1, 1.7, 0.8], mode="linear", coordinate_transformation_mode="asymmetric"),
    _resize(rand(2, 3, 6), scales=[1, 1, 3], mode="linear"),
    _resize(rand(1, 1, 4, 4), scales=[1, 1, 2, 1.5], mode="cubic"),
    _resize(rand(1, 1, 6, 6), sizes=[1, 1, 4, 9], mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1),
    _resize(rand(1, 1, 8, 8), scales=[1, 1, 0.5, 0.75], mode="linear", antialias=1),
    _resize(rand(1, 1, 5, 5), roi=[0, 0, 0.2, 0.3, 1, 1, 0.9, 0.8], sizes=[1, 1, 4, 6], mode="linear",
            coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=2.0),
    _resize(rand(1, 2, 4, 6), sizes=[5, 5], axes=[2, 3], keep_aspect_ratio_policy="not_larger"),
    _resize(rand(1, 2, 4, 6), sizes=[5, 5], axes=[3, 2], keep_aspect_ratio_policy="not_smaller", mode="linear"),
    _resize(rand(1, 2, 4, 6), scales=[2, 0.5], axes=[-1, 2], mode="linear", opset=18),
]


@pytest.mark.parametrize("case", RESIZE_CASES)
def test_resize(case):
    check("Resize", **case)


def test_resize_opset11_and_uint8():
    check("Resize", **_resize(rand(1, 2, 3, 4), opset=11, scales=[1, 1, 2, 3], mode="linear"))
    x = RNG.integers(0, 255, (1, 1, 3, 4)).astype(np.uint8)
    check("Resize", **_resize(x, opset=11, sizes=[1, 1, 5, 5], mode="nearest"))


@pytest.mark.parametrize("mode,scales", [("nearest", [1, 1, 2, 3]), ("linear", [1, 1, 2, 1.5]), ("nearest", [1, 1, 0.5, 0.5])])
def test_resize_opset10(mode, scales):
    check("Resize", {"x": rand(1, 2, 4, 6)}, {"scales": np.asarray(scales, np.float32)}, {"mode": mode}, opset=10)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample(mode):
    scales = np.asarray([1, 1, 2, 3], np.float32)
    check("Upsample", {"x": rand(1, 2, 3, 4)}, {"scales": scales}, {"mode": mode}, opset=9)
    check("Upsample", {"x": rand(1, 2, 3, 4)}, attrs={"mode": mode, "scales": [1.0, 1.0, 2.0, 3.0]}, opset=7)


# ---- declarations -----------------------------------------------------------------------------
def test_fusion_kinds():
    kinds = {op: get_op(op).kind for op in ("MatMul", "Gemm", "Conv", "Softmax", "LogSoftmax", "LayerNormalization",
                                            "InstanceNormalization", "GlobalAveragePool", "MaxPool",
                                            "BatchNormalization", "Resize")}
    assert kinds == {"MatMul": Kind.OUT_FUSABLE, "Gemm": Kind.OUT_FUSABLE, "Conv": Kind.OUT_FUSABLE,
                     "Softmax": Kind.REDUCTION, "LogSoftmax": Kind.REDUCTION, "LayerNormalization": Kind.REDUCTION,
                     "InstanceNormalization": Kind.REDUCTION, "GlobalAveragePool": Kind.REDUCTION,
                     "MaxPool": Kind.OPAQUE, "BatchNormalization": Kind.OPAQUE, "Resize": Kind.OPAQUE}


def test_auto_pad_becomes_explicit_pads():
    g = minidlc.load(one_node_model("Conv", {"x": rand(1, 1, 5, 5)}, {"w": rand(1, 1, 2, 2)},
                                    {"auto_pad": "SAME_UPPER", "strides": [2, 2]}))
    conv, = (n for n in g.nodes if n.op == "Conv")
    assert conv.attrs["pads"] == [0, 0, 1, 1] and "auto_pad" not in conv.attrs
    assert "pads=[0, 0, 1, 1]" in str(g)


def test_resize_scales_become_attributes():
    g = minidlc.load(one_node_model("Resize", **_resize(rand(1, 2, 3, 4), sizes=[6], axes=[3], mode="linear")))
    resize, = (n for n in g.nodes if n.op == "Resize")
    assert resize.inputs == [g.inputs[0]] and resize.attrs["sizes"] == [1, 2, 3, 6]
    assert resize.outputs[0].type.shape == (1, 2, 3, 6)


# ---- errors -------------------------------------------------------------------------------------
def _bn_params(c=3):
    return {"scale": rand(c), "bias": rand(c), "mean": rand(c), "var": rand(c) ** 2}


def test_error_batch_norm_training_mode():
    msg = load_error("BatchNormalization", {"x": rand(2, 3, 4)}, _bn_params(), {"training_mode": 1}, opset=15)
    assert "BatchNormalization node 'node0' (opset 15)" in msg and "training_mode=1 is not supported" in msg


def test_error_batch_norm_statistics_outputs():
    msg = load_error("BatchNormalization", {"x": rand(2, 3, 4)}, _bn_params(), opset=9, n_outputs=3)
    assert "running or saved statistics" in msg and "y1" in msg


def test_error_resize_unsupported_mode():
    msg = load_error("Resize", **_resize(rand(1, 1, 2, 2), scales=[1, 1, 2, 2], mode="bicubic"))
    assert "Resize" in msg and "mode='bicubic' is not supported" in msg and "'cubic'" in msg


def test_error_resize_runtime_scales():
    model = one_node_model("Resize", {"x": rand(1, 1, 2, 2), "scales": rand(4)}, {"roi": np.zeros(0, np.float32)},
                           inputs=["x", "roi", "scales"], opset=13)
    with pytest.raises(ConversionError, match=r"scales \(%scales\) must be known at compile time"):
        minidlc.load(model)


def test_error_legacy_resize_mixed_scales():
    msg = load_error("Upsample", {"x": rand(1, 1, 4, 4)}, {"scales": np.array([1, 1, 2, 0.5], np.float32)}, opset=9)
    assert "mix upsampling and downsampling" in msg


def test_error_conv_kernel_shape_mismatch():
    msg = load_error("Conv", {"x": rand(1, 2, 5, 5)}, {"w": rand(3, 2, 3, 3)}, {"kernel_shape": [2, 2]})
    assert "kernel_shape [2, 2] does not match the weight's spatial shape [3, 3]" in msg


def test_error_conv_channels():
    msg = load_error("Conv", {"x": rand(1, 4, 5, 5)}, {"w": rand(3, 3, 3, 3)})
    assert "Conv" in msg and "expects 3 input channels" in msg


def test_error_bad_auto_pad():
    msg = load_error("MaxPool", {"x": rand(1, 1, 4, 4)}, attrs={"kernel_shape": [2, 2], "auto_pad": "SAME"})
    assert "auto_pad='SAME'" in msg


def test_error_matmul_shapes():
    msg = load_error("MatMul", {"a": rand(2, 3)}, {"b": rand(4, 5)})
    assert "MatMul" in msg and "inner dimensions differ: [2, 3] @ [4, 5]" in msg


def test_error_einsum_equation():
    msg = load_error("Einsum", {"a": rand(2, 3)}, attrs={"equation": "ijk->i"}, opset=12)
    assert "term 'ijk' does not fit input of shape [2, 3]" in msg


def test_error_layer_norm_scale_shape():
    msg = load_error("LayerNormalization", {"x": rand(2, 3, 4)}, {"scale": rand(3)}, opset=17)
    assert "Scale [3] does not broadcast to the normalized shape [4]" in msg


# ---- the demo models' sizes stay fast in the reference ---------------------------------------------------
def test_conv_at_demo_size_is_vectorized():
    """The convnet demo's first layer (8x3x64x64) runs in well under a second."""
    import time

    x, w = rand(8, 16, 64, 64), rand(16, 16, 3, 3)
    conv = get_op("Conv")
    t = time.perf_counter()
    (y,) = conv.evaluate([x, w, None], {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1})
    assert time.perf_counter() - t < 2.0 and y.shape == (8, 16, 64, 64)
