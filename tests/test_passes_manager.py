"""The pass manager: pipelines, instruments, CLI options, verification between passes."""
import argparse
import io
import re

import numpy as np
import pytest

import minidlc
from minidlc.ir import TensorType, parse_graph
from minidlc.passes.instruments import DumpIR, PrintChanged, PrintIR, TimePasses, TraceRewrites, VerifyNumerics
from minidlc.passes.manager import LEVELS, PassError, build_pipeline, registered_passes
from minidlc.passes.options import add_pass_arguments, format_stats, pipeline_kwargs_from_args

from passes_util import ir, run_passes

SRC = ir("""
graph main(%x: f32[2,3]) {
  %one = Constant() {value=<f32[] 1.0>} : f32[]
  %y = Mul(%x, %one) : f32[2,3]
  %z = Relu(%y) : f32[2,3]
  return %z
}
""")


def test_levels_and_explicit_lists():
    assert [p.name for p in build_pipeline(0).passes] == []
    assert [p.name for p in build_pipeline(1).passes] == ["fold", "dce", "cse", "simplify"]
    assert [p.name for p in build_pipeline(2).passes] == LEVELS[1] + ["integer-ops", "fuse-layers", "fuse"]
    assert [p.name for p in build_pipeline(passes="fuse, dce").passes] == ["fuse", "dce"]
    assert {"fold", "dce", "cse", "simplify", "integer-ops", "fuse-layers", "fuse", "quantize"} <= set(registered_passes())


def test_bad_pipeline_requests_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown pass\(es\) \['folding'\]; available: .*fold"):
        build_pipeline(passes="folding")
    with pytest.raises(ValueError, match="opt_level must be one of"):
        build_pipeline(opt_level=7)


def test_print_ir_before_after_and_selected():
    out = io.StringIO()
    run_passes(parse_graph(SRC), "dce,simplify", instruments=[PrintIR(before=True, after=["simplify"], out=out)])
    text = out.getvalue()
    assert text.count("IR Dump Before") == 2 and text.count("IR Dump After") == 1
    after = text.split("// -----// IR Dump After simplify //----- //\n")[1]
    assert "Mul" not in after and "%z = Relu(%x)" in after


def test_print_changed_is_a_unified_diff_of_changed_passes_only():
    out = io.StringIO()
    run_passes(parse_graph(SRC), "dce,simplify", instruments=[PrintChanged(out)])
    text = out.getvalue()
    assert "IR Dump After dce //----- // omitted because no change" in text
    diff = text.split("IR Dump After simplify //----- //\n")[1]
    assert diff.splitlines()[:2] == ["--- before simplify", "+++ after simplify"]
    assert "-  %y = Mul(%x, %one) : f32[2,3]" in diff
    assert "+  %z = Relu(%x) : f32[2,3]" in diff


def test_dump_dir_writes_numbered_files(tmp_path):
    run_passes(parse_graph(SRC), "fold,simplify", instruments=[DumpIR(tmp_path / "d")])
    files = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert files == ["000_input.ir", "001_fold.ir", "002_simplify.ir"]
    assert (tmp_path / "d" / "000_input.ir").read_text().strip() == SRC
    assert parse_graph((tmp_path / "d" / "002_simplify.ir").read_text()).nodes[0].op == "Relu"
    run_passes(parse_graph(SRC), "dce", instruments=[DumpIR(tmp_path / "d")])  # a second run replaces them
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["000_input.ir", "001_dce.ir"]


def test_time_passes_table_lists_every_pass():
    out = io.StringIO()
    run_passes(parse_graph(SRC), "fold,dce,simplify", instruments=[TimePasses(out)])
    rows = out.getvalue().splitlines()
    assert "Pass execution timing report" in rows[1]
    assert sorted(r.split()[-1] for r in rows[4:-1]) == ["dce", "fold", "simplify"]
    assert rows[-1].split()[-1] == "total"


def test_trace_rewrites_names_rule_node_and_near_misses():
    g = parse_graph(ir("""
    graph main(%x: f32[3]) {
      %one = Constant() {value=<f32[] 1.0>} : f32[]
      %zero = Constant() {value=<f32[2,3] [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]>} : f32[2,3]
      %y = Mul(%one, %x) : f32[3]  # mul_node
      %z = Add(%y, %zero) : f32[2,3]
      return %z
    }"""))
    out = io.StringIO()
    run_passes(g, "simplify", instruments=[TraceRewrites(out)])
    lines = out.getvalue().splitlines()
    assert "[simplify] mul-one fired on Mul node %y (mul_node)" in lines
    assert "[simplify] add-zero matched Add node %z but did not fire: %x is f32[3] but the result is f32[2,3]" in lines


class BreakTypes:
    """A deliberately wrong pass: makes Relu's output claim another shape."""
    name = "break"

    def run(self, graph):
        graph.nodes[-1].outputs[0].type = TensorType((9,))
        return graph, True


class NegateRelu:
    """A deliberately wrong pass: turns every Relu into Neg (valid IR, wrong numbers)."""
    name = "negate"

    def run(self, graph):
        for n in graph.nodes:
            if n.op == "Relu":
                n.op = "Neg"
        return graph, True


def test_verifier_failure_names_pass_predecessors_and_dump(tmp_path):
    from minidlc.passes.manager import Pipeline

    dump = DumpIR(tmp_path)
    pipe = Pipeline([registered_passes()["dce"](), BreakTypes()], [dump])
    with pytest.raises(PassError, match=r"pass 'break' produced an invalid graph \(passes before it: dce\)") as e:
        pipe.run(parse_graph(SRC))
    assert "inference gives f32[2,3]" in str(e.value)
    assert str(tmp_path / "002_break.ir") in str(e.value)
    assert "f32[9]" in (tmp_path / "002_break.ir").read_text()
    Pipeline([BreakTypes()], verify_each=False).run(parse_graph(SRC))  # --no-verify


def test_verify_numerics_names_first_bad_pass_and_tensor():
    from minidlc.passes.manager import Pipeline

    g = parse_graph(ir("""
    graph main(%x: f32[4]) {
      %r = Relu(%x) : f32[4]
      %e = Exp(%r) : f32[4]
      return %e
    }"""))
    pipe = Pipeline([registered_passes()["fold"](), NegateRelu(), registered_passes()["dce"]()], [VerifyNumerics()])
    with pytest.raises(PassError, match=r"pass 'negate' changed the numerics \(passes before it: fold\): "
                                        r"output %e differs by .*first diverging tensor: %r \(Neg node %r\)"):
        pipe.run(g)


def test_options_build_compile_kwargs(tmp_path):
    ap = argparse.ArgumentParser()
    add_pass_arguments(ap)
    args = ap.parse_args(["-O1", "--print-ir-after=fold,cse", "--print-ir-after", "simplify", "--time-passes",
                          "--trace-rewrites", "--verify-numerics", "--dump-ir-dir", str(tmp_path),
                          "--no-verify", "--stats", "--print-ir-after-change"])
    out = io.StringIO()
    kw = pipeline_kwargs_from_args(args, out)
    assert kw["opt_level"] == 1 and kw["passes"] is None and kw["verify_each"] is False
    assert {type(i).__name__ for i in kw["instruments"]} == {
        "PrintIR", "PrintChanged", "DumpIR", "TraceRewrites", "VerifyNumerics", "TimePasses", "Stats"}
    m = minidlc.compile(parse_graph(SRC), **kw)
    x = np.array([[-1, 2, 3], [4, -5, 6]], np.float32)
    np.testing.assert_array_equal(m.run({"x": x})["z"], np.maximum(x, 0))
    text = out.getvalue()
    assert text.count("IR Dump After") >= 3 and "mul-one fired" in text and "Pass execution timing" in text
    assert "Mul             1        0" in text
    defaults = pipeline_kwargs_from_args(ap.parse_args([]), out)
    assert defaults == {"opt_level": 2, "passes": None, "instruments": [], "verify_each": True}
    assert ap.parse_args(["-p", "fold,fuse"]).passes == "fold,fuse"


def test_format_stats_counts_ops_groups_and_bytes():
    before = parse_graph(SRC)
    after = run_passes(before.copy(), "simplify,fuse")
    text = format_stats(before, after)
    lines = text.splitlines()
    assert lines[0].split() == ["op", "before", "after"]
    assert "Constant        1        0" in text and "Mul             1        0" in text
    assert "fused groups: 0 (holding 0 nodes); top-level nodes: 3 -> 1" in text
    assert "constant bytes: 4 -> 0" in text


def test_print_ir_after_an_unknown_pass_is_an_error():
    ap = argparse.ArgumentParser()
    add_pass_arguments(ap)
    with pytest.raises(ValueError, match=r"--print-ir-after: unknown pass\(es\) \['fusion'\]; available: cse, dce"):
        pipeline_kwargs_from_args(ap.parse_args(["--print-ir-after=fold,fusion"]))


def test_pass_options_from_the_pass_list():
    pipe = build_pipeline(passes="fold{always_fold_bytes=32}, simplify{disable=sub-const,div-const}, dce")
    assert [p.name for p in pipe.passes] == ["fold", "simplify", "dce"]
    assert pipe.passes[0].options == {"always_fold_bytes": 32}
    assert pipe.passes[1].options == {"disable": ("sub-const", "div-const")}
    g = parse_graph(ir("""
    graph main(%x: f32[2]) {
      %c = Constant() {value=<f32[] 2.0>} : f32[]
      %y = Div(%x, %c) : f32[2]
      return %y
    }"""))
    assert [n.op for n in pipe.run(g.copy()).nodes] == ["Constant", "Div"]
    assert [n.op for n in run_passes(g, "simplify").nodes] == ["Constant", "Mul"]


def test_fold_option_bounds_materialized_constants():
    src = ir("""
    graph main(%x: f32[4,4]) {
      %v = Constant() {value=<f32[] 0.5>} : f32[]
      %s = Constant() {value=<i64[2] [4, 4]>} : i64[2]
      %e = Expand(%v, %s) : f32[4,4]
      %y = Add(%x, %e) : f32[4,4]
      return %y
    }""")
    assert "Expand" in str(run_passes(parse_graph(src), "fold{always_fold_bytes=32},dce"))
    assert "Expand" not in str(run_passes(parse_graph(src), "fold{always_fold_bytes=64},dce"))


@pytest.mark.parametrize("spec,message", [
    ("fold{limit=3}", r"pass 'fold' has no option 'limit'; its options: always_fold_bytes"),
    ("fold{always_fold_bytes=many}", r"pass 'fold' option always_fold_bytes: cannot use 'many'"),
    ("simplify{disable=mul-two}", r"pass 'simplify' has no rule\(s\) \['mul-two'\]; its rules: identity"),
    ("fold{always_fold_bytes}", r"option 'always_fold_bytes' needs the form name=value"),
    ("fold,,dce", r"cannot read the pass list"),
])
def test_bad_pass_options_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        build_pipeline(passes=spec)


def test_a_pass_that_raises_is_named():
    from minidlc.passes.manager import Pipeline

    class Crash:
        name = "crash"

        def run(self, graph):
            raise KeyError("boom")

    with pytest.raises(PassError, match=r"pass 'crash' failed \(passes before it: dce\): KeyError: 'boom'"):
        Pipeline([registered_passes()["dce"](), Crash()]).run(parse_graph(SRC))


def test_verify_numerics_names_a_pass_whose_graph_cannot_run():
    from minidlc.passes.manager import Pipeline

    class BadAttr:
        """Valid types, but an attribute value the reference implementation rejects."""
        name = "bad-attr"

        def run(self, graph):
            graph.nodes[-1].attrs["perm"] = [0, 0]
            return graph, True

    g = parse_graph(ir("""
    graph main(%x: f32[2,2]) {
      %t = Transpose(%x) {perm=[1, 0]} : f32[2,2]
      return %t
    }"""))
    with pytest.raises(PassError, match=r"pass 'bad-attr' made a graph the reference interpreter cannot run "
                                        r"\(passes before it: none\): Transpose node %t failed"):
        Pipeline([BadAttr()], [VerifyNumerics()], verify_each=False).run(g)



def test_cli_compile_with_pass_flags(tmp_path, capsys):
    import onnx

    from minidlc.cli import build_parser, compile_model, main
    from minidlc.demo_models import build_model

    model, dump = str(tmp_path / "convnet.onnx"), tmp_path / "dump"
    onnx.save(build_model("convnet"), model)
    args = build_parser().parse_args(["compile", model, "--print-ir-after=fuse-layers", "--time-passes", "--stats",
                                      "--dump-ir-dir", str(dump), "--verify-numerics"])
    buf = io.StringIO()
    compile_model(args, out=buf)
    out = buf.getvalue()
    printed = out.split("// -----// IR Dump After fuse-layers //----- //\n")[1]
    assert "Conv(" in printed and "BatchNormalization" not in printed.split("return")[0]
    assert "Pass execution timing report" in out
    stages = out.split("Compile timing report")[1]  # then the whole compile, stage by stage
    assert "the pass pipeline (above)" in stages and "reference: nothing to compile" in stages
    compile_model(build_parser().parse_args(["compile", model, "--target", "llvm", "--time-passes"]), out=buf)
    stages = buf.getvalue().split("Compile timing report")[2]
    assert "lowering and scheduling 8 kernels, the memory plan" in stages
    assert re.search(r"llvm: code generation and compilation \(\d+ modules: \d+ compiled( in \d processes)?, "
                     r"\d+ from the cache\)", stages)
    assert "BatchNormalization        6        0" in out and "fused groups: 5" in out
    assert sorted(p.name for p in dump.iterdir())[-1] == "007_fuse.ir"
    assert main(["compile", model, "-p", "fold,nope"]) == 2
    assert "unknown pass(es) ['nope']" in capsys.readouterr().err
