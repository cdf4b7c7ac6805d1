"""`--emit onnx`: the optimized graph back to ONNX, fused groups as ONNX
functions. The export must pass the ONNX checker and compute, in
onnxruntime, what the original model computes."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import minidlc
from minidlc.cli import main
from minidlc.demo_models import build_model
from onnx_fuzz import onnxruntime_outputs


def _same_in_onnxruntime(original: onnx.ModelProto, exported: onnx.ModelProto, feeds: dict) -> None:
    onnx.checker.check_model(exported, full_check=True)
    want, got = onnxruntime_outputs(original, feeds), onnxruntime_outputs(exported, feeds)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("name", ["mlp", "convnet", "tfblock"])
def test_demo_models_export_with_groups_as_functions(name):
    model = build_model(name)
    m = minidlc.compile(model)
    exported = m.to_onnx()
    groups = [n for n in m.graph.nodes if n.op == "Fused"]
    assert len(exported.functions) == len(groups) > 0
    assert {f.domain for f in exported.functions} == {"minidlc.fused"}
    _same_in_onnxruntime(model, exported, m.random_inputs(seed=2))


def test_attributes_that_were_inputs_become_inputs_again():
    """Slice, ReduceSum, Squeeze, Unsqueeze, Pad, Tile, Cast, Trilu, CumSum at -O0 (no folding)."""
    ints = lambda name, *v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [helper.make_node("Slice", ["x", "s0", "s1", "s2", "s3"], ["a"]),
             helper.make_node("ReduceSum", ["a", "ax"], ["b"], keepdims=1),
             helper.make_node("Squeeze", ["b", "sq"], ["c"]),
             helper.make_node("Unsqueeze", ["c", "sq"], ["d"]),
             helper.make_node("Pad", ["d", "pads"], ["e"]),
             helper.make_node("Tile", ["e", "reps"], ["f"]),
             helper.make_node("Trilu", ["f"], ["g"], upper=0),
             helper.make_node("CumSum", ["g", "axis"], ["h"], reverse=1),
             helper.make_node("Cast", ["h"], ["y"], to=TensorProto.DOUBLE)]
    inits = [ints("s0", 0), ints("s1", 4), ints("s2", 1), ints("s3", 2), ints("ax", 2), ints("sq", 2),
             ints("pads", 0, 1, 0, 0, 1, 0), ints("reps", 1, 2, 1), ints("axis", 1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    exported = minidlc.compile(model, opt_level=0).to_onnx()
    ops = [n.op_type for n in exported.graph.node if n.op_type != "Constant"]
    assert ops == ["Slice", "ReduceSum", "Squeeze", "Unsqueeze", "Pad", "Tile", "Trilu", "CumSum", "Cast"]
    x = np.random.default_rng(0).standard_normal((3, 5, 4)).astype(np.float32)
    _same_in_onnxruntime(model, exported, {"x": x})


@pytest.mark.parametrize("geometry", ["scales", "sizes"])
def test_resize_geometry_becomes_inputs_again(geometry):
    arrays = {"scales": np.array([1, 1, 2, 1.5], np.float32), "sizes": np.array([1, 1, 4, 3], np.int64)}
    inputs = ["x", "", "scales"] if geometry == "scales" else ["x", "", "", "sizes"]
    g = helper.make_graph([helper.make_node("Resize", inputs, ["y"], mode="linear")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(arrays[geometry], geometry)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((1, 1, 2, 2)).astype(np.float32)
    _same_in_onnxruntime(model, minidlc.compile(model).to_onnx(), {"x": x})


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_is_written_out_for_opset_17(approximate):
    g = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    exported = minidlc.compile(model, opt_level=0).to_onnx()
    assert "Gelu" not in {n.op_type for n in exported.graph.node}
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    _same_in_onnxruntime(model, exported, {"x": x})


def test_emit_onnx_on_the_command_line(tmp_path, capsys):
    path, out = tmp_path / "mlp.onnx", tmp_path / "opt.onnx"
    path.write_bytes(build_model("mlp").SerializeToString())
    assert main(["compile", str(path), "--emit", "onnx", "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"saved the optimized graph as ONNX to {out}")
    assert len(onnx.load(out).functions) == 2
    assert main(["compile", str(path), "--emit", "onnx"]) == 0
    assert "fused_gemm_relu_0" in capsys.readouterr().out  # the text form
    assert main(["compile", str(path), "--emit", "graph", "-o", str(out)]) == 2


def test_a_pytorch_model_exports_with_unique_node_names():
    """Nodes of one PyTorch block share a source line: node names come from values, the line goes to doc_string."""
    torch = pytest.importorskip("torch")
    import sys
    from pathlib import Path

    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    from torch_models import make_resnet

    m = minidlc.compile(make_resnet(), example_inputs=(torch.zeros(1, 3, 32, 32),))
    exported = m.to_onnx()
    onnx.checker.check_model(exported, full_check=True)
    names = [n.name for n in exported.graph.node]
    assert len(names) == len(set(names)) and any("torch_models.py" in n.doc_string for n in exported.graph.node)
    feeds = m.random_inputs(seed=1)
    (got,) = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got, next(iter(m.run(feeds).values())), rtol=1e-4, atol=1e-5)
