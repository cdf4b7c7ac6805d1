"""`minidlc explain MODEL NODE`: one node's journey through the compiler."""
import pytest

import minidlc
from minidlc.cli import main
from minidlc.demo_models import build_model
from minidlc.explain import UnknownNode, explain


def test_a_conv_is_followed_through_its_batchnorm_fold_into_its_group_kernel_and_llvm():
    text = explain(minidlc.load(build_model("convnet")), "stem.conv_2", target="llvm")
    lines = text.splitlines()
    assert lines[0] == "Conv node %stem.conv_2 (stem.conv_2): Conv of %x, %stem.weight_1 -> f32[8,16,64,64]"
    assert "  fuse-layers: conv-bn fired on BatchNormalization node %stem.bn_7 (stem.bn_7)" in lines
    assert any(line.strip().startswith("w' = w·s (w f32[16,3,3,3])") for line in lines)
    assert "fused group: fused_conv_relu = Conv + Relu" in lines
    assert "loop program: kernel step" in lines and "  kernel k_fused_conv_relu(" in text
    llvm = lines[lines.index("llvm (after O3):") + 1:]
    assert llvm and all(line.startswith("  @k_fused_conv_relu_s") and " instructions, " in line for line in llvm)


def test_on_the_reference_target_and_at_O0():
    text = explain(minidlc.load(build_model("tfblock")), "attn.softmax_29", target="reference", opt_level=0)
    assert "passes (-O0):\n  no rewrite changed it\n" in text
    assert text.endswith("target reference interprets the graph: no kernel\n")


def test_an_unknown_node_lists_the_names():
    with pytest.raises(UnknownNode, match=r"no node named .nope.; nodes: fc1.matmul_3, fc1.add_4, relu1_5"):
        explain(minidlc.load(build_model("mlp")), "nope")


def test_explain_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "mlp.onnx"
    path.write_bytes(build_model("mlp").SerializeToString())
    assert main(["explain", str(path), "relu1_5"]) == 0
    out = capsys.readouterr().out
    assert "fused group: fused_gemm_relu = Gemm + Relu" in out and "llvm (after O3):" in out
    assert main(["explain", str(path), "nope"]) == 2
    assert capsys.readouterr().err.startswith("minidlc: error: no node named 'nope'")


@pytest.mark.parametrize("target,stage,prefix", [("reference", "loops", "// "), ("numba", "numba", "# "),
                                                  ("llvm", "llvm", "; "), ("llvm", "asm", "# ")])
def test_kernels_say_which_nodes_they_compute(target, stage, prefix):
    m = minidlc.compile(build_model("mlp"), target=target)
    assert f"{prefix}computes Gemm %fc1.add_4_0 (fc1.add_4), Relu %relu1_5 (relu1_5)\n" in m.emit(stage)


def test_a_pytorch_node_is_followed_by_its_value_not_its_shared_source_line():
    pytest.importorskip("torch")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    from torch_models import make_resnet

    import torch

    graph = minidlc.load(make_resnet(), example_inputs=(torch.zeros(1, 3, 32, 32),))
    text = explain(graph, "stages.0.0.conv1", target="llvm")
    assert text.count("conv-bn fired") == 1  # other blocks share its source line, not its values
    assert "fired on BatchNormalization node %stages.0.0.bn1 (examples/torch_models.py:" in text
    assert "fused group: fused_conv_relu = Conv + Relu" in text


def test_explain_with_the_time_share_of_its_kernel():
    text = explain(minidlc.load(build_model("convnet")), "block1.conv2.conv_18", target="llvm", profile=True)
    last = text.splitlines()[-1]
    assert last.startswith("time: ") and "% of a run (8 steps timed alone, " in last
