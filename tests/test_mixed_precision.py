"""The mixed-precision pass: f16 (or bf16) weights, f32 arithmetic.

Weight bytes halve in the graph and in the compiled llvm program, the
kernels read the f16 weights natively, and results stay within the pass's
tolerance of f32: on the demo models, and in top-1 accuracy on the digits
CNN's test images."""

import numpy as np
import pytest

import minidlc
from minidlc import cpu
from minidlc.demo_models import build_model, example_inputs
from minidlc.ir import Graph
from minidlc.ir.types import DTYPES, TensorType
from minidlc.loops.program import lowering_failure
from minidlc.passes.instruments import VerifyNumerics, close
from minidlc.passes.manager import Tolerance, build_pipeline, registered_passes
from minidlc.passes.mixed_precision import KEEP_F32, MIN_ELEMENTS, MixedPrecision
from digits_example import digits

PIPELINE = "fold,dce,cse,simplify,fuse-layers,mixed-precision{dtype=f16},fuse"
UNFUSED = "fold,dce,cse,simplify,fuse-layers,mixed-precision{dtype=f16}"
BF16 = PIPELINE.replace("dtype=f16", "dtype=bf16")
TOL = MixedPrecision.tolerance


def _optimize(model, passes: str) -> tuple[Graph, MixedPrecision]:
    pipeline = build_pipeline(passes=passes)
    graph = pipeline.run(minidlc.load(model))
    (mp,) = [p for p in pipeline.passes if p.name == "mixed-precision"]
    return graph, mp


def _constants(graph: Graph, dtype: str) -> list:
    return [n.output for n in graph.nodes if n.op == "Constant" and n.output.type.dtype == dtype]


@pytest.fixture(scope="module", params=["mlp", "convnet", "tfblock"])
def demo(request):
    model = build_model(request.param)
    inputs = example_inputs(model)
    return request.param, model, inputs, minidlc.compile(model).run(inputs)


def test_registered_with_options():
    assert "mixed-precision" in registered_passes()
    with pytest.raises(ValueError, match="f16 or bf16, got dtype='f8'"):
        build_pipeline(passes="mixed-precision{dtype=f8}")


def test_graph_weight_bytes_halve(demo):
    name, model, _, _ = demo
    graph, mp = _optimize(model, UNFUSED)
    assert mp.stored and mp.saved_bytes > 0
    assert mp.bytes_after == pytest.approx(mp.bytes_before / 2, rel=0.01), name  # LayerNorm's params stay f32
    for v in _constants(graph, "f16"):
        (reader,) = [n for n in graph.nodes if v in n.inputs]
        assert reader.op == "Cast" and reader.output.type.dtype == "f32"


def test_keeps_normalization_params_f32():
    graph, mp = _optimize(build_model("tfblock"), UNFUSED)
    for n in graph.nodes:
        if n.op in KEEP_F32:
            assert all(v is None or v.producer is None or v.producer.op != "Cast" for v in n.inputs), n.describe()
    assert any(n.op == "LayerNormalization" for n in graph.nodes)


def test_fold_does_not_undo_it():
    """A Cast of f16 weights doubles their bytes: fold leaves it alone, even run again after."""
    graph, mp = _optimize(build_model("mlp"), UNFUSED + ",fold")
    assert len(_constants(graph, "f16")) == len(mp.stored)
    assert all(v.type.numel <= MIN_ELEMENTS for v in _constants(graph, "f32"))
    assert sum(n.attrs["value"].nbytes for n in graph.nodes if n.op == "Constant") == mp.bytes_after


@pytest.mark.parametrize("target", ["reference", "llvm"])
def test_outputs_within_tolerance(demo, target):
    name, model, inputs, expected = demo
    got = minidlc.compile(model, target=target, passes=PIPELINE).run(inputs)
    for k, want in expected.items():
        assert close(got[k], want, TOL), (name, k, np.max(np.abs(got[k] - want)))
        assert not np.array_equal(got[k], want)  # the weights did change


def test_llvm_reads_f16_weights_natively(demo):
    """No group falls back to NumPy, and the GEMMs pack their f16 weights at
    compile time: the program's weights are half the bytes, with no f32 copy."""
    name, model, _, _ = demo
    f32 = minidlc.compile(model, target="llvm")
    f16 = minidlc.compile(model, target="llvm", passes=PIPELINE)
    loops = f16.emit("loops")
    assert "runs on NumPy" not in loops
    assert "f16*" in loops and "_packed" in loops
    assert f16.program.weight_bytes() == pytest.approx(f32.program.weight_bytes() / 2, rel=0.01), name
    assert f16.program.plan.size <= f32.program.plan.size  # widened weights never land in the arena
    if cpu.has("f16c"):
        assert "vcvtph2ps" in f16.emit("asm")


@pytest.mark.parametrize("passes", [PIPELINE, BF16])
def test_numba_is_correct(passes):
    """Numba runs the same loop program (f16/bf16 weights as their bits): a
    small dense layer, since a cold Numba compile of a demo model takes long."""
    g = Graph()
    x = g.add_input("x", TensorType((4, 100)))
    w = g.constant(np.random.default_rng(0).standard_normal((100, 16)).astype(np.float32), "w")
    g.outputs = [g.add("Relu", [g.add("MatMul", [x, w]).output]).output]
    feeds = {"x": np.random.default_rng(1).standard_normal((4, 100)).astype(np.float32)}
    want = minidlc.compile(g, passes=passes).run(feeds)
    m = minidlc.compile(g, target="numba", passes=passes)
    assert "runs on NumPy" not in m.emit("loops") and "MatMul" in m.emit("loops")
    for k, a in m.run(feeds).items():
        np.testing.assert_allclose(a, want[k], rtol=1e-5, atol=1e-5)


def test_verify_numerics_holds_it_to_its_tolerance():
    minidlc.compile(build_model("convnet"), passes=PIPELINE, instruments=[VerifyNumerics()])


def test_f16_is_a_storage_dtype():
    """Kernels convert f16 and never compute in it: an elementwise op on f16
    computes in f32, rounding its result to f16 (lower.widen_f16); a reduction
    on f16 runs on NumPy. (The graph IR has no arithmetic on bf16 at all.)"""
    g = Graph()
    x, y = (g.add_input(n, TensorType((4, 4), "f16")) for n in "xy")
    assert lowering_failure(g.add("Cast", [x], {"to": "f32"})) is None
    assert lowering_failure(g.add("Transpose", [x], {"perm": [1, 0]})) is None
    assert lowering_failure(g.add("Add", [x, y])) is None
    assert "f16" in lowering_failure(g.add("ReduceMax", [x], {"axes": [1], "keepdims": 1}))


CAST_CASES = {  # dtype: values covering its ties to even, overflow to inf, subnormals, NaN
    "f16": [0.1, -2.5, 2049, 2051, 65504, 65520, 1e-6, 3e-8, 1e-9, np.nan, -np.inf, 0.0],
    "bf16": [0.1, -2.5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4e38, 1e-40, np.nan, -np.inf, 0.0, -7e-3],
}


@pytest.mark.parametrize("target", ["llvm", "numba"])
@pytest.mark.parametrize("dtype", CAST_CASES)
def test_storage_casts_round_as_numpy(target, dtype):
    """f32 -> f16 (bf16) -> f32 in one kernel rounds as NumPy (ml_dtypes) does."""
    values = np.array(CAST_CASES[dtype], np.float32)
    g = Graph()
    x = g.add_input("x", TensorType(values.shape))
    g.outputs = [g.add("Cast", [g.add("Cast", [x], {"to": dtype}).output], {"to": "f32"}).output]
    m = minidlc.compile(g, target=target)
    assert "runs on NumPy" not in m.emit("loops")
    with np.errstate(over="ignore"):
        want = values.astype(DTYPES[dtype]).astype(np.float32)
    np.testing.assert_array_equal(m.run({"x": values})[g.outputs[0].name], want)


def test_onnx_export_runs_in_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    from minidlc.frontends.onnx.export import export_onnx

    model = build_model("convnet")
    inputs = example_inputs(model)
    graph, _ = _optimize(model, UNFUSED)
    exported = export_onnx(graph)
    assert any(t.data_type == 10 for t in exported.graph.initializer)  # FLOAT16
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, inputs)
    want = minidlc.compile(graph, opt_level=0).run(inputs)
    for a, b in zip(got, want.values()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_digits_accuracy():
    pytest.importorskip("sklearn")
    paths = digits.data_paths()
    x, labels = np.load(paths["test"])["x"], np.load(paths["labels"])

    def accuracy(**kw) -> float:
        m = minidlc.compile(str(digits.model_path()), target="llvm", input_shapes={"x": (40, 1, 8, 8)}, **kw)
        logits = np.concatenate([m.run({"x": x[i:i + 40]})["logits"] for i in range(0, 360, 40)])
        return 100 * float(np.mean(logits.argmax(1) == labels))

    f32, f16, bf16 = accuracy(), accuracy(passes=PIPELINE), accuracy(passes=BF16)
    assert f32 == pytest.approx(98.33, abs=0.01)
    assert abs(f16 - f32) <= 0.2, (f32, f16)
    assert abs(bf16 - f32) <= 0.5, (f32, bf16)


def test_bf16_weights_native_halved_and_close(demo):
    name, model, inputs, want = demo
    graph, mp = _optimize(model, BF16)
    assert _constants(graph, "bf16") and mp.bytes_after < 0.52 * mp.bytes_before
    m = minidlc.compile(model, target="llvm", passes=BF16)
    assert "runs on NumPy" not in m.emit("loops")
    for got, ref in zip(m.run(inputs).values(), want.values()):
        assert close(got, ref, TOL), name


def test_bf16_export_runs_in_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    from minidlc.frontends.onnx.export import export_onnx

    model = build_model("mlp")
    inputs = example_inputs(model)
    graph, _ = _optimize(model, UNFUSED.replace("dtype=f16", "dtype=bf16"))
    exported = export_onnx(graph)
    assert any(t.data_type == 16 for t in exported.graph.initializer)  # BFLOAT16
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    want = minidlc.compile(exported, target="llvm").run(inputs)  # and it imports back
    for a, b in zip(session.run(None, inputs), want.values()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_close_compares_bf16_as_the_floats_it_holds():
    """bfloat16 (ml_dtypes: numpy kind "V") is a float to `close`, not an
    integer: 0.3 and 0.9 differ, though both truncate to 0."""
    bf16 = DTYPES["bf16"]
    assert not close(np.array([0.3], bf16), np.array([0.9], bf16), Tolerance())
    assert close(np.array([0.3, 2.0], bf16), np.array([0.3, 2.0], bf16), Tolerance())
