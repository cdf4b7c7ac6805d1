"""The low-rank pass: truncated SVD of MatMul, Gemm and Conv weights.

A weight of known rank is found and factored exactly (or within its noise),
fewer weights and FLOPs come out, Gemm and Conv keep their semantics, the
factors run on llvm and in onnxruntime, and on the digits CNN's test images
the accuracy stays within a point of f32."""

import io

import numpy as np
import pytest

import minidlc
from minidlc.ir import Graph, TensorType, interpret, verify
from minidlc.ir.cost import graph_flops
from minidlc.passes.instruments import TraceRewrites, VerifyNumerics
from minidlc.passes.low_rank import LowRank
from minidlc.passes.manager import PassContext, PassError, build_pipeline
from digits_example import digits

DIGITS_PIPELINE = "fold,dce,cse,simplify,fuse-layers,low-rank{{energy={}}}"


def _low_rank(graph: Graph, options: str = "", instruments=(), context=PassContext()) -> tuple[Graph, LowRank, str]:
    """(graph after low-rank, the pass, its rewrite trace)."""
    trace = io.StringIO()
    pipeline = build_pipeline(passes=f"low-rank{{{options}}}", instruments=[TraceRewrites(trace), *instruments],
                              context=context)
    out = pipeline.run(graph)
    verify(out)
    return out, pipeline.passes[0], trace.getvalue()


def _weights(graph: Graph) -> int:
    return sum(n.attrs["value"].nbytes for n in graph.nodes if n.op == "Constant")


def _ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes if n.op != "Constant"]


def _low_rank_matrix(rng, rows: int, cols: int, rank: int, noise: float = 1e-6) -> np.ndarray:
    m = rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols)) / np.sqrt(rank)
    return (m + noise * rng.standard_normal((rows, cols))).astype(np.float32)


def _matmuls(*weights: np.ndarray, batch: int = 16) -> Graph:
    """x -> MatMul(., W1) -> MatMul(., W2) -> ..., named mm1, mm2, ..."""
    g = Graph()
    y = g.add_input("x", TensorType((batch, weights[0].shape[0])))
    for i, w in enumerate(weights, 1):
        y = g.add("MatMul", [y, g.constant(w, f"w{i}")], names=[f"mm{i}"]).output
    g.outputs = [y]
    return g


def _run(graph: Graph, feeds: dict, target: str = "reference") -> list[np.ndarray]:
    outs = minidlc.compile(graph.copy(), target=target, passes="fuse").run(feeds)
    return [outs[v.name] for v in graph.outputs]


def test_known_rank_found_and_cheaper():
    rng = np.random.default_rng(0)
    before = _matmuls(_low_rank_matrix(rng, 64, 64, 8))
    after, lr, trace = _low_rank(before.copy(), "energy=0.99")
    (c,) = lr.chosen
    assert (c.layer, c.op, c.rank, c.full_rank) == ("mm1", "MatMul", 8, 64)
    assert (c.params_before, c.params_after) == (4096, 8 * 128) and c.kept_energy > 0.999
    assert "rank 8 of 64, 100.0% of the energy, 4096 -> 1024 weights" in trace
    assert _ops(after) == ["MatMul", "MatMul"]
    assert graph_flops(after) < graph_flops(before) / 3
    assert _weights(after) == _weights(before) // 4
    x = {"x": rng.standard_normal((16, 64)).astype(np.float32)}
    (want,) = _run(before, x)
    for target in ("reference", "llvm"):
        np.testing.assert_allclose(_run(after, x, target)[0], want, atol=1e-3)


def test_rank_option_and_what_does_not_pay():
    rng = np.random.default_rng(1)
    low, full = _low_rank_matrix(rng, 64, 64, 8), rng.standard_normal((64, 64)).astype(np.float32)
    after, lr, trace = _low_rank(_matmuls(low, full), "rank=4")
    assert [(c.layer, c.rank) for c in lr.chosen] == [("mm1", 4), ("mm2", 4)]
    assert _ops(after) == ["MatMul"] * 4  # the factors are not factored again

    # a flat spectrum needs nearly full rank at energy 0.99: the layer is left alone, with the reason
    after, lr, trace = _low_rank(_matmuls(low, full), "energy=0.99")
    assert [c.layer for c in lr.chosen] == ["mm1"] and _ops(after) == ["MatMul"] * 3
    assert "low-rank-matmul matched MatMul node %mm2" in trace and "does not pay" in trace
    after, lr, trace = _low_rank(_matmuls(low), "rank=40")  # 40 * (64 + 64) > 64 * 64
    assert not lr.chosen and "rank 40 of 64" in trace and "does not pay" in trace

    after, lr, _ = _low_rank(_matmuls(low, full), "energy=0.5 layers=mm2")
    assert [c.layer for c in lr.chosen] == ["mm2"] and _ops(after) == ["MatMul"] * 3
    g = _matmuls(low)
    g.outputs = [g.add("MatMul", [g.outputs[0], g.nodes[0].output]).output]  # the weight read twice
    after, lr, trace = _low_rank(g, "energy=0.99")
    assert not lr.chosen and "is shared with other layers" in trace
    with pytest.raises(PassError, match="no layer named"):
        _low_rank(_matmuls(low), "layers=nope")
    with pytest.raises(ValueError, match="energy must be in"):
        build_pipeline(passes="low-rank{energy=1.5}")


def test_gemm_keeps_bias_alpha_beta_and_skips_trans_a():
    rng = np.random.default_rng(2)
    g = Graph()
    x = g.add_input("x", TensorType((8, 48)))
    w = _low_rank_matrix(rng, 32, 48, 5).astype(np.float32)  # transB=1: stored N x K
    c = rng.standard_normal(32).astype(np.float32)
    y = g.add("Gemm", [x, g.constant(w, "w"), g.constant(c, "c")], {"transB": 1, "alpha": 0.5, "beta": 2.0},
              names=["fc"]).output
    t = g.add("Gemm", [y, g.constant(_low_rank_matrix(rng, 8, 16, 2), "w2")], {"transA": 1}, names=["ta"]).output
    g.outputs = [t]
    after, lr, trace = _low_rank(g.copy(), "energy=1.0")
    assert [(c.layer, c.rank) for c in lr.chosen] == [("fc", 5)]
    assert _ops(after) == ["MatMul", "Gemm", "Gemm"]
    assert "transA=1" in trace
    feeds = {"x": rng.standard_normal((8, 48)).astype(np.float32)}
    np.testing.assert_allclose(interpret(after, [feeds["x"]])[0], interpret(g, [feeds["x"]])[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target", ["reference", "llvm"])
def test_conv_channel_decomposition_exact_at_full_energy(target):
    rng = np.random.default_rng(3)
    g = Graph()
    x = g.add_input("x", TensorType((2, 8, 10, 10)))
    w = _low_rank_matrix(rng, 16, 8 * 9, 3, noise=0).reshape(16, 8, 3, 3)  # rank 3 as a 16 x 72 matrix
    b = rng.standard_normal(16).astype(np.float32)
    y = g.add("Conv", [x, g.constant(w, "w"), g.constant(b, "b")], {"strides": [2, 2], "pads": [1, 1, 1, 1]},
              names=["conv"]).output
    grouped = g.add("Conv", [y, g.constant(_low_rank_matrix(rng, 16, 8 * 9, 1).reshape(16, 8, 3, 3), "wg")],
                    {"group": 2}, names=["grouped"]).output
    g.outputs = [grouped]
    after, lr, trace = _low_rank(g.copy(), "energy=1.0")
    (c,) = lr.chosen
    assert (c.layer, c.rank, c.params_after) == ("conv", 3, 3 * (72 + 16))
    assert "group=2" in trace
    first, pointwise = (n for n in after.nodes if n.op == "Conv" and n.outputs[0].name != "grouped")
    assert first.inputs[1].type.shape == (3, 8, 3, 3) and list(first.attrs["strides"]) == [2, 2]
    assert pointwise.inputs[1].type.shape == (16, 3, 1, 1) and pointwise.inputs[2] is not None
    feeds = {"x": rng.standard_normal((2, 8, 10, 10)).astype(np.float32)}
    (want,) = _run(g, feeds)
    np.testing.assert_allclose(_run(after, feeds, target)[0], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.fixture(scope="module")
def digits_data():
    pytest.importorskip("sklearn")
    paths = digits.data_paths()
    return np.load(paths["test"])["x"], np.load(paths["labels"]), np.load(paths["calib"])["x"][:40]


def _digits_graph(energy: float, instruments=(), context=PassContext()) -> tuple[Graph, LowRank]:
    pipeline = build_pipeline(passes=DIGITS_PIPELINE.format(energy), instruments=instruments, context=context)
    graph = pipeline.run(minidlc.load(str(digits.model_path()), input_shapes={"x": (40, 1, 8, 8)}))
    verify(graph)
    return graph, pipeline.passes[-1]


@pytest.mark.parametrize("energy", [0.99, 0.95])
def test_digits_accuracy_within_a_point(digits_data, energy):
    x, labels, calib = digits_data
    graph, lr = _digits_graph(energy, [VerifyNumerics()], PassContext(calibration=({"x": calib},)))
    print(f"energy {energy}:", "".join(f"\n  {c.layer} ({c.op}): {c}" for c in lr.chosen) or "no layer pays")
    m = minidlc.compile(graph, target="llvm", passes="fuse")
    logits = np.concatenate([m.run({"x": x[i:i + 40]})["logits"] for i in range(0, 360, 40)])
    top1 = 100 * float(np.mean(logits.argmax(1) == labels))
    print(f"top-1 {top1:.2f}% (f32 98.33%)")
    assert abs(top1 - 98.33) <= 1.0
    if energy == 0.95:  # the trained convs and fc1 have decaying spectra: three layers pay
        assert {c.layer for c in lr.chosen} == {"conv2.out", "conv3.out", "fc1.out"}
        assert all(c.params_after < c.params_before for c in lr.chosen)


def test_onnx_export_runs_in_onnxruntime(digits_data):
    ort = pytest.importorskip("onnxruntime")
    from minidlc.frontends.onnx.export import export_onnx

    graph, lr = _digits_graph(0.9)  # conv1..conv3 and fc1 (a Gemm with transB=1) factored
    assert len(lr.chosen) == 4
    x = digits_data[0][:40]
    want = interpret(graph, [x])[0]
    session = ort.InferenceSession(export_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
