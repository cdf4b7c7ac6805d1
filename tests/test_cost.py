"""Cost estimates (ir/cost.py) and the per-pass table (`--pass-stats`)."""

import numpy as np

import minidlc
from minidlc.cli import main
from minidlc.demo_models import build_model
from minidlc.ir import Graph, TensorType
from minidlc.ir.cost import graph_flops, intermediate_bytes, node_flops
from minidlc.passes.options import PassStats


def test_flops_of_the_heavy_ops_count_multiply_adds_twice():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 8, 8)))
    conv = g.add("Conv", [x, g.constant(np.ones((4, 3, 3, 3), np.float32))],
                 {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1})
    assert node_flops(conv) == 2 * (2 * 4 * 8 * 8) * (3 * 3 * 3)
    flat = g.add("Reshape", [conv.output, g.constant(np.array([2, -1], np.int64))])
    mm = g.add("MatMul", [flat.output, g.constant(np.ones((256, 10), np.float32))])
    assert node_flops(flat) == 0 and node_flops(mm) == 2 * 2 * 10 * 256
    relu = g.add("Relu", [mm.output])
    assert node_flops(relu) == 20
    g.outputs = [relu.output]
    assert graph_flops(g) == node_flops(conv) + node_flops(mm) + 20
    assert intermediate_bytes(g) == 4 * (2 * 4 * 8 * 8 + 2 * 256 + 20 + 20)


def test_pass_stats_show_fusion_saving_intermediate_bytes():
    stats = PassStats()
    minidlc.compile(build_model("convnet"), instruments=[stats])
    rows = {r[0]: r for r in stats.rows}
    assert list(rows)[:2] == ["(input)", "fold"] and list(rows)[-1] == "fuse"
    assert rows["(input)"][2] == 0 and rows["fuse"][2] == 5  # groups
    assert rows["fuse-layers"][1] < rows["(input)"][1]  # BatchNormalization folded into the convs
    assert rows["fuse"][5] < rows["fuse-layers"][5] / 2  # fusion halves the traffic between kernels
    assert rows["fuse"][4] == rows["fuse-layers"][4]  # and does not change the arithmetic


def test_pass_stats_on_the_command_line(capsys, tmp_path):
    path = tmp_path / "mlp.onnx"
    path.write_bytes(build_model("mlp").SerializeToString())
    assert main(["compile", str(path), "--pass-stats", "--target", "llvm"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["pass", "ops", "groups", "top-level", "MFLOP", "intermediate", "KiB", "weight", "KiB"]
    assert out[-1].startswith("after lowering: ") and "arena" in out[-1]
