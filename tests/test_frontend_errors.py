"""Bad input gives a clear error that names the thing at fault (API level)."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import minidlc
from minidlc.frontends.onnx import ModelLoadError, UnsupportedOpError


def model(nodes, inputs, outputs, opset=17, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


RELU = model([helper.make_node("Relu", ["x"], ["y"], name="relu1")], [vi("x", [2, 3])], [vi("y", [2, 3])])


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="model file not found: .*nope.onnx"):
        minidlc.load(tmp_path / "nope.onnx")


def test_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="is a directory"):
        minidlc.load(tmp_path)


def test_malformed_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage\xff\xff\xff not a protobuf")
    with pytest.raises(ModelLoadError, match="bad.onnx is not a valid ONNX model"):
        minidlc.load(bad)


def test_unsupported_ops_reported_all_at_once_as_a_table():
    m = model([helper.make_node("Relu", ["x"], ["a"]),
               helper.make_node("FancyOp", ["a"], ["b"], name="f1"),
               helper.make_node("FancyOp", ["b"], ["c"], name="f2"),
               helper.make_node("Special", ["c"], ["y"], domain="com.vendor")],
              [vi("x", [2])], [vi("y", [2])])
    m.opset_import.append(helper.make_opsetid("com.vendor", 1))
    with pytest.raises(UnsupportedOpError) as e:
        minidlc.load(m)
    msg = str(e.value)
    assert msg.splitlines()[0] == ("model uses 2 unsupported op type(s): FancyOp (2 nodes; no converter for this "
                                   "op), Special (1 node; domain 'com.vendor' is not supported (only the default "
                                   "ONNX domain))")
    assert "FancyOp" in msg and "missing: no converter for this op" in msg
    assert "domain 'com.vendor' is not supported" in msg
    assert any(r["op"] == "Relu" and r["status"] == "supported" for r in e.value.table)
    row = next(r for r in e.value.table if r["op"] == "FancyOp")
    assert (row["opset"], row["count"]) == (17, 2)


def test_dynamic_dimension_needs_binding():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["batch", 3])], [vi("y", ["batch", 3])])
    with pytest.raises(ModelLoadError, match=r"dynamic dimension 'batch'.*--input-shape x=1,3"):
        minidlc.load(m)
    g = minidlc.load(m, input_shapes={"x": (5, 3)})
    assert g.inputs[0].type.shape == (5, 3)
    with pytest.raises(ModelLoadError, match=r"bound shape \[5, 4\] does not match the declared shape \['batch', 3\]"):
        minidlc.load(m, input_shapes={"x": (5, 4)})
    with pytest.raises(ModelLoadError, match="names \\['z'\\], which are not graph inputs"):
        minidlc.load(m, input_shapes={"x": (5, 3), "z": (1,)})


def test_unsupported_attribute_value_names_node_and_opset():
    m = model([helper.make_node("Gelu", ["x"], ["y"], name="act", approximate="fast")],
              [vi("x", [2])], [vi("y", [2])], opset=20)
    with pytest.raises(minidlc.ir.IRError, match=r"Gelu node 'act' \(opset 20\).*approximate='fast' is not supported"):
        minidlc.load(m)


def test_unsupported_input_dtype_names_the_input():
    m = model([helper.make_node("Identity", ["s"], ["y"])], [vi("s", [2], TensorProto.STRING)],
              [vi("y", [2], TensorProto.STRING)])
    with pytest.raises(minidlc.ir.IRError, match="graph input 's': dtype STRING is not supported"):
        minidlc.load(m)


@pytest.mark.parametrize("feeds,pattern", [
    ({}, r"missing input\(s\) \['x'\]; the model takes x: f32\[2,3\]"),
    ({"x": np.zeros((2, 3), np.float32), "z": np.zeros(1)}, r"unexpected input\(s\) \['z'\]"),
    ({"x": np.zeros((3, 2), np.float32)}, r"input 'x' has shape \[3, 2\], expected \[2, 3\]"),
    ({"x": np.zeros((2, 3), np.float64)}, r"input 'x' has dtype f64, expected f32"),
    ({"x": np.array([["a"] * 3] * 2)}, r"input 'x' has dtype <U1, expected f32"),
])
def test_run_checks_inputs(feeds, pattern):
    m = minidlc.compile(RELU, target="reference")
    with pytest.raises(minidlc.InputError, match=pattern):
        m.run(feeds)


def test_run_returns_outputs_by_name():
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    out = minidlc.compile(RELU, target="reference").run({"x": x})
    assert list(out) == ["y"]
    np.testing.assert_array_equal(out["y"], np.maximum(x, 0))


def test_unknown_target():
    with pytest.raises(ValueError, match="unknown target 'tpu'"):
        minidlc.compile(RELU, target="tpu")


def test_a_value_defined_twice_is_an_error_naming_it_and_both_definitions():
    """onnxruntime and the ONNX checker reject this; it used to load, and one definition silently won."""
    m = model([helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["y"], name="b")],
              [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(ModelLoadError, match="value 'y' is defined twice: by Neg node 'b' and by Relu node 'a'"):
        minidlc.load(m)
    m = model([helper.make_node("Relu", ["x"], ["x"], name="a")], [vi("x", [2])], [vi("x", [2])])
    with pytest.raises(ModelLoadError, match="value 'x' is defined twice: by Relu node 'a' and by graph input 'x'"):
        minidlc.load(m)
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    m = model([helper.make_node("Add", ["x", "w"], ["w"], name="a")], [vi("x", [2])], [vi("w", [2])], inits=[w])
    with pytest.raises(ModelLoadError, match="value 'w' is defined twice: by Add node 'a' and by initializer 'w'"):
        minidlc.load(m)


@pytest.mark.parametrize("declared,dtype,message", [
    ([3], TensorProto.FLOAT, r"initializer 'w' has shape \[2\], but the graph input of that name says \[3\]"),
    ([2], TensorProto.INT64, "initializer 'w' has element type FLOAT, but the graph input of that name says INT64"),
])
def test_an_initializer_that_contradicts_its_graph_input_is_an_error(declared, dtype, message):
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    m = model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x", [2]), vi("w", declared, dtype)], [vi("y", [2])],
              inits=[w])
    with pytest.raises(ModelLoadError, match=message):
        minidlc.load(m)


def test_an_initializer_listed_as_an_input_too_still_loads():
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    m = model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x", [2]), vi("w", [2])], [vi("y", [2])], inits=[w])
    out = minidlc.compile(m).run({"x": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(out["y"], [1.0, 2.0])
