"""Graph IR: construction, editing API, printer, parser (round trip), verifier."""
import numpy as np
import pytest
from hypothesis import given

from graph_strategies import elementwise_graphs, random_feeds
from minidlc.ir import (Graph, IRError, ParseError, TensorType, VerifyError, collect_weights, interpret,
                        parse_graph, verify)


def small_graph():
    g = Graph("g")
    x = g.add_input("x", TensorType((2, 3)))
    b = g.constant(np.array([1.0, 2.0, 3.0], np.float32), "b")
    y = g.add("Add", [x, b], loc="model.py:3").output
    g.outputs = [g.add("Relu", [y], names=["out"]).output]
    return g


def test_print_golden():
    assert str(small_graph()) == """\
graph g(%x: f32[2,3]) {
  %b = Constant() {value=<f32[3] [1.0, 2.0, 3.0]>} : f32[3]
  %add = Add(%x, %b) : f32[2,3]  # model.py:3
  %out = Relu(%add) : f32[2,3]
  return %out
}"""


def test_types_print_and_validate():
    assert str(TensorType((1, 3, 224, 224), "f16")) == "f16[1,3,224,224]"
    assert str(TensorType((), "i64")) == "i64[]"
    with pytest.raises(TypeError, match="unknown dtype 'f8'"):
        TensorType((1,), "f8")


def test_add_infers_types_and_checks_attrs():
    g = Graph()
    x = g.add_input("x", TensorType((4, 1), "f32"))
    y = g.add_input("y", TensorType((3,), "f32"))
    assert g.add("Add", [x, y]).output.type == TensorType((4, 3))
    assert g.add("Less", [x, y]).output.type == TensorType((4, 3), "bool")
    with pytest.raises(IRError, match="do not broadcast"):
        g.add("Add", [g.add_input("z", TensorType((4, 2))), y])
    with pytest.raises(IRError, match="unknown attribute"):
        g.add("Relu", [x], {"alpha": 1.0})
    with pytest.raises(IRError, match="approximate='fast' is not supported"):
        g.add("Gelu", [x], {"approximate": "fast"})
    with pytest.raises(IRError, match="one dtype"):
        g.add("Add", [x, g.add_input("i", TensorType((3,), "i64"))])


def test_attr_defaults_are_not_shared_between_nodes():
    g = Graph()
    x = g.add_input("x", TensorType((1, 3), "f32"))
    first, second = g.add("Squeeze", [x]), g.add("Squeeze", [x])  # axes defaults to []
    first.attrs["axes"].append(0)
    assert second.attrs["axes"] == []
    assert g.add("Squeeze", [x]).attrs["axes"] == []
    c1, c2 = (g.add("ConstantOfShape", [g.constant(np.array([2], np.int64))]) for _ in range(2))
    c1.attrs["value"][0] = 7.0  # value defaults to a zeros array
    assert c2.attrs["value"][0] == 0.0


def test_copy_does_not_share_attribute_lists():
    g = Graph()
    x = g.add_input("x", TensorType((1, 3), "f32"))
    g.outputs = [g.add("Squeeze", [x], {"axes": [0]}).output]
    h = g.copy()
    h.nodes[0].attrs["axes"].append(1)  # a pass editing the copy...
    assert g.nodes[0].attrs["axes"] == [0]  # ...leaves the original alone


def test_editing_api():
    g = small_graph()
    add = g.nodes[1]
    assert add.output.producer is add
    assert [(n.op, i) for n, i in g.uses(add.output)] == [("Relu", 0)]
    neg = g.add("Neg", [add.inputs[0]], before=g.nodes[2])
    g.replace_all_uses(add.output, neg.output)
    assert g.uses(add.output) == []
    g.erase(add)
    verify(g)
    assert [n.op for n in g.nodes] == ["Constant", "Neg", "Relu"]
    with pytest.raises(IRError, match="still has uses"):
        g.erase(neg)


def test_topo_sort_restores_order():
    g = small_graph()
    g.nodes.reverse()
    with pytest.raises(VerifyError, match="not defined before it"):
        verify(g)
    g.topo_sort()
    verify(g)


def test_verifier_catches_wrong_type_and_dangling_output():
    g = small_graph()
    g.nodes[2].outputs[0].type = TensorType((2, 3), "f64")
    with pytest.raises(VerifyError, match="inference gives f32"):
        verify(g)
    g = small_graph()
    g.outputs = [Graph().add_input("ghost", TensorType((1,)))]
    with pytest.raises(VerifyError, match="not defined in the graph"):
        verify(g)


def test_printer_marks_broken_nodes_instead_of_raising():
    g = small_graph()
    g.nodes.reverse()
    text = str(g)
    assert "ERROR: %add is used before it is defined" in text


def test_large_constants_print_by_reference_and_parse_back():
    g = Graph()
    x = g.add_input("x", TensorType((4, 8)))
    w = g.constant(np.arange(32, dtype=np.float32).reshape(4, 8), "w")
    g.outputs = [g.add("Mul", [x, w]).output]
    text = str(g)
    assert "value=<f32[4,8] @w>" in text
    with pytest.raises(ParseError, match="weight @w is not in the weights mapping"):
        parse_graph(text)
    assert str(parse_graph(text, collect_weights(g))) == text


def test_odd_names_are_quoted():
    g = Graph()
    x = g.add_input("input:0", TensorType((2,)))
    g.outputs = [g.add("Abs", [x], names=["out/1"]).output]
    text = str(g)
    assert '%"input:0"' in text and '%"out/1"' in text
    assert str(parse_graph(text)) == text


def test_parse_errors_name_the_line():
    with pytest.raises(ParseError, match="line 2: %y is not defined"):
        parse_graph("graph g(%x: f32[2]) {\n  %z = Add(%x, %y) : f32[2]\n  return %z\n}")
    with pytest.raises(ParseError, match="printed as f32\\[3\\] but its op infers f32\\[2\\]"):
        parse_graph("graph g(%x: f32[2]) {\n  %z = Abs(%x) : f32[3]\n  return %z\n}")


def test_special_float_values_round_trip():
    g = Graph()
    x = g.add_input("x", TensorType((4,)))
    c = g.constant(np.array([np.nan, np.inf, -np.inf, 1e-30], np.float32))
    g.outputs = [g.add("Add", [x, c]).output]
    g2 = parse_graph(str(g))
    np.testing.assert_array_equal(g2.nodes[0].attrs["value"], g.nodes[0].attrs["value"])


@given(elementwise_graphs())
def test_print_parse_print_round_trip(g):
    verify(g)
    text = str(g)
    g2 = parse_graph(text, collect_weights(g))
    assert str(g2) == text
    feeds = random_feeds(g)
    for a, b in zip(interpret(g, feeds), interpret(g2, feeds)):
        np.testing.assert_array_equal(a, b)


@given(elementwise_graphs())
def test_copy_is_independent(g):
    c = g.copy()
    assert str(c) == str(g)
    c.nodes.clear()
    verify(g)
