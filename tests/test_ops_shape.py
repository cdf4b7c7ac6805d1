"""Shape, data-movement and reduction ops: one-node ONNX models vs onnxruntime.

Each case builds a single-node model with onnx.helper; shape-like operands
(shapes, axes, pads, ...) are initializers, as in exported models. minidlc's
reference backend (the NumPy implementations) must match onnxruntime exactly
for data movement and to float tolerance for reductions.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import minidlc
from minidlc.frontends.onnx.converters import ConversionError
from minidlc.ir import Graph, IRError, TensorType
from minidlc.ir.ops.shape import normalize_slice
from minidlc.ir.registry import Kind, get_op

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4, 5)).astype(np.float32)
INTS = RNG.integers(-3, 4, (3, 4, 5)).astype(np.int32)  # small range: ties for ArgMax


def i64(*values) -> np.ndarray:
    return np.array(values, np.int64)


def one_node(op: str, feeds: dict, consts: dict | None = None, order: list[str] | None = None,
             attrs: dict | None = None, opset: int = 21, outputs: int = 1):
    """A model with one `op` node. Its inputs are `order` (default: the feeds,
    then the constants); '' marks an omitted optional input."""
    consts = consts or {}
    order = order if order is not None else [*feeds, *consts]
    outs = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op, order, outs, name="n", **(attrs or {}))
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in feeds.items()]
    graph = helper.make_graph([node], "g", inputs, [helper.make_value_info(o, helper.TypeProto()) for o in outs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def check_vs_onnxruntime(model, feeds: dict, rtol: float = 1e-5):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    got = minidlc.compile(model, target="reference", opt_level=0).run(feeds)
    assert len(got) == len(want)
    for (name, g), w in zip(got.items(), want):
        assert g.shape == w.shape and g.dtype == w.dtype, f"{name}: {g.dtype}{g.shape} vs {w.dtype}{w.shape}"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-6, err_msg=name)


def run(op, feeds, consts=None, order=None, attrs=None, opset=21, outputs=1, rtol=1e-5):
    check_vs_onnxruntime(one_node(op, feeds, consts, order, attrs, opset, outputs), feeds, rtol)


# ---- reductions ---------------------------------------------------------------
REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare"]


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("axes,keepdims", [(None, 1), ([1], 0), ([-1, 0], 1), ([2, 0, 1], 0)])
def test_reduce(op, axes, keepdims):
    consts = {} if axes is None else {"axes": i64(*axes)}
    run(op, {"x": X}, consts, attrs={"keepdims": keepdims})


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"])
def test_reduce_int32(op):
    run(op, {"x": INTS}, {"axes": i64(1)}, attrs={"keepdims": 0})


def test_reduce_noop_with_empty_axes_is_identity():
    model = one_node("ReduceSum", {"x": X}, {"axes": np.zeros(0, np.int64)}, attrs={"noop_with_empty_axes": 1})
    check_vs_onnxruntime(model, {"x": X})
    assert [n.op for n in minidlc.load(model).nodes if n.op != "Constant"] == ["Identity"]


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceL2"])
def test_reduce_axes_attribute_in_old_opsets(op):
    opset = 11 if op == "ReduceSum" else 13  # the last opsets with `axes` as an attribute
    run(op, {"x": X}, attrs={"axes": [0, 2], "keepdims": 0}, opset=opset)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keepdims,last", [(0, 1, 0), (-1, 0, 0), (1, 1, 1), (2, 0, 1)])
def test_arg_reductions(op, axis, keepdims, last):
    run(op, {"x": INTS}, attrs={"axis": axis, "keepdims": keepdims, "select_last_index": last})


# ---- reshapes -------------------------------------------------------------------
@pytest.mark.parametrize("shape", [[4, -1], [0, -1], [5, 0, 3], [60], [-1, 2, 1, 5]])
def test_reshape(shape):
    run("Reshape", {"x": X}, {"shape": i64(*shape)})


def test_reshape_allowzero_takes_zero_literally():
    empty = np.zeros((0, 3), np.float32)
    run("Reshape", {"x": empty}, {"shape": i64(3, 0)}, attrs={"allowzero": 1})


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_flatten(axis):
    run("Flatten", {"x": X}, attrs={"axis": axis})


@pytest.mark.parametrize("perm", [None, [0, 2, 1], [2, 0, 1]])
def test_transpose(perm):
    run("Transpose", {"x": X}, attrs={} if perm is None else {"perm": perm})


@pytest.mark.parametrize("axes", [None, [0], [-1, 2]])
def test_squeeze(axes):
    x = RNG.standard_normal((1, 3, 1, 1)).astype(np.float32)
    run("Squeeze", {"x": x}, {} if axes is None else {"axes": i64(*axes)})


@pytest.mark.parametrize("axes", [[0], [-1], [3, 0], [1, -2]])
def test_unsqueeze(axes):
    run("Unsqueeze", {"x": X}, {"axes": i64(*axes)})


@pytest.mark.parametrize("op,axes", [("Squeeze", [0, 2]), ("Unsqueeze", [0, -1])])
def test_squeeze_axes_attribute_in_opset_11(op, axes):
    x = RNG.standard_normal((1, 3, 1)).astype(np.float32)
    run(op, {"x": x}, attrs={"axes": axes}, opset=11)


# ---- concat, split, slice ----------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis):
    parts = {f"x{i}": np.concatenate([X] * (i + 1), axis=axis) for i in range(3)}
    run("Concat", parts, attrs={"axis": axis})


@pytest.mark.parametrize("sizes,axis", [([1, 2], 0), ([2, 0, 3], 2), ([1, 1, 1, 1], -2)])
def test_split_sizes(sizes, axis):
    run("Split", {"x": X}, {"split": i64(*sizes)}, attrs={"axis": axis}, outputs=len(sizes))


def test_split_equal_parts_without_sizes():
    run("Split", {"x": X}, attrs={"axis": 1}, outputs=2, opset=13)


def test_split_num_outputs_uneven_opset_18():
    run("Split", {"x": X}, attrs={"axis": 2, "num_outputs": 3}, outputs=3, opset=18)


def test_split_sizes_attribute_opset_11():
    run("Split", {"x": X}, attrs={"axis": 1, "split": [3, 1]}, outputs=2, opset=11)


SLICES = [  # starts, ends, axes, steps
    ([1], [3], None, None),
    ([0, -3], [2, 100], [0, 2], None),
    ([-1, 10], [-100, 0], [1, 2], [-1, -2]),
    ([3, 0], [0, 5], [-1, 0], [-1, 2]),
    ([5], [1], [2], [1]),  # empty
    ([-100], [100], [1], [3]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
def test_slice(starts, ends, axes, steps):
    consts = {"starts": i64(*starts), "ends": i64(*ends)}
    order = ["x", "starts", "ends"]
    if axes is not None or steps is not None:
        consts["axes"] = i64(*(axes or range(len(starts))))
        order.append("axes")
    if steps is not None:
        consts["steps"] = i64(*steps)
        order.append("steps")
    run("Slice", {"x": X}, consts, order)


BOUND = st.integers(-8, 8) | st.sampled_from([-2 ** 63, 2 ** 63 - 1])


@given(st.lists(st.tuples(BOUND, BOUND, st.integers(-3, 3).filter(bool)), min_size=1, max_size=3, unique_by=len),
       st.permutations([0, 1, 2]))
def test_slice_random_bounds(bounds, axes):
    """Random (also out-of-range and INT64-extreme) bounds select what the ONNX
    spec's text says (`spec_slice`), and so do the normalized attributes the
    frontend writes. Neither peer follows the text everywhere: ONNX's reference
    evaluator clamps like NumPy (x[-4:-4:-1] of 3 elements is empty there, one
    element in the spec) and onnxruntime keeps one element for end=INT64_MAX
    with a negative step, where the spec clamps end to dim-1."""
    starts, ends, steps = (list(t) for t in zip(*bounds))
    axes = axes[:len(bounds)]
    consts = {"starts": i64(*starts), "ends": i64(*ends), "axes": i64(*axes), "steps": i64(*steps)}
    model = one_node("Slice", {"x": X}, consts)
    want = spec_slice(X, starts, ends, axes, steps)
    (got,) = minidlc.compile(model, target="reference", opt_level=0).run({"x": X}).values()
    np.testing.assert_array_equal(got, want)
    norm = normalize_slice(X.shape, starts, ends, axes, steps)
    np.testing.assert_array_equal(get_op("Slice").impl(X, **norm), want)


def spec_slice(x, starts, ends, axes, steps):
    """ONNX Slice, transcribed from the operator's documentation."""
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = x.shape[axis]
        start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        x = np.take(x, list(range(start, end, step)), axis=axis)
    return x


def test_slice_attributes_opset_9():
    run("Slice", {"x": X}, attrs={"starts": [1, -2], "ends": [100, -1], "axes": [0, 2]}, opset=9)


def test_slice_prints_normalized_bounds():
    g = minidlc.load(one_node("Slice", {"x": X}, attrs={"starts": [-100, 1], "ends": [2, 100], "axes": [2, 0]},
                              opset=9))
    (node,) = g.nodes
    assert node.attrs == {"starts": [1, 0, 0], "ends": [3, 4, 2], "axes": [0, 1, 2], "steps": [1, 1, 1]}
    assert node.output.type == TensorType((2, 4, 2))


# ---- gather, expand, tile, pad -------------------------------------------------------
@pytest.mark.parametrize("indices,axis", [(i64(0, -1, 2), 0), (i64(3, -4), 1), (i64([[1, 0], [-1, 2]]), -1),
                                          (np.array(2, np.int64), 1), (np.array([1, -5], np.int32), 2)])
def test_gather(indices, axis):
    run("Gather", {"x": X, "i": indices}, attrs={"axis": axis})


@pytest.mark.parametrize("xshape,shape", [((3, 1), [2, 3, 4]), ((1, 4, 1), [3, 1, 2]), ((4,), [1])])
def test_expand(xshape, shape):
    run("Expand", {"x": RNG.standard_normal(xshape).astype(np.float32)}, {"shape": i64(*shape)})


@pytest.mark.parametrize("repeats", [[1, 1, 1], [2, 1, 3], [1, 0, 2]])
def test_tile(repeats):
    run("Tile", {"x": X}, {"repeats": i64(*repeats)})


PADS = [([0, 1, 2, 1, 0, 0], "constant"), ([1, 0, 2, 0, 3, 1], "reflect"), ([2, 2, 0, 1, 1, 4], "edge"),
        ([1, -1, 0, -2, 2, 1], "constant"), ([0, 1, 0, 0, 2, 3], "wrap")]


@pytest.mark.parametrize("pads,mode", PADS)
def test_pad(pads, mode):
    consts = {"pads": i64(*pads)}
    if mode == "constant":
        consts["value"] = np.array(1.5, np.float32)
    run("Pad", {"x": X}, consts, attrs={"mode": mode})


def test_pad_axes_input_opset_18():
    run("Pad", {"x": X}, {"pads": i64(1, 2, 3, 0), "value": np.array(-1, np.float32), "axes": i64(-1, 0)},
        opset=18)


def test_pad_int_with_omitted_value():
    run("Pad", {"x": INTS}, {"pads": i64(1, 0, 0, 0, 2, 1)}, order=["x", "pads", ""], attrs={"mode": "constant"})


def test_pad_attributes_opset_10():
    run("Pad", {"x": X}, attrs={"pads": [0, 1, 0, 1, 0, 2], "value": 3.0}, opset=10)


# ---- shape values: Shape, Size, ConstantOfShape, Range -----------------------------------
@pytest.mark.parametrize("bounds", [{}, {"start": 1}, {"end": -1}, {"start": -2, "end": 10}, {"start": 2, "end": 1}])
def test_shape(bounds):
    run("Shape", {"x": X}, attrs=bounds)


def test_size():
    run("Size", {"x": X})


@pytest.mark.parametrize("value", [None, np.array([7], np.int32), np.array([2.5], np.float64)])
def test_constant_of_shape(value):
    attrs = {} if value is None else {"value": numpy_helper.from_array(value)}
    model = one_node("ConstantOfShape", {}, {"shape": i64(2, 3)}, attrs=attrs)
    check_vs_onnxruntime(model, {})


@pytest.mark.parametrize("start,limit,delta", [(0, 10, 3), (10, -3, -4), (5, 5, 1), (0.5, 3.0, 0.75)])
def test_range(start, limit, delta):
    dtype = np.float32 if isinstance(start, float) else np.int64
    consts = {k: np.array(v, dtype) for k, v in (("start", start), ("limit", limit), ("delta", delta))}
    model = one_node("Range", {}, consts)
    check_vs_onnxruntime(model, {})
    assert all(n.output.type.shape == () for n in minidlc.load(model).nodes if n.op == "Constant")


# ---- a shape computation: Shape -> Gather -> Concat -> Reshape ----------------------------
def test_shape_computation_chain_gives_static_types():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["batch"], axis=0),
             helper.make_node("Concat", ["batch", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(i64(0), "zero"), numpy_helper.from_array(i64(-1), "minus1")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    g = minidlc.load(model)
    types = {n.op: n.output.type for n in g.nodes}
    assert types["Shape"] == TensorType((3,), "i64")
    assert types["Gather"] == TensorType((1,), "i64")
    assert types["Concat"] == TensorType((2,), "i64")
    assert types["Reshape"] == TensorType((3, 20), "f32")
    check_vs_onnxruntime(model, {"x": X})
    folded = minidlc.compile(model, target="reference", opt_level=1).graph
    assert [n.op for n in folded.nodes] == ["Constant", "Reshape"]  # the shape computation folded away


# ---- errors name the node and say what is wrong -------------------------------------------
def test_reshape_shape_from_graph_input_must_be_static():
    model = one_node("Reshape", {"x": X, "shape": i64(4, 15)})
    with pytest.raises(ConversionError, match=r"Reshape node 'n' \(opset 21\): target shape \(%shape\) "
                                              r"must be known at compile time"):
        minidlc.load(model)


def test_slice_starts_from_graph_input_must_be_static():
    model = one_node("Slice", {"x": X, "starts": i64(0)}, {"ends": i64(2)})
    with pytest.raises(ConversionError, match=r"Slice node 'n'.*starts \(%starts\) must be known at compile time"):
        minidlc.load(model)


@pytest.mark.parametrize("op,feeds,consts,attrs,message", [
    ("Reshape", {"x": X}, {"shape": i64(7, -1)}, {}, r"cannot reshape \[3, 4, 5\] \(60 elements\) to \[7, -1\]"),
    ("Reshape", {"x": X}, {"shape": i64(-1, -1)}, {}, "at most one -1"),
    ("Squeeze", {"x": X}, {"axes": i64(1)}, {}, r"cannot squeeze axis 1 of shape \[3, 4, 5\]: its size is 4"),
    ("Concat", {"a": X, "b": X[:, :2]}, {}, {"axis": 0}, r"cannot concatenate shapes \[\[3, 4, 5\], \[3, 2, 5\]\]"),
    ("Split", {"x": X}, {"split": i64(1, 1)}, {"axis": 0}, r"split sizes \[1, 1\] do not add up"),
    ("Slice", {"x": X}, {"s": i64(0), "e": i64(2), "a": i64(0), "st": i64(0)}, {}, "steps must not be 0"),
    ("Transpose", {"x": X}, {}, {"perm": [0, 0, 1]}, "not a permutation"),
    ("Expand", {"x": X}, {"shape": i64(2, 5)}, {}, r"cannot expand \[3, 4, 5\] to \[2, 5\]"),
    ("ReduceSum", {"x": X}, {"axes": i64(1, -2)}, {}, "name an axis twice"),
    ("ReduceMax", {"x": X}, {"axes": i64(3)}, {}, "axis 3 is out of range for rank 3"),
    ("Tile", {"x": X}, {"repeats": i64(2, 2)}, {}, "one non-negative count per axis"),
    ("Range", {}, {"a": np.array(0, np.int64), "b": np.array(3, np.int64), "c": np.array(0, np.int64)}, {},
     "delta must not be 0"),
])
def test_bad_nodes_are_clear_errors(op, feeds, consts, attrs, message):
    with pytest.raises(IRError, match=f"{op} node 'n'") as info:
        minidlc.load(one_node(op, feeds, consts, attrs=attrs))
    assert info.match(message)


def test_gather_index_out_of_range_is_a_runtime_error_naming_the_node():
    model = one_node("Gather", {"x": X, "i": i64(0)})
    m = minidlc.compile(model, target="reference", opt_level=0)
    with pytest.raises(IRError, match=r"Gather node %y0 \(n\).*indices must lie in \[-3, 2\]"):
        m.run({"x": X, "i": i64(3)})


# ---- the IR declarations ----------------------------------------------------------------------
@pytest.mark.parametrize("op,kind", [
    *[(op, Kind.INJECTIVE) for op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice",
                                      "Concat", "Gather", "Expand", "Tile", "Pad", "Split")],
    *[(op, Kind.OPAQUE) for op in ("Shape", "Size", "ConstantOfShape", "Range")],
    *[(op, Kind.REDUCTION) for op in REDUCE_OPS + ["ArgMax"]],
])
def test_fusion_kinds(op, kind):
    assert get_op(op).kind == kind


def test_ir_reshape_reads_its_shape_operand_value():
    g = Graph()
    x = g.add_input("x", TensorType((2, 6)))
    shape = g.constant(i64(3, -1), "shape")
    y = g.add("Reshape", [x, shape]).output
    assert y.type == TensorType((3, 4))
    with pytest.raises(IRError, match="target shape must be known at compile time"):
        g.add("Reshape", [x, g.add_input("s", TensorType((2,), "i64"))])
