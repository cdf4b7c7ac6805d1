"""fuse-layers and fuse: golden IR on small graphs, differential tests on random
graphs and on the demo models, and the fused-group counts of the demo models."""
import functools

import numpy as np
import pytest
from hypothesis import given, settings

import minidlc
from minidlc.demo_models import build_model
from minidlc.passes.fuse import find_groups
from minidlc.passes.instruments import VerifyNumerics
from minidlc.passes.options import op_counts

from passes_util import assert_same_results, check_groups, check_golden, mixed_graphs, run_passes

CONV_BN = """
graph main(%x: f32[1,2,4,4]) {
  %w = Constant() {value=<f32[2,2,1,1] [[[[1.0]], [[2.0]]], [[[0.5]], [[-1.0]]]]>} : f32[2,2,1,1]
  %sc = Constant() {value=<f32[2] [2.0, 0.5]>} : f32[2]
  %bb = Constant() {value=<f32[2] [0.0, 1.0]>} : f32[2]
  %mu = Constant() {value=<f32[2] [1.0, -1.0]>} : f32[2]
  %va = Constant() {value=<f32[2] [3.0, 0.0]>} : f32[2]
  %c = Conv(%x, %w) {strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1} : f32[1,2,4,4]
  %y = BatchNormalization(%c, %sc, %bb, %mu, %va) {epsilon=1.0} : f32[1,2,4,4]
  %z = BatchNormalization(%x, %sc, %bb, %mu, %va) {epsilon=1.0} : f32[1,2,4,4]
  %o = Add(%y, %z) : f32[1,2,4,4]
  return %o
}"""


def test_conv_bn_folds_into_weights_and_lone_bn_becomes_mul_add():
    # s = scale / sqrt(var + eps) = [1, 0.5]; shift = B - mean * s = [-1, 1.5]
    check_golden("fuse-layers", CONV_BN, """
    graph main(%x: f32[1,2,4,4]) {
      %y.weight = Constant() {value=<f32[2,2,1,1] [[[[1.0]], [[2.0]]], [[[0.25]], [[-0.5]]]]>} : f32[2,2,1,1]
      %y.bias = Constant() {value=<f32[2] [-1.0, 1.5]>} : f32[2]
      %y_0 = Conv(%x, %y.weight, %y.bias) {strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1} : f32[1,2,4,4]
      %z.scale = Constant() {value=<f32[2,1,1] [[[1.0]], [[0.5]]]>} : f32[2,1,1]
      %z_1 = Mul(%x, %z.scale) : f32[1,2,4,4]
      %z.shift = Constant() {value=<f32[2,1,1] [[[-1.0]], [[1.5]]]>} : f32[2,1,1]
      %z_2 = Add(%z_1, %z.shift) : f32[1,2,4,4]
      %o = Add(%y_0, %z_2) : f32[1,2,4,4]
      return %o
    }""")


def test_trace_shows_the_algebra_of_a_fold():
    """The numbers a student can check by hand: channel 0 has γ=2, σ²=3, ε=1,
    μ=1, β=0, so s = 2/√4 = 1 and t = 0 − 1·1 = −1; w[0,0] = 1 stays 1."""
    import io

    from minidlc.passes.instruments import TraceRewrites

    out = io.StringIO()
    run_passes(_parse(CONV_BN), "fuse-layers", instruments=[TraceRewrites(out)])
    lines = out.getvalue().splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("[fuse-layers] conv-bn fired on"))
    assert lines[i + 1] == ("    s = γ/√(σ²+ε), t = β − μ·s per channel (2 channels); channel 0: γ=2, σ²=3, ε=1, μ=1, "
                            "β=0 → s=1, t=-1")
    assert lines[i + 2].endswith("channel 0: w[0,0,...] 1 → 1, b 0 → -1")


def test_conv_with_two_readers_keeps_its_batchnorm_apart():
    g = run_passes(minidlc.load(_parse(CONV_BN.replace("return %o", "return %o, %c"))), "fuse-layers")
    assert op_counts(g)["Conv"] == 1 and op_counts(g)["BatchNormalization"] == 0  # BN -> Mul+Add instead
    assert op_counts(g)["Mul"] == 2


def _parse(text):
    from minidlc.ir import parse_graph

    return parse_graph(text.strip())


def test_matmul_add_becomes_gemm_only_for_matrices():
    check_golden("fuse-layers", """
    graph main(%a: f32[2,3], %b: f32[3,4], %c: f32[4], %d: f32[5,2,3]) {
      %m = MatMul(%a, %b) : f32[2,4]
      %y = Add(%c, %m) : f32[2,4]
      %n = MatMul(%d, %b) : f32[5,2,4]
      %z = Add(%n, %c) : f32[5,2,4]
      return %y, %z
    }""", """
    graph main(%a: f32[2,3], %b: f32[3,4], %c: f32[4], %d: f32[5,2,3]) {
      %y_0 = Gemm(%a, %b, %c) {alpha=1.0, beta=1.0, transA=0, transB=0} : f32[2,4]
      %n = MatMul(%d, %b) : f32[5,2,4]
      %z = Add(%n, %c) : f32[5,2,4]
      return %y_0, %z
    }""")


def test_conv_takes_a_per_channel_bias_add_but_not_a_spatial_one():
    check_golden("fuse-layers", """
    graph main(%x: f32[1,1,2,2]) {
      %w = Constant() {value=<f32[2,1,1,1] [[[[1.0]]], [[[2.0]]]]>} : f32[2,1,1,1]
      %b0 = Constant() {value=<f32[2] [0.5, 0.25]>} : f32[2]
      %b = Constant() {value=<f32[2,1,1] [[[1.0]], [[-1.0]]]>} : f32[2,1,1]
      %sp = Constant() {value=<f32[2] [1.0, 2.0]>} : f32[2]
      %c = Conv(%x, %w, %b0) {strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1} : f32[1,2,2,2]
      %y = Add(%b, %c) : f32[1,2,2,2]
      %z = Add(%y, %sp) : f32[1,2,2,2]
      return %z
    }""", """
    graph main(%x: f32[1,1,2,2]) {
      %w = Constant() {value=<f32[2,1,1,1] [[[[1.0]]], [[[2.0]]]]>} : f32[2,1,1,1]
      %sp = Constant() {value=<f32[2] [1.0, 2.0]>} : f32[2]
      %y.bias = Constant() {value=<f32[2] [1.5, -0.75]>} : f32[2]
      %y_0 = Conv(%x, %w, %y.bias) {strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1} : f32[1,2,2,2]
      %z = Add(%y_0, %sp) : f32[1,2,2,2]
      return %z
    }""")


FUSE_SRC = """
graph main(%x: f32[1,2,4,4], %skip: f32[1,2,4,4]) {
  %w = Constant() {value=<f32[2,2,1,1] [[[[1.0]], [[2.0]]], [[[0.5]], [[-1.0]]]]>} : f32[2,2,1,1]
  %b = Constant() {value=<f32[2] [0.5, -0.5]>} : f32[2]
  %half = Constant() {value=<f32[] 0.5>} : f32[]
  %c = Conv(%x, %w, %b) {strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1} : f32[1,2,4,4]
  %r = Relu(%c) : f32[1,2,4,4]
  %s = Add(%r, %skip) : f32[1,2,4,4]
  %e = Exp(%s) : f32[1,2,4,4]
  %m = Mul(%e, %half) : f32[1,2,4,4]
  %t = Tanh(%s) : f32[1,2,4,4]
  %o = Add(%m, %t) : f32[1,2,4,4]
  %sm = Softmax(%o) {axis=-1} : f32[1,2,4,4]
  %q = Mul(%sm, %half) : f32[1,2,4,4]
  return %q
}"""


def test_fuse_conv_epilogue_and_reduction_with_prologue_and_epilogue():
    # conv + relu + residual add is one group (weights stay group inputs); the
    # diamond exp/tanh feeding softmax, and the scaling after it, are another
    check_golden("fuse", FUSE_SRC, """
    graph main(%x: f32[1,2,4,4], %skip: f32[1,2,4,4]) {
      %w = Constant() {value=<f32[2,2,1,1] [[[[1.0]], [[2.0]]], [[[0.5]], [[-1.0]]]]>} : f32[2,2,1,1]
      %b = Constant() {value=<f32[2] [0.5, -0.5]>} : f32[2]
      %s = Fused(%x, %w, %b, %skip) {name="fused_conv_relu_add"} : f32[1,2,4,4] graph fused_conv_relu_add(%x: f32[1,2,4,4], %w: f32[2,2,1,1], %b: f32[2], %skip: f32[1,2,4,4]) {
        %c = Conv(%x, %w, %b) {strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1} : f32[1,2,4,4]
        %r = Relu(%c) : f32[1,2,4,4]
        %s = Add(%r, %skip) : f32[1,2,4,4]
        return %s
      }
      %q = Fused(%s) {name="fused_exp_mul_tanh_add_softmax"} : f32[1,2,4,4] graph fused_exp_mul_tanh_add_softmax(%s: f32[1,2,4,4]) {
        %half = Constant() {value=<f32[] 0.5>} : f32[]
        %e = Exp(%s) : f32[1,2,4,4]
        %m = Mul(%e, %half) : f32[1,2,4,4]
        %t = Tanh(%s) : f32[1,2,4,4]
        %o = Add(%m, %t) : f32[1,2,4,4]
        %sm = Softmax(%o) {axis=-1} : f32[1,2,4,4]
        %q = Mul(%sm, %half) : f32[1,2,4,4]
        return %q
      }
      return %q
    }""")


def test_fuse_never_merges_two_masters_or_opaque_ops():
    g = check_golden("fuse", """
    graph main(%a: f32[4,4], %b: f32[4,4]) {
      %m = MatMul(%a, %b) : f32[4,4]
      %s = Softmax(%m) {axis=-1} : f32[4,4]
      %n = MatMul(%s, %b) : f32[4,4]
      return %n
    }""", """
    graph main(%a: f32[4,4], %b: f32[4,4]) {
      %m = MatMul(%a, %b) : f32[4,4]
      %s = Softmax(%m) {axis=-1} : f32[4,4]
      %n = MatMul(%s, %b) : f32[4,4]
      return %n
    }""")
    assert not find_groups(g)


def test_fuse_exposes_values_read_outside_a_group_only_at_its_exit():
    src = """
    graph main(%x: f32[3]) {
      %a = Exp(%x) : f32[3]
      %b = Neg(%a) : f32[3]
      %c = Tanh(%b) : f32[3]
      %d = Add(%c, %a) : f32[3]
      return %d, %b
    }"""
    g = run_passes(_parse(src), "fuse")
    # %b is a graph output, so it ends a group; %a has readers in two groups
    assert [n.op for n in g.nodes] == ["Exp", "Neg", "Fused"]
    assert_same_results(_parse(src), g)


# fused groups per demo model at -O2: change deliberately, never by accident
DEMO_GROUPS = {"mlp": 2, "convnet": 5, "tfblock": 12}


@functools.lru_cache(maxsize=None)
def demo(name: str):
    """The demo model as imported, and after -O2 with numerics checked after every pass."""
    source = minidlc.load(build_model(name))
    return source, run_passes(source.copy(), None, instruments=[VerifyNumerics()])


@pytest.mark.parametrize("name", sorted(DEMO_GROUPS))
def test_demo_models_keep_their_results_and_group_counts(name):
    source, optimized = demo(name)
    assert_same_results(source, optimized, seeds=(3,))
    assert sum(n.op == "Fused" for n in optimized.nodes) == DEMO_GROUPS[name]
    check_groups(optimized)


def test_demo_convnet_has_no_batchnorm_and_takes_conv_epilogues():
    source, optimized = demo("convnet")
    assert op_counts(source)["BatchNormalization"] == 6
    assert op_counts(optimized)["BatchNormalization"] == 0
    names = sorted(n.attrs["name"] for n in optimized.nodes if n.op == "Fused")
    assert names == ["fused_conv_add_relu"] * 2 + ["fused_conv_relu"] * 3


def test_demo_mlp_dense_layers_become_gemm_with_relu_epilogues():
    source, optimized = demo("mlp")
    assert op_counts(optimized)["Gemm"] == 3 and op_counts(optimized)["MatMul"] == 0
    assert [n.attrs["name"] for n in optimized.nodes if n.op == "Fused"] == ["fused_gemm_relu"] * 2


def test_compile_at_O2_matches_O0_through_the_public_api():
    fast, plain = (minidlc.compile(build_model("mlp"), opt_level=level) for level in (2, 0))
    feeds = plain.random_inputs(seed=1)
    got, want = fast.run(feeds), plain.run(feeds)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)


def test_fuse_without_fold_inlines_shape_computations_into_groups():
    src = """
    graph main(%x: f32[2,3,4]) {
      %s = Shape(%x) {start=0} : i64[3]
      %i = Constant() {value=<i64[1] [0]>} : i64[1]
      %b = Gather(%s, %i) {axis=0} : i64[1]
      %m = Constant() {value=<i64[1] [-1]>} : i64[1]
      %t = Concat(%b, %m) {axis=0} : i64[2]
      %e = Exp(%x) : f32[2,3,4]
      %r = Reshape(%e, %t) {allowzero=0} : f32[2,12]
      %y = Relu(%r) : f32[2,12]
      return %y
    }"""
    g = run_passes(_parse(src), "fuse")
    body = next(n.body for n in g.nodes if n.op == "Fused")
    assert [n.op for n in g.nodes] == ["Fused"]  # the shape computation became a literal
    assert [n.op for n in body.nodes] == ["Constant", "Exp", "Reshape", "Relu"]
    assert body.nodes[0].attrs["value"].tolist() == [2, -1]
    assert_same_results(_parse(src), g)


def test_fused_graph_prints_nested_and_parses_back():
    from minidlc.ir import collect_weights, parse_graph

    _, optimized = demo("convnet")
    text = str(optimized)
    assert "= Fused(" in text and "graph fused_conv_add_relu(" in text
    again = parse_graph(text, collect_weights(optimized))
    assert str(again) == text
    assert_same_results(optimized, again, seeds=(0,))


# ---- fusion asks the target what it can lower -------------------------------------------------
def cpu_program(g, opt_level: int):
    """The llvm/numba loop program of `g` at an -O level (the CPU targets share their lowering)."""
    from minidlc.backends import get_backend
    from minidlc.passes.manager import PassContext, build_pipeline

    backend = get_backend("llvm")
    graph = build_pipeline(opt_level=opt_level, context=PassContext(backend.can_lower)).run(g.copy())
    return backend.program(graph)


def host_work(program) -> tuple[int, int]:
    """(ops that run on the NumPy fallback, kernel steps) of a loop program."""
    from minidlc.loops.program import StepKind

    host = sum(len(s.node.body.nodes) if s.node.body else 1 for s in program.steps if s.kind == StepKind.HOST)
    return host, program.count(StepKind.KERNEL)


def host_chain():
    """A mean of integers (NumPy's, in f64 and truncated, which no target
    lowers) and a chain of ops after it that lower."""
    from minidlc.ir import Graph, TensorType

    g = Graph()
    x = g.add_input("x", TensorType((8, 16, 2), "i32"))
    y = g.add("Cast", [g.add("ReduceMean", [x], {"axes": [2], "keepdims": 0}).output], {"to": "f32"}).output
    y = g.add("Relu", [g.add("Add", [g.add("Exp", [y]).output, g.constant(np.float32(1.0))]).output]).output
    g.outputs = [g.add("Softmax", [y], {"axis": -1}).output]
    return g


def host_chain_feeds() -> dict:
    return {"x": np.random.default_rng(0).integers(-9, 9, (8, 16, 2)).astype(np.int32)}


def test_a_group_only_holds_what_the_target_lowers():
    """A mean of integers has no lowering on the CPU targets: at -O2 it runs alone on
    the host and the rest is one kernel (it used to drag the whole chain onto NumPy)."""
    g = host_chain()
    assert host_work(cpu_program(g, 0)) == (1, 5)
    assert host_work(cpu_program(g, 2)) == (1, 1)
    m = minidlc.compile(g, target="llvm")
    feeds = host_chain_feeds()
    np.testing.assert_allclose(m.run(feeds)["softmax"], minidlc.compile(g, opt_level=0).run(feeds)["softmax"],
                               rtol=1e-5)


@settings(deadline=None)
@given(g=mixed_graphs())
def test_optimizing_never_moves_work_to_the_host_or_adds_kernels(g):
    host0, kernels0 = host_work(cpu_program(g, 0))
    host2, kernels2 = host_work(cpu_program(g, 2))
    assert host2 <= host0 and kernels2 <= kernels0


def test_optimizing_never_moves_work_to_the_host_on_the_onnx_node_tests():
    from onnx_node_cases import covering_cases

    for case in covering_cases():
        try:
            g = minidlc.load(case.model)
        except Exception:  # a case whose shapes come from its inputs: not compilable by itself
            continue
        host0, kernels0 = host_work(cpu_program(g, 0))
        host2, kernels2 = host_work(cpu_program(g, 2))
        assert host2 <= host0 and kernels2 <= kernels0, case.name


# ---- fusion explains itself --------------------------------------------------------------------
def explain(g, target: str = "reference") -> str:
    import io

    from minidlc.passes.instruments import ExplainFusion

    out = io.StringIO()
    minidlc.compile(g, target=target, instruments=[ExplainFusion(out)])
    return out.getvalue()


def test_explain_fusion_lists_groups_and_why_each_stopped():
    text = explain(build_model("convnet"))
    assert text.startswith("fusion: 5 groups, 9 boundaries\n")
    assert "  fused_conv_add_relu = Conv + Add + Relu: out-fusable Conv with an elementwise epilogue\n" in text
    assert "at Relu node %stem.relu_8 (stem.relu_8): %stem.relu_8 has 2 readers (Conv, Add)" in text
    assert "its reader GlobalAveragePool is reduction, not elementwise" in text
    assert "at Gemm node %head_54 (head_54): %head_54 is a graph output, and a group has one exit" in text
    assert "its reader's group holds Gemm, which is out-fusable" in text


def test_explain_fusion_names_what_the_target_cannot_lower():
    text = explain(host_chain(), target="llvm")
    assert "the target cannot lower ReduceMean, so it runs alone" in text
    assert "Cast + Exp + Add + Relu + Softmax: reduction Softmax with a prologue" in text
    assert "the target cannot lower" not in explain(host_chain(), target="reference")


def test_trace_rewrites_reports_fuse_too():
    import io

    from minidlc.passes.instruments import TraceRewrites

    out = io.StringIO()
    minidlc.compile(build_model("mlp"), instruments=[TraceRewrites(out)])
    assert "[fuse] group fused_gemm_relu = Gemm + Relu: out-fusable Gemm with an elementwise epilogue fired on" \
        in out.getvalue()


@pytest.mark.parametrize("perm,fused", [([0, 2, 1, 3, 4], True),    # a channel shuffle: rows stay whole
                                        ([0, 1, 2, 4, 3], False)])  # swaps the last axes: a copy of its own
def test_a_channel_shuffle_joins_the_padded_conv_after_it(perm, fused):
    """Reshape, Transpose, Reshape before a padded (here depthwise) conv are read
    through in the conv's padded copy, so the shuffle has no kernel of its own;
    the index map simplifies to whole rows (no division left in the copy)."""
    from minidlc.ir import Graph, TensorType
    from minidlc.loops.program import StepKind

    rng = np.random.default_rng(3)
    g = Graph()
    x = g.add_input("x", TensorType((1, 8, 5, 5)))
    s = g.add("Reshape", [x, g.constant(np.array([1, 2, 4, 5, 5]))]).output
    t = g.add("Transpose", [s], {"perm": perm}).output
    m = g.add("Reshape", [t, g.constant(np.array([1, 8, 5, 5]))]).output
    w = g.constant(rng.standard_normal((8, 1, 3, 3)).astype(np.float32))
    g.outputs = [g.add("Conv", [m, w], {"group": 8, "pads": [1, 1, 1, 1]}).output]
    compiled = minidlc.compile(g, target="llvm")
    feeds = compiled.random_inputs()
    np.testing.assert_allclose(compiled.run(feeds)["conv"], minidlc.compile(g).run(feeds)["conv"], rtol=1e-5, atol=1e-6)
    assert compiled.program.count(StepKind.KERNEL) == (1 if fused else 2)
    if fused:
        # channel c of the shuffle is channel c % 2 * 4 + c / 2 of x: whole rows, no division by a row's size
        assert "= x[p0 % 2 * 100 + p0 / 2 * 25 + i1 * 5 + i2];" in compiled.emit("loops")
