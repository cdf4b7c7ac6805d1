"""Structured pruning (prune-channels) and `minidlc compress`: the graphs stay
valid, shrink by the expected fraction, compute exactly what the unpruned
model computes when the removed channels were dead, and run in onnxruntime."""
import numpy as np
import pytest
from hypothesis import given, settings

import minidlc
from minidlc.ir import Graph, TensorType, interpret, verify
from minidlc.ir.cost import graph_flops
from minidlc.passes.manager import PassContext, build_pipeline
from minidlc.passes.prune import output_axis
from digits_example import digits
from passes_util import mixed_graphs

pytest.importorskip("sklearn")
ort = pytest.importorskip("onnxruntime")

SHAPES = {"x": (40, 1, 8, 8)}
PRUNE = "fold,dce,cse,simplify,fuse-layers,prune-channels{{ratio={ratio} criterion={criterion}}}"


def prune(graph, ratio=0.25, criterion="l1", calibration=()):
    pipeline = build_pipeline(passes=PRUNE.format(ratio=ratio, criterion=criterion),
                              context=PassContext(calibration=tuple(calibration)))
    return pipeline.run(graph.copy()), pipeline.passes[-1]


def weights(graph):
    return [graph.const_value(n.inputs[1]) for n in graph.nodes if n.op in ("Conv", "Gemm", "MatMul")]


def digits_graph():
    return minidlc.load(str(digits.model_path()), input_shapes=SHAPES)


def test_quarter_of_the_channels_goes_from_each_layer_and_the_next():
    g = digits_graph()
    pruned, p = prune(g)
    verify(pruned)
    # out channels 8, 16, 16, 32 lose a quarter; the logits reach the output and stay;
    # each next layer loses the matching inputs (fc1: 4 features per conv3 channel, after Flatten)
    assert [w.shape for w in weights(pruned)] == [(6, 1, 3, 3), (12, 6, 3, 3), (12, 12, 3, 3), (24, 48), (10, 24)]
    assert [(r.channels, r.kept) for r in p.report] == [(8, 6), (16, 12), (16, 12), (32, 24), (10, 10)]
    assert "graph output" in p.report[-1].note
    before = sum(w.size for w in weights(g))
    assert sum(w.size for w in weights(pruned)) == 6 * 9 + 12 * 6 * 9 + 12 * 12 * 9 + 24 * 48 + 10 * 24 < 0.6 * before
    assert graph_flops(pruned) < 0.62 * graph_flops(g)


def _kill_channels(graph: Graph, rng) -> Graph:
    """Zero a quarter of the output channels (weights and bias) of every layer
    but the last: those channels are dead, and pruning them changes nothing."""
    g = graph.copy()
    layers = [n for n in g.nodes if output_axis(g, n) is not None][:-1]
    for n in layers:
        axis = output_axis(g, n)
        w = g.const_value(n.inputs[1]).copy()
        dead = rng.choice(w.shape[axis], w.shape[axis] // 4, replace=False)
        np.moveaxis(w, axis, 0)[dead] = 0
        n.inputs[1] = g.constant(w, n.inputs[1].name + "_dead", before=n)
        if len(n.inputs) > 2:
            b = g.const_value(n.inputs[2]).copy()
            b[dead] = 0
            n.inputs[2] = g.constant(b, n.inputs[2].name + "_dead", before=n)
    return g


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_pruning_dead_channels_changes_nothing(criterion):
    g = build_pipeline(passes="fold,dce,cse,simplify,fuse-layers").run(digits_graph())
    dead = _kill_channels(g, np.random.default_rng(0))
    pruned, p = prune(dead, criterion=criterion)
    assert [r.kept for r in p.report] == [6, 12, 12, 24, 10]
    x = np.load(digits.data_paths()["test"])["x"][:40]
    want = interpret(dead, [x])[0]
    np.testing.assert_allclose(minidlc.compile(pruned, target="llvm").run({"x": x})["logits"], want,
                               rtol=1e-4, atol=1e-4)


def test_concat_shifts_the_removed_channels():
    """Two convs joined along the channels feed a third: pruning the second
    conv cuts the third's input channels after the first conv's 4."""
    rng = np.random.default_rng(1)
    g = Graph("concat")
    x = g.add_input("x", TensorType((1, 3, 6, 6)))

    def conv(v, out, name):
        w = rng.standard_normal((out, v.type.shape[1], 3, 3)).astype(np.float32)
        return g.add("Relu", [g.add("Conv", [v, g.constant(w, name)], {"pads": [1, 1, 1, 1]}, names=[name + "_out"]).output]).output

    a, b = conv(x, 4, "a"), conv(x, 8, "b")
    joined = g.add("Concat", [a, b], {"axis": 1}).output
    g.outputs = [g.add("Conv", [joined, g.constant(rng.standard_normal((5, 12, 1, 1)).astype(np.float32), "c")]).output]
    dead = _kill_channels(g, rng)
    pruned, p = prune(dead, ratio=0.25)
    assert [(r.layer, r.kept) for r in p.report] == [("a_out", 3), ("b_out", 6), (g.outputs[0].name, 5)]
    assert weights(pruned)[-1].shape == (5, 9, 1, 1)
    feed = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(interpret(pruned, [feed])[0], interpret(dead, [feed])[0], rtol=1e-5, atol=1e-5)


def test_residuals_and_outputs_are_reported_not_pruned():
    from minidlc.demo_models import build_model
    pruned, p = prune(minidlc.load(build_model("convnet")))
    notes = {r.layer: r for r in p.report}
    residual = [r for r in p.report if "residual" in r.note]
    assert len(residual) == 4 and all(r.kept == r.channels for r in residual)
    assert sum(r.kept < r.channels for r in p.report) == 2  # the first conv of each block
    verify(pruned)
    assert "graph output" in notes["head_54"].note


def test_transformer_ffn_prunes_through_gelu():
    from minidlc.demo_models import build_model
    pruned, p = prune(minidlc.load(build_model("tfblock")))
    up = next(r for r in p.report if r.layer.startswith("ffn.up"))
    assert (up.channels, up.kept) == (1024, 768)
    assert any("Reshape" in r.note for r in p.report)  # attention heads: left alone


def test_activation_criterion_uses_calibration_data():
    g = digits_graph()
    with pytest.raises(Exception, match="criterion=activation needs calibration data"):
        prune(g, criterion="activation")
    from minidlc.quantization import load_calibration
    pruned, p = prune(g, criterion="activation", calibration=load_calibration(digits.data_paths()["calib"], g))
    assert [r.kept for r in p.report] == [6, 12, 12, 24, 10]


@settings(max_examples=30, deadline=None)
@given(g=mixed_graphs())
def test_pruned_random_graphs_stay_valid_and_native(g):
    pruned, _ = prune(g, ratio=0.5)
    verify(pruned)
    feed = np.random.default_rng(0).standard_normal(g.inputs[0].type.shape).astype(np.float32)
    want = interpret(pruned, [feed])
    got = minidlc.compile(pruned, target="llvm").run({"x": feed})
    for w, v in zip(want, got.values()):
        np.testing.assert_allclose(v, w, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(w).max(initial=0))))


def test_cli_compress_report_and_onnxruntime(tmp_path, capsys):
    from minidlc.cli import main
    paths = digits.data_paths()
    out = tmp_path / "digits_pruned.onnx"
    assert main(["compress", str(digits.model_path()), "-o", str(out), "--prune-channels", "0.25", "--input-shape",
                 "x=40,1,8,8", "--report", "--eval", str(paths["test"]), "--labels", str(paths["labels"])]) == 0
    text = capsys.readouterr().out
    assert "prune-channels{ratio=0.5 criterion=l1}" in text and "top-1 %" in text
    assert "conv3.out  Conv      16 -> 12" in text and "params 5978 -> 3454" in text
    x = np.load(paths["test"])["x"][:40]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ours = minidlc.compile(str(out), target="llvm").run({"x": x})["logits"]
    np.testing.assert_allclose(session.run(None, {"x": x})[0], ours, rtol=1e-4, atol=1e-4)


def test_cli_compress_low_rank(tmp_path, capsys):
    from minidlc.cli import main
    paths = digits.data_paths()
    out = tmp_path / "digits_low_rank.onnx"
    assert main(["compress", str(digits.model_path()), "-o", str(out), "--low-rank", "0.95", "--input-shape",
                 "x=40,1,8,8", "--eval", str(paths["test"]), "--labels", str(paths["labels"])]) == 0
    text = capsys.readouterr().out
    assert "conv2.out  Conv   rank 10 of 16" in text and "factored" in text and "left alone" in text
    x = np.load(paths["test"])["x"][:40]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], minidlc.compile(str(out), target="llvm").run({"x": x})["logits"],
                               rtol=1e-4, atol=1e-4)


def test_cli_compress_needs_one_setting(tmp_path):
    from minidlc.cli import main
    with pytest.raises(SystemExit):
        main(["compress", str(digits.model_path()), "-o", str(tmp_path / "o.onnx")])


def test_compress_works_on_a_demo_model_and_composes_with_quantize(tmp_path, capsys):
    from minidlc.cli import main
    from minidlc.demo_models import build_model
    import onnx
    src, small, small8 = tmp_path / "mlp.onnx", tmp_path / "mlp_small.onnx", tmp_path / "mlp_small_int8.onnx"
    onnx.save(build_model("mlp"), src)
    assert main(["compress", str(src), "-o", str(small), "--prune-channels", "0.5"]) == 0
    assert "fc1.add_4_0   Gemm     512 -> 256" in capsys.readouterr().out
    assert main(["quantize", str(small), "-o", str(small8), "--calibration", "random:2"]) == 0
    m = minidlc.compile(str(small8), target="llvm")
    feeds = m.random_inputs()
    session = ort.InferenceSession(str(small8), providers=["CPUExecutionProvider"])
    ours, theirs = list(m.run(feeds).values())[0], session.run(None, feeds)[0]
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.9


def test_shared_weights_and_per_channel_quantization_are_left_alone():
    """A weight two layers read (tied), or a per-channel QuantizeLinear on the
    channels, would be cut for one reader and not the other: reported, not pruned."""
    rng = np.random.default_rng(3)
    g = Graph("tied")
    x, x2 = g.add_input("x", TensorType((1, 3, 6, 6))), g.add_input("x2", TensorType((1, 3, 6, 6)))
    w = g.constant(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    h = g.add("Relu", [g.add("Conv", [x, w], {"pads": [1] * 4}, names=["a"]).output]).output
    y = g.add("Conv", [h, g.constant(rng.standard_normal((5, 8, 1, 1)).astype(np.float32), "w3")]).output
    y2 = g.add("Conv", [x2, w], {"pads": [1] * 4}, names=["b"]).output
    g.outputs = [y, y2]
    pruned, p = prune(g, ratio=0.5)
    assert [v.type for v in pruned.outputs] == [v.type for v in g.outputs]
    assert "shared" in p.report[0].note and p.report[0].kept == 8

    q = Graph("per_channel_q")
    x = q.add_input("x", TensorType((1, 3, 6, 6)))
    c = q.add("Conv", [x, q.constant(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")], {"pads": [1] * 4},
              names=["c"]).output
    s, z = q.constant(np.full(8, 0.1, np.float32), "s"), q.constant(np.zeros(8, np.uint8), "z")
    dq = q.add("DequantizeLinear", [q.add("QuantizeLinear", [c, s, z], {"axis": 1, "dtype": "u8"}).output, s, z],
               {"axis": 1}).output
    q.outputs = [q.add("Conv", [dq, q.constant(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2")]).output]
    pruned, p = prune(q, ratio=0.5)
    assert "quantizes per channel" in p.report[0].note and p.report[0].kept == 8
    verify(pruned)
