"""The `minidlc` command line: output, exit codes and one-line errors."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from minidlc.cli import main


@pytest.fixture
def relu_model(tmp_path):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu1")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "ops", "compile", "run", "bench"):
        assert f"minidlc {cmd} " in out


def test_compile_emit_graph(relu_model, capsys):
    assert main(["compile", relu_model, "--emit", "graph"]) == 0
    assert "%y = Relu(%x) : f32[2,3]  # relu1" in capsys.readouterr().out


def test_compile_explain_fusion(tmp_path, capsys):
    g = helper.make_graph([helper.make_node("Exp", ["x"], ["e"], name="exp1"),
                           helper.make_node("Relu", ["e"], ["y"], name="relu1"),
                           helper.make_node("Neg", ["e"], ["z"], name="neg1")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in "yz"])
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert main(["compile", str(path), "--explain-fusion"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fusion: 0 groups, 1 boundaries\n")
    assert "at Exp node %e (exp1): its result is read by 2 different groups" in out


def test_run_random_inputs_check(relu_model, capsys):
    assert main(["run", relu_model, "--random-inputs", "--check"]) == 0
    out = capsys.readouterr().out
    assert "y: float32[2, 3]" in out
    assert "check against onnxruntime: max abs error 0  OK" in out


def test_run_input_file_and_output(relu_model, tmp_path, capsys):
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    assert main(["run", relu_model, "--input", f"x={tmp_path / 'x.npy'}", "--output", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out)["y"], np.maximum(x, 0))


def test_errors_are_one_line_with_status_2(relu_model, tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minidlc: error: model file not found") and err.count("\n") == 1
    np.save(tmp_path / "x.npy", np.zeros((3, 3), np.float32))
    assert main(["run", relu_model, "--input", f"x={tmp_path / 'x.npy'}"]) == 2
    assert "input 'x' has shape [3, 3], expected [2, 3]" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="model file not found"):
        main(["--debug", "run", str(tmp_path / "missing.onnx")])


def test_ops_table(tmp_path, capsys):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Frobnicate", ["a"], ["y"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert main(["ops", str(path)]) == 1
    out = capsys.readouterr().out
    assert "Frobnicate" in out and "missing: no converter for this op" in out
    assert "2 op types, 1 unsupported" in out
    assert main(["run", str(path), "--random-inputs"]) == 2
    assert "unsupported op type(s): Frobnicate (1 node; no converter for this op)" in capsys.readouterr().err


def test_demo_prints_a_table(capsys):
    assert main(["demo", "--target", "reference", "mlp"]) == 0
    out = capsys.readouterr().out
    assert "model" in out and "max err" in out
    row = next(line for line in out.splitlines() if line.startswith("mlp"))
    assert float(row.split()[3]) < 1e-4


def test_llvm_stats_bench_and_threads(relu_model, capsys):
    assert main(["compile", relu_model, "--target", "llvm", "--threads", "3", "--stats"]) == 0
    out = capsys.readouterr().out
    assert "memory plan: one arena of 128 bytes" in out and "weights: 0 bytes" in out
    assert main(["bench", relu_model, "--target", "llvm", "--compare", "onnxruntime,reference", "--repeat", "3"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["runner", "ms", "runner/minidlc"]
    assert [r.split()[0] for r in rows[1:]] == ["minidlc", "onnxruntime", "reference"]
    assert rows[1].split()[-1] == "1.00"


def test_demo_without_onnxruntime_checks_against_the_reference(monkeypatch, capsys):
    def no_onnxruntime(*args, **kwargs):
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr("minidlc.cli.onnxruntime_session", no_onnxruntime)
    assert main(["demo", "--target", "reference", "mlp"]) == 0
    out = capsys.readouterr().out
    assert "max err against the reference backend" in out
    assert next(line for line in out.splitlines() if line.startswith("mlp")).split()[-2:] == ["-", "-"]


def test_a_pytorch_model_without_pytorch_is_a_one_line_error(monkeypatch, capsys):
    import sys

    from pathlib import Path

    spec = f"{Path(__file__).parents[1] / 'examples' / 'torch_models.py'}:make_mlp"
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert main(["compile", spec, "--input-shape", "8,784"]) == 2
    assert capsys.readouterr().err == (f"minidlc: error: {spec} is a PyTorch model, "
                                       "but PyTorch is not installed (pip install 'minidlc[torch]')\n")


def test_unknown_targets_name_the_known_ones():
    from minidlc.backends import get_backend

    with pytest.raises(ValueError, match="unknown target 'tpu'; choose one of: reference, llvm, numba, cuda$"):
        get_backend("tpu")


@pytest.mark.parametrize("argv,message", [
    (["compile", "{relu}", "--target", "llvm", "--threads", "0"], "target llvm: option threads must be at least 1, got 0"),
    (["compile", "{relu}", "--threads", "2"], "--threads is an option of --target llvm or numba, not of reference"),
    (["compile", "{relu}", "--target", "numba", "--threads", "999"],
     "target numba: threads=999, but Numba's thread pool has"),
    (["compile", "{relu}", "--emit", "llvm"], "target reference cannot emit 'llvm'; it emits graph, fused, loops, dot, svg, onnx"),
    (["ops", "{tmp}/m.py:make_model"], "`minidlc ops` reads ONNX files"),
    (["compile", "{tmp}/broken.py", "--input-shape", "2"], "broken.py failed to import: SyntaxError"),
    (["compile", "{tmp}/raises.py", "--input-shape", "2"], "raises.py raised RuntimeError: no weights here"),
])
def test_usage_errors_are_one_line(relu_model, tmp_path, capsys, argv, message):
    if argv[0] == "compile" and ".py" in argv[1]:
        pytest.importorskip("torch")  # PyTorch factories import torch first
    (tmp_path / "broken.py").write_text("def make_model(:\n")
    (tmp_path / "raises.py").write_text("def make_model():\n    raise RuntimeError('no weights here')\n")
    assert main([a.format(relu=relu_model, tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minidlc: error: ") and message in err and err.count("\n") == 1


def test_bench_without_onnxruntime_says_how_to_fix_it(relu_model, monkeypatch, capsys):
    def no_onnxruntime(*args, **kwargs):
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr("minidlc.cli.onnxruntime_session", no_onnxruntime)
    assert main(["bench", relu_model]) == 2
    assert "onnxruntime is not installed (pip install onnxruntime), or use --compare reference" in \
        capsys.readouterr().err


@pytest.mark.parametrize("target", ["reference", "llvm", "numba", "cuda"])  # cuda: on the simulator
def test_every_target_runs_checks_and_prints_its_loop_program(relu_model, capsys, target):
    assert main(["run", relu_model, "--target", target, "--random-inputs", "--check"]) == 0
    assert "check against onnxruntime: max abs error 0  OK" in capsys.readouterr().out
    assert main(["compile", relu_model, "--target", target, "--emit", "loops"]) == 0
    out = capsys.readouterr().out
    assert "kernel k_relu(f32* x /*[6]*/, f32* y /*[6]*/) {" in out and "memory plan: one arena" in out


def test_emit_numba_prints_the_generated_module(relu_model, capsys):
    assert main(["compile", relu_model, "--target", "numba", "--emit", "numba"]) == 0
    out = capsys.readouterr().out
    assert "def k_relu(x, y):" in out and "y[np.uint64(" in out and "program0 = k_relu" in out


def test_targets_stages_and_options_come_from_the_backend_registry(capsys):
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    out = capsys.readouterr().out
    assert "{reference,llvm,numba,cuda}" in out and "{graph,fused,loops,dot,svg,onnx,llvm,asm,numba,cuda,ptx}" in out
    assert "--threads THREADS" in out and "(llvm, numba)" in out


def test_demo_on_numba(capsys):
    assert main(["demo", "--target", "numba", "mlp"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("target: numba;")
    assert float(next(line for line in out.splitlines() if line.startswith("mlp")).split()[3]) < 1e-4
