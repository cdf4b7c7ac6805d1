"""`--emit dot` / `--emit svg`: the graph after the passes as a Graphviz picture."""
import re
import shutil

import pytest

import minidlc
from minidlc.demo_models import build_model
from minidlc.passes.options import op_counts


def _dot(name: str, opt_level: int = 2):
    m = minidlc.compile(build_model(name), opt_level=opt_level)
    return m, m.emit("dot")


@pytest.mark.parametrize("name", ["mlp", "convnet", "tfblock"])
def test_dot_draws_every_op_once_groups_as_clusters_and_no_dangling_edges(name):
    m, text = _dot(name)
    assert text.startswith(f'digraph "{name}" {{') and text.rstrip().endswith("}")
    defined = set(re.findall(r"^\s*(n\d+) \[", text, re.M))
    edges = re.findall(r"^\s*(n\d+) -> (n\d+)", text, re.M)
    assert edges and all(a in defined and b in defined for a, b in edges)
    boxes = re.findall(r'^\s*n\d+ \[label="([A-Za-z]+)\\n', text, re.M)
    counts = op_counts(m.graph)
    del counts["Constant"]  # constants are written into their readers' labels
    assert sorted(boxes) == sorted(counts.elements())
    groups = [n.attrs["name"] for n in m.graph.nodes if n.op == "Fused"]
    assert re.findall(r'label="(fused_\w+)"; style', text) == groups
    clusters = re.findall(r"subgraph cluster_\w+ \{(.*?)\n  \}", text, re.S)
    assert len(clusters) == len(groups) and not any("->" in c for c in clusters)  # an edge would pull nodes in
    ellipses = len(re.findall(r"shape=ellipse", text))
    assert ellipses == len(m.graph.inputs) + len(m.graph.outputs)


def test_dot_labels_carry_types_weights_and_small_constants():
    _, text = _dot("convnet")
    assert 'label="Conv\\nf32[8,16,64,64]\\nstem.bn_7.weight: f32[16,3,3,3]\\nstem.bn_7.bias: f32[16]"' in text
    assert '[label="f32[8,16,64,64]"]' in text  # edges are labelled with the tensor type
    _, text = _dot("tfblock", opt_level=0)
    assert re.search(r'label="Div\\nf32\[[0-9,]+\]\\n[\w.]+ = 1.414', text)  # GELU's sqrt(2), by value


def test_svg_without_graphviz_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    m = minidlc.compile(build_model("mlp"))
    with pytest.raises(FileNotFoundError, match="needs Graphviz's `dot` program: install graphviz"):
        m.emit("svg")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_svg_with_graphviz():
    assert "<svg" in minidlc.compile(build_model("mlp")).emit("svg")
