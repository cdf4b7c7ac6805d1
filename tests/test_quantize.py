"""Post-training int8 quantization, judged on real data (the digits CNN) and
differentially: the exported QDQ file runs in onnxruntime, the integer
kernels compute what the reference interpreter computes of the same graph,
and models quantized by onnxruntime import as integer ops."""

import numpy as np
import pytest
from hypothesis import given, settings

import minidlc
from minidlc.ir import interpret, verify
from minidlc.passes.calibrate import Method, Observed, calibrated_range, observe
from minidlc.passes.instruments import VerifyNumerics
from minidlc.passes.manager import LOSSLESS, PassContext, PassError, Pipeline, make_pass
from minidlc.quantization import CalibrationError, load_calibration
from digits_example import digits
from ort_util import ORT_U8S8_EXACT
from passes_util import mixed_graphs, run_passes

pytest.importorskip("sklearn")
ort = pytest.importorskip("onnxruntime")

BATCH = 40  # divides the 360 test images; the 256 calibration images make 6 batches


SHAPES = {"x": (BATCH, 1, 8, 8)}


@pytest.fixture(scope="module")
def data():
    paths = digits.data_paths()
    return paths["calib"], np.load(paths["test"])["x"], np.load(paths["labels"])


def top1(run, x, y) -> float:
    logits = np.concatenate([run(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])
    return float((logits.argmax(1) == y).mean() * 100)


def weight_bytes(graph) -> int:
    return sum(n.attrs["value"].nbytes for n in graph.nodes if n.op == "Constant" and n.attrs["value"].size > 64)


@pytest.fixture(scope="module")
def f32_accuracy(data):
    _, x, y = data
    m = minidlc.compile(str(digits.model_path()), target="llvm", input_shapes=SHAPES)
    return top1(lambda b: m.run({"x": b})["logits"], x, y)


@pytest.mark.parametrize("method", [m.value for m in Method])
def test_int8_digits_accuracy_within_one_point(data, f32_accuracy, method):
    calib, x, y = data
    q = minidlc.quantize(str(digits.model_path()), calibration=str(calib), method=method, input_shapes=SHAPES)
    m = minidlc.compile(q, target="llvm")
    assert "runs on NumPy" not in m.emit("loops")
    ops = {n.op for g in m.graph.nodes for n in (g.body.nodes if g.body is not None else [g])}
    assert {"ConvInteger", "MatMulInteger"} <= ops and "Conv" not in ops and "Gemm" not in ops
    acc = top1(lambda b: m.run({"x": b})["logits"], x, y)
    assert acc >= f32_accuracy - 1.0, (method, acc, f32_accuracy)
    if ORT_U8S8_EXACT:  # the exported QDQ file runs unchanged in onnxruntime, and classifies the same
        session = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
        assert abs(top1(lambda b: session.run(None, {"x": b})[0], x, y) - acc) <= 0.3


def test_int8_weights_are_four_times_smaller(data):
    calib, _, _ = data
    f32 = minidlc.compile(str(digits.model_path()), target="reference", input_shapes=SHAPES)
    q = minidlc.compile(str(digits.model_path()), target="reference", input_shapes=SHAPES, quantize=True,
                        calibration=str(calib))
    assert weight_bytes(f32.graph) / weight_bytes(q.graph) >= 3.5


@pytest.mark.parametrize("options", [{"per_tensor": True}, {"activations": "i8"}, {"method": "percentile"}])
def test_compile_with_quantize_options_verifies_numerics(data, options):
    """VerifyNumerics holds quantize to its stated tolerance on a calibration
    batch, and the passes after it to theirs, against the quantized results."""
    calib, x, y = data
    m = minidlc.compile(str(digits.model_path()), target="llvm", input_shapes=SHAPES, quantize=options,
                        calibration=str(calib), instruments=[VerifyNumerics()])
    assert top1(lambda b: m.run({"x": b})["logits"], x, y) >= 96.0


def test_verify_numerics_names_a_pass_beyond_its_tolerance(data):
    calib, _, _ = data
    p = make_pass("quantize")
    p.tolerance = LOSSLESS  # as if it claimed to be lossless
    graph = minidlc.load(str(digits.model_path()), input_shapes=SHAPES)
    with pytest.raises(PassError, match=r"pass .quantize. changed the numerics .*beyond the pass.s tolerance"):
        Pipeline([p], [VerifyNumerics()], context=PassContext(calibration=tuple(load_calibration(str(calib), graph)))
                 ).run(graph)


def test_onnxruntime_quantized_model_imports_as_integer_ops(data, tmp_path):
    """A QDQ model from onnxruntime's own quantizer (per-channel, s8 weights,
    u8 activations) runs here as integer kernels and agrees with onnxruntime."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    import onnx
    calib, x, y = data
    src = tmp_path / "digits40.onnx"
    model = onnx.load(str(digits.model_path()))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = BATCH
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = BATCH
    onnx.save(model, src)
    stack = np.load(calib)["x"]

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": stack[i:i + BATCH]} for i in range(0, 240, BATCH)])

        def get_next(self):
            return next(self.batches, None)

    out = tmp_path / "digits40_int8.onnx"
    quantization.quantize_static(str(src), str(out), Reader(), quant_format=quantization.QuantFormat.QDQ,
                                 per_channel=True, activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8,
                                 reduce_range=not ORT_U8S8_EXACT)  # 7-bit weights: no saturation there
    m = minidlc.compile(str(out), target="llvm")
    ops = {n.op for g in m.graph.nodes for n in (g.body.nodes if g.body is not None else [g])}
    assert {"ConvInteger", "MatMulInteger"} <= ops and "Conv" not in ops
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ours = np.concatenate([m.run({"x": x[i:i + BATCH]})["logits"] for i in range(0, len(x), BATCH)])
    theirs = np.concatenate([session.run(None, {"x": x[i:i + BATCH]})[0] for i in range(0, len(x), BATCH)])
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.99
    np.testing.assert_allclose(ours, theirs, atol=0.05 * np.abs(theirs).max())


def test_histogram_methods_clip_outliers():
    from minidlc.ir import Graph, TensorType
    g = Graph("g")
    x = g.add_input("x", TensorType((1000,)))
    g.outputs = [g.add("Relu", [x]).output]
    rng = np.random.default_rng(0)
    batches = [[np.abs(rng.standard_normal(1000)).astype(np.float32)] for _ in range(4)]
    batches[0][0][0] = 100.0  # one outlier
    ranges = {}
    for method in Method:
        seen = observe(g, batches, {"x"}, method)
        ranges[method] = calibrated_range(seen["x"], method, 99.9, 256)
    assert ranges[Method.MINMAX][1] == pytest.approx(100.0)
    assert ranges[Method.PERCENTILE][1] < 5  # the bulk: |N(0,1)| up to its 99.9th percentile
    # entropy keeps at least as many histogram bins as there are levels (256 of 2048 here)
    assert ranges[Method.ENTROPY][1] <= 100 * 256 / 2048 + 0.1
    assert calibrated_range(Observed(), Method.MINMAX, 99.9, 256) == (0.0, 0.0)


def test_calibration_errors_name_the_input(tmp_path, data):
    graph = minidlc.load(str(digits.model_path()), input_shapes=SHAPES)
    np.savez(tmp_path / "wrong_name.npz", image=np.zeros((40, 1, 8, 8), np.float32))
    with pytest.raises(CalibrationError, match="has no array named 'x'"):
        load_calibration(tmp_path / "wrong_name.npz", graph)
    np.savez(tmp_path / "wrong_shape.npz", x=np.zeros((40, 8, 8), np.float32))
    with pytest.raises(CalibrationError, match=r"'x' has shape \[40, 8, 8\]"):
        load_calibration(tmp_path / "wrong_shape.npz", graph)
    with pytest.raises(CalibrationError, match="no such file"):
        load_calibration(tmp_path / "missing.npz", graph)
    assert len(load_calibration(data[0], graph)) == 6  # 256 images: 6 batches of 40


def test_quantize_needs_calibration():
    with pytest.raises(Exception, match="quantize needs calibration data"):
        minidlc.compile(str(digits.model_path()), target="reference", input_shapes=SHAPES, quantize=True)


def test_random_calibration_is_labelled(capsys):
    graph = minidlc.load(str(digits.model_path()), input_shapes=SHAPES)
    assert len(load_calibration("random:3", graph)) == 3
    assert "for speed experiments only" in capsys.readouterr().err


@settings(max_examples=25, deadline=None)
@given(g=mixed_graphs())
def test_integer_kernels_compute_what_the_quantized_graph_says(g):
    """On random graphs: the quantized graph verifies, stays within the
    passes' declared tolerances (VerifyNumerics), and the llvm build of it
    (integer kernels) computes what the reference interpreter does."""
    batches = tuple({"x": np.random.default_rng(s).standard_normal(g.inputs[0].type.shape).astype(np.float32)}
                    for s in range(3))
    context = PassContext(calibration=batches)
    q = run_passes(g.copy(), "fold,dce,cse,simplify,fuse-layers,quantize,integer-ops", context=context)
    verify(q)
    feeds = [batches[0]["x"]]
    want = interpret(q, feeds)
    m = minidlc.compile(q, target="llvm")
    got = m.run({"x": feeds[0]})
    for name, w in zip(m.output_names, want):
        out = got[name]
        np.testing.assert_allclose(out, w, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(w).max(initial=0))))


def test_cli_quantize_report_and_round_trip(data, tmp_path, capsys):
    from minidlc.cli import main
    calib, x, y = data
    paths = digits.data_paths()
    out = tmp_path / "digits_int8.onnx"
    assert main(["quantize", str(digits.model_path()), "-o", str(out), "--calibration", str(calib),
                 "--input-shape", "x=40,1,8,8", "--report", "--eval", str(paths["test"]),
                 "--labels", str(paths["labels"])]) == 0
    text = capsys.readouterr().out
    rows = [line.split() for line in text.splitlines() if line.split()[:1] and line.split()[0].endswith(".out")]
    assert {r[0] for r in rows} == {"conv1.out", "conv2.out", "conv3.out", "fc1.out"}
    assert all(float(r[3]) > 30 for r in rows)  # SQNR dB of each layer alone
    assert "f32 top-1: 98.33%" in text and "x smaller" in text
    # the file runs unchanged in onnxruntime, and with integer kernels here
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    m = minidlc.compile(str(out), target="llvm")
    for i in range(0, 80, BATCH):
        ours, theirs = m.run({"x": x[i:i + BATCH]})["logits"], session.run(None, {"x": x[i:i + BATCH]})[0]
        assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.95
    assert main(["quantize", str(digits.model_path()), "-o", str(out), "--calibration", str(calib),
                 "--input-shape", "x=40,1,8,8", "--keep-float", "auto", "--max-drop", "0.5", "--eval",
                 str(paths["test"]), "--labels", str(paths["labels"])]) == 0
    assert "keep in f32 for a drop within 0.5 points" in capsys.readouterr().out


def test_cli_quantize_errors(tmp_path, capsys):
    from minidlc.cli import main
    assert main(["quantize", str(digits.model_path()), "-o", str(tmp_path / "o.onnx"), "--calibration",
                 str(tmp_path / "nothing.npz"), "--input-shape", "x=40,1,8,8"]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_cli_f16_reports_bytes_and_error(data, tmp_path, capsys):
    from minidlc.cli import main
    paths = digits.data_paths()
    out = tmp_path / "digits_f16.onnx"
    assert main(["quantize", str(digits.model_path()), "-o", str(out), "--dtype", "f16", "--input-shape",
                 "x=40,1,8,8", "--eval", str(paths["test"]), "--labels", str(paths["labels"])]) == 0
    text = capsys.readouterr().out
    assert "weights in f16, constants 23.4 KiB -> 11.8 KiB" in text and "top-1 98.33% (was 98.33%)" in text
    x = data[1][:40]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    want = minidlc.compile(str(digits.model_path()), target="reference", input_shapes=SHAPES).run({"x": x})["logits"]
    np.testing.assert_allclose(session.run(None, {"x": x})[0], want, atol=0.02)
