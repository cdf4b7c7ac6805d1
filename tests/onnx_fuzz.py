"""Random valid ONNX models, for differential testing against onnxruntime.

`onnx_models()` is a Hypothesis strategy. It draws a `ModelSpec`: graph
inputs and a list of `NodeSpec`s, each an ONNX op applied to earlier values
with attributes and constant operands (weights, shapes, axes). `build(spec)`
turns it into an `onnx.ModelProto` and `feeds(spec)` into input arrays; both
are deterministic, so a shrunk counterexample prints as a short spec that a
regression test can paste (see tests/test_fuzz_regressions.py).

The generator knows each value's shape from the ONNX package's own shape
inference, not from minidlc, so a shape bug in minidlc cannot hide itself.
Values stay finite and moderate: weights are scaled by 1/sqrt(fan-in),
divisors are kept away from zero, exponentials take bounded arguments, and
integer graphs use small values and no products, so that no result depends
on overflow, NaN or rounding behaviour that ONNX leaves open.
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# A fresh seed each run (conftest.py draws it once, for every xdist worker, and the
# summary prints it; drawn here when the module is used outside pytest);
# MINIDLC_FUZZ_SEED replays one.
SEED = int(os.environ.get("MINIDLC_FUZZ_SEED") or random.SystemRandom().randrange(2 ** 32))
FLOAT = ("f32", "f64")
INT = ("i32", "i64")
NP = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}
ONNX_TYPE = {"f32": TensorProto.FLOAT, "f64": TensorProto.DOUBLE, "i32": TensorProto.INT32,
             "i64": TensorProto.INT64, "bool": TensorProto.BOOL}
DTYPE_OF = {v: k for k, v in ONNX_TYPE.items()}


@dataclass(frozen=True)
class Const:
    """A constant operand of `shape` and `dtype`: `kind` 'weight' (uniform in
    [-scale, scale)), 'divisor' (1 <= |d| < 2) or 'ints' / 'floats' (`values`)."""

    kind: str
    shape: tuple[int, ...]
    dtype: str
    values: tuple = ()
    scale: float = 1.0


@dataclass(frozen=True)
class NodeSpec:
    """An ONNX node: `args` are value indices (None for an omitted optional
    input) or Consts; `attrs` its attributes."""

    op: str
    args: tuple
    attrs: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ModelSpec:
    inputs: tuple[tuple[tuple[int, ...], str], ...]  # (shape, dtype) of each graph input
    nodes: tuple[NodeSpec, ...]
    outputs: tuple[int, ...]  # value indices: inputs first, then each node's output
    seed: int = 0


# ---- building ------------------------------------------------------------------------------------
def _const_array(c: Const, rng: np.random.Generator) -> np.ndarray:
    if c.kind == "weight":
        return (rng.uniform(-1, 1, c.shape) * c.scale).astype(NP[c.dtype])
    if c.kind == "divisor":  # 1 <= |d| < 2
        return (rng.uniform(1, 2, c.shape) * rng.choice([-1, 1], c.shape)).astype(NP[c.dtype])
    return np.array(c.values, NP[c.dtype]).reshape(c.shape)


def _nodes(spec: ModelSpec) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    rng = np.random.default_rng(spec.seed)
    nodes, inits = [], []
    for k, n in enumerate(spec.nodes):
        names = []
        for j, a in enumerate(n.args):
            if a is None:
                names.append("")
            elif isinstance(a, Const):
                name = f"c{k}_{j}"
                inits.append(numpy_helper.from_array(_const_array(a, rng), name))
                names.append(name)
            else:
                names.append(value_name(spec, a))
        nodes.append(helper.make_node(n.op, names, [f"v{k}"], name=f"n{k}_{n.op.lower()}", **n.attrs))
    return nodes, inits


def value_name(spec: ModelSpec, i: int) -> str:
    return f"x{i}" if i < len(spec.inputs) else f"v{i - len(spec.inputs)}"


def build(spec: ModelSpec, output_types: list[tuple[tuple[int, ...], str]] | None = None) -> onnx.ModelProto:
    """The ONNX model of a spec; outputs typed by shape inference."""
    nodes, inits = _nodes(spec)
    inputs = [helper.make_tensor_value_info(f"x{i}", ONNX_TYPE[dt], list(s)) for i, (s, dt) in enumerate(spec.inputs)]
    outputs = [helper.make_tensor_value_info(value_name(spec, o), TensorProto.UNDEFINED, None) for o in spec.outputs]
    graph = helper.make_graph(nodes, "fuzz", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    typed = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in model.graph.output:
        out.CopyFrom(typed.get(out.name, out))
    return model


def feeds(spec: ModelSpec) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(spec.seed + 1)
    out = {}
    for i, (shape, dt) in enumerate(spec.inputs):
        if dt in INT:
            out[f"x{i}"] = rng.integers(-5, 6, shape).astype(NP[dt])
        else:
            out[f"x{i}"] = rng.standard_normal(shape).astype(NP[dt])
    return out


# ---- drawing -------------------------------------------------------------------------------------
class _Builder:
    """The spec being drawn, with each value's (shape, dtype) from ONNX shape inference."""

    def __init__(self, inputs):
        self.inputs = tuple(inputs)
        self.nodes: list[NodeSpec] = []
        self.types: list[tuple[tuple[int, ...], str]] = list(inputs)

    def add(self, op: str, args, **attrs) -> int | None:
        """Append a node; None (and nothing appended) if ONNX shape inference rejects it."""
        self.nodes.append(NodeSpec(op, tuple(args), attrs))
        spec = ModelSpec(self.inputs, tuple(self.nodes), (len(self.types),))
        try:
            vi = build(spec).graph.output[0]
        except Exception:
            self.nodes.pop()
            return None
        tt = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        empty_from_nonempty = 0 in shape and not any(0 in self.types[a][0] for a in args if isinstance(a, int))
        if not tt.HasField("shape") or -1 in shape or (empty_from_nonempty and op != "Slice"):
            self.nodes.pop()  # unknown dims; or a window larger than its input, which ONNX leaves open
            return None
        self.types.append((shape, DTYPE_OF[tt.elem_type]))
        return len(self.types) - 1


def _suffix_shape(draw, shape):
    """A shape that broadcasts to `shape`: a suffix of it, some axes set to 1."""
    tail = shape[draw(st.integers(0, len(shape))):]
    return tuple(1 if draw(st.booleans()) else d for d in tail)


def _scalar(dtype, value) -> Const:
    return Const("floats" if dtype in FLOAT else "ints", (), dtype, (value,))


# What a step does to a random earlier value; repeats weigh the draw.
STEPS = ("unary", "unary", "binary", "binary", "where", "matmul", "gemm", "conv", "conv", "pool", "pool", "reduce",
         "softmax", "reshape", "transpose", "flatten", "unsqueeze", "concat", "slice", "cast")


def _step(draw, b: _Builder) -> None:
    v = draw(st.sampled_from([i for i, (_, d) in enumerate(b.types) if d != "bool"]))  # comparisons feed Where only
    shape, dt = b.types[v]
    rank = len(shape)
    step = draw(st.sampled_from(STEPS))
    is_float = dt in FLOAT
    if step == "unary":
        if is_float:
            op = draw(st.sampled_from(["Relu", "Neg", "Abs", "Tanh", "Sigmoid", "Softsign", "Erf", "Exp", "Sqrt",
                                       "LeakyRelu", "HardSigmoid", "Clip"]))
            if op == "Exp":  # a bounded argument
                v = b.add("Tanh", [v])
            elif op == "Sqrt":
                v = b.add("Abs", [v])
            if op == "Clip":
                lo = draw(st.sampled_from([-2.0, -0.5, 0.0]))
                b.add("Clip", [v, _scalar(dt, lo), _scalar(dt, lo + draw(st.sampled_from([0.0, 0.5, 3.0])))])
            elif op == "LeakyRelu":
                b.add(op, [v], alpha=draw(st.sampled_from([0.01, 0.3])))
            else:
                b.add(op, [v])
        else:
            b.add(draw(st.sampled_from(["Neg", "Abs", "Relu"])), [v])
    elif step in ("binary", "where"):
        same = [i for i, (s, d) in enumerate(b.types) if d == dt and _broadcasts(s, shape)]
        if draw(st.booleans()) and len(same) > 1:
            other = draw(st.sampled_from(same))
        else:
            cshape = _suffix_shape(draw, shape)
            other = Const("weight", cshape, dt) if is_float else \
                Const("ints", cshape, dt, tuple(draw(st.lists(st.integers(-3, 3), min_size=math.prod(cshape),
                                                               max_size=math.prod(cshape)))))
        pair = [v, other] if draw(st.booleans()) else [other, v]
        if step == "where":
            cond = b.add(draw(st.sampled_from(["Greater", "Less", "Equal"])), pair)
            if cond is not None:
                b.add("Where", [cond, *pair])
            return
        ops = ["Add", "Sub", "Max", "Min"] + (["Mul", "Div"] if is_float else [])
        op = draw(st.sampled_from(ops))
        if op == "Div":  # a divisor away from zero
            if isinstance(pair[1], Const):
                pair[1] = Const("divisor", pair[1].shape, dt)
            else:
                d = b.add("Abs", [pair[1]])
                pair[1] = b.add("Add", [d, _scalar(dt, 1.0)])
        b.add(op, pair)
    elif not is_float and step not in ("reduce", "reshape", "transpose", "flatten", "unsqueeze", "concat", "slice",
                                       "cast"):
        return
    elif step in ("matmul", "gemm", "conv", "pool", "reshape") and 0 in shape:
        return  # empty tensors (from a Slice) take the other ops (a 0 in a Reshape target copies a dimension)
    elif step == "matmul" and rank >= 1:
        n = draw(st.integers(1, 6))
        wshape = (shape[-1], n) if draw(st.booleans()) or rank < 2 else (*shape[:-2][-1:], shape[-1], n)
        b.add("MatMul", [v, Const("weight", wshape, dt, scale=1 / math.sqrt(max(shape[-1], 1)))])
    elif step == "gemm" and rank == 2:
        n = draw(st.integers(1, 6))
        trans_a, trans_b = draw(st.booleans()), draw(st.booleans())
        m, k = shape[::-1] if trans_a else shape
        bias = draw(st.sampled_from([None, (n,), (1, n), (m, n), ()]))
        args = [v, Const("weight", (n, k) if trans_b else (k, n), dt, scale=1 / math.sqrt(max(k, 1)))]
        if bias is not None:
            args.append(Const("weight", bias, dt))
        b.add("Gemm", args, transA=int(trans_a), transB=int(trans_b),
              alpha=draw(st.sampled_from([1.0, 0.5])), beta=draw(st.sampled_from([1.0, 2.0])))
    elif step == "conv" and rank in (3, 4):
        cin = shape[1]
        group = draw(st.sampled_from([g for g in (1, 2, cin) if cin % g == 0]))
        cout = group * draw(st.integers(1, 3))
        win = _window(draw, shape[2:], dilations=True)
        fan_in = cin // group * math.prod(win["kernel_shape"])
        args = [v, Const("weight", (cout, cin // group, *win["kernel_shape"]), dt, scale=1 / math.sqrt(fan_in))]
        if draw(st.booleans()):
            args.append(Const("weight", (cout,), dt))
        b.add("Conv", args, group=group, **win)
    elif step == "pool" and rank in (3, 4):
        op = draw(st.sampled_from(["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"]))
        if op.startswith("Global"):
            b.add(op, [v])
            return
        win = _window(draw, shape[2:], dilations=op == "MaxPool")  # AveragePool dilates from opset 19
        if op == "AveragePool":
            win["count_include_pad"] = int(draw(st.booleans()))
        ceil = draw(st.booleans()) and not _ceil_window_starts_in_padding(shape[2:], win)
        b.add(op, [v], ceil_mode=int(ceil), **win)
    elif step == "reduce" and rank >= 1:
        mean = ["ReduceMean"] if is_float and 0 not in shape else []  # the mean of nothing is left undefined
        op = draw(st.sampled_from(["ReduceSum", "ReduceMax", "ReduceMin"] + mean))
        kept = draw(st.lists(st.sampled_from(range(rank)), min_size=1, max_size=rank, unique=True))
        axes = [a - rank if draw(st.booleans()) else a for a in sorted(kept)]  # negative axes count from the back
        keep = int(draw(st.booleans()))
        if op == "ReduceSum":  # axes is an input from opset 13
            b.add(op, [v, Const("ints", (len(axes),), "i64", tuple(axes))], keepdims=keep)
        else:
            b.add(op, [v], axes=axes, keepdims=keep)
    elif step == "softmax" and is_float and rank >= 1:
        b.add(draw(st.sampled_from(["Softmax", "LogSoftmax"])), [v], axis=draw(st.integers(-rank, rank - 1)))
    elif step == "reshape":
        target = draw(st.sampled_from([(-1,), (shape[0] if shape else 1, -1), tuple(reversed(shape)) or (1,),
                                       (1, *shape), (0, *([-1] if rank > 1 else []))]))
        b.add("Reshape", [v, Const("ints", (len(target),), "i64", target)])
    elif step == "transpose" and rank >= 2:
        b.add("Transpose", [v], perm=list(draw(st.permutations(range(rank)))))
    elif step == "flatten":
        b.add("Flatten", [v], axis=draw(st.integers(-rank, rank)))
    elif step == "unsqueeze":
        u = b.add("Unsqueeze", [v, Const("ints", (1,), "i64", (draw(st.integers(-rank - 1, rank)),))])
        if u is not None and draw(st.booleans()):
            ones = [i for i, d in enumerate(b.types[u][0]) if d == 1]
            b.add("Squeeze", [u, Const("ints", (1,), "i64", (draw(st.sampled_from(ones)),))])
    elif step == "concat" and rank >= 1:
        axis = draw(st.integers(-rank, rank - 1))
        fits = [i for i, (s, d) in enumerate(b.types)
                if d == dt and len(s) == rank and all(x == y for a, (x, y) in enumerate(zip(s, shape)) if a != axis % rank)]
        other = draw(st.sampled_from(fits))
        b.add("Concat", [v, other] if draw(st.booleans()) else [other, v], axis=axis)
    elif step == "slice" and rank >= 1:
        axis = draw(st.integers(0, rank - 1))
        d = shape[axis]
        step_ = draw(st.sampled_from([1, 1, 2, -1, -2]))
        start, end = draw(st.integers(-d - 1, d + 1)), draw(st.integers(-d - 1, d + 1))
        b.add("Slice", [v, *(Const("ints", (1,), "i64", (x,)) for x in (start, end, axis, step_))])
    elif step == "cast":
        to = draw(st.sampled_from(FLOAT if is_float else FLOAT + INT))  # float -> int depends on rounding: not drawn
        b.add("Cast", [v], to=ONNX_TYPE[to])


def _window(draw, spatial, dilations: bool) -> dict:
    """Kernel, strides, (asymmetric) pads and dilations whose dilated kernel fits the input."""
    kernel = [draw(st.integers(1, min(3, s))) for s in spatial]
    dil = [draw(st.integers(1, 2)) if dilations and (k - 1) * 2 + 1 <= s else 1 for k, s in zip(kernel, spatial)]
    out = dict(kernel_shape=kernel, strides=[draw(st.integers(1, 2)) for _ in spatial],
               pads=[draw(st.integers(0, k - 1)) for k in kernel + kernel])
    return {**out, "dilations": dil} if dilations else out


def _ceil_window_starts_in_padding(spatial, win) -> bool:
    """Whether ceil_mode would add a last window that starts in the end padding:
    onnxruntime drops it, ONNX's shape inference keeps it, so the shape is open."""
    n = len(spatial)
    for i, s in enumerate(spatial):
        k, stride = win["kernel_shape"][i], win["strides"][i]
        d = win.get("dilations", [1] * n)[i]
        begin, end = win["pads"][i], win["pads"][n + i]
        out = -(-(s + begin + end - (k - 1) * d - 1) // stride) + 1
        if (out - 1) * stride >= s + begin:
            return True
    return False


def _broadcasts(small, big) -> bool:
    try:
        return np.broadcast_shapes(small, big) == tuple(big)
    except ValueError:
        return False


@st.composite
def onnx_models(draw, max_nodes: int = 8) -> ModelSpec:
    dtype = draw(st.sampled_from(["f32", "f32", "f32", "f64", "i32", "i64"]))
    if draw(st.booleans()):  # an image batch, for convolutions and pools
        shape = (draw(st.integers(1, 2)), draw(st.integers(1, 4)), *draw(st.lists(st.integers(2, 7), min_size=1, max_size=2)))
    else:
        shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    inputs = [(shape, dtype)]
    if draw(st.booleans()):
        inputs.append((_suffix_shape(draw, shape) or shape, dtype))
    b = _Builder(inputs)
    for _ in range(draw(st.integers(1, max_nodes))):
        _step(draw, b)
    produced = list(range(len(inputs), len(b.types))) or [0]
    outputs = draw(st.lists(st.sampled_from(produced), min_size=1, max_size=2, unique=True))
    if not b.nodes:
        b.add("Identity", [0])
        outputs = [len(b.types) - 1]
    return ModelSpec(b.inputs, tuple(b.nodes), tuple(outputs), seed=draw(st.integers(0, 2 ** 16)))


# ---- comparing -----------------------------------------------------------------------------------
F32_TOLERANCE = dict(rtol=1e-3, atol=1e-4)  # f32 math functions differ by ulps between libraries
F64_TOLERANCE = dict(rtol=1e-9, atol=1e-10)


def tolerance(model: onnx.ModelProto) -> dict:
    """Exact for integer results; else that of the least precise float
    anywhere in the model (an f32 tanh cast to f64 is still an f32 tanh)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.value_info) + list(g.output)}
    types |= {t.data_type for t in g.initializer}
    if TensorProto.FLOAT in types:
        return F32_TOLERANCE
    return F64_TOLERANCE if TensorProto.DOUBLE in types else dict(rtol=0, atol=0)


class PeerHasNoKernel(Exception):
    """onnxruntime implements no kernel for an op at this dtype (Softsign on f64, say)."""


def onnxruntime_outputs(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors surface as exceptions; keep its log quiet
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the unoptimized meaning
    try:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        if "NOT_IMPLEMENTED" in str(e):
            raise PeerHasNoKernel(str(e)) from None
        raise
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))


def assert_matches(got: dict[str, np.ndarray], want: dict[str, np.ndarray], tol: dict, where: str) -> None:
    for name, w in want.items():
        g = got[name]
        assert g.shape == w.shape and g.dtype == w.dtype, f"{where}: {name} is {g.dtype}{list(g.shape)}, " \
                                                          f"onnxruntime gives {w.dtype}{list(w.shape)}"
        np.testing.assert_allclose(g, w, **tol, err_msg=f"{where}: output {name}")


def check_against_onnxruntime(spec: ModelSpec, target: str, opt_levels=(0, 2)) -> None:
    """Compile the spec's model at each -O level on `target`, run it, and
    compare with onnxruntime. Raises PeerHasNoKernel when onnxruntime cannot
    run the model at all."""
    import minidlc

    model, inputs = build(spec), feeds(spec)
    want = onnxruntime_outputs(model, inputs)
    tol = tolerance(model)
    for level in opt_levels:
        got = minidlc.compile(model, target=target, opt_level=level).run(inputs)
        assert_matches(got, want, tol, f"{target} -O{level}")
