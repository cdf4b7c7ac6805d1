"""Post-training int8 quantization: calibrate, then write the graph in QDQ form.

For every Conv, MatMul and Gemm with constant weights (the layers that hold
nearly all of a model's FLOPs and bytes), the pass

* quantizes the weight to int8, symmetric, one scale per output channel
  (per tensor with per_tensor=true): w ≈ scale[c] * q, q in [-127, 127];
* puts QuantizeLinear -> DequantizeLinear on the activation it reads, with
  the range calibration found (calibrate.py): u8 with a zero point
  (activations=u8, the default: a ReLU output uses all 256 levels) or s8
  symmetric (activations=s8);
* quantizes a bias to i32 with scale s_x * s_w[c], as onnxruntime does.

That is the standard QDQ form: an ONNX file of it runs in onnxruntime, and
the `integer-ops` pass that follows turns each pattern into an integer
product with the requantization in its epilogue. Everything else (Softmax,
LayerNorm, Add, pooling) stays f32; the Q/DQ pairs sit only where a tensor
enters an int8 layer.

The pass needs calibration batches in its context (`PassContext.calibration`;
`minidlc.compile(..., quantize=...)` and `minidlc quantize` load them).
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Value
from .calibrate import Method, calibrated_range, observe
from .dce import remove_dead_nodes
from .manager import PassContext, Tolerance, register_pass

ACTIVATION_DTYPES = ("u8", "i8")


def weight_axis(graph: Graph, node: Node) -> int | None:
    """The output-channel axis of `node`'s weight if the pass quantizes the node, else None."""
    if len(node.inputs) < 2 or graph.const_value(node.inputs[1]) is None:
        return None
    if any(v.type.dtype != "f32" for v in node.inputs[:2]):
        return None
    if node.op == "Conv":
        return 0
    if node.op == "MatMul":
        return 1 if node.inputs[1].type.rank == 2 else None
    if node.op == "Gemm" and not node.attrs["transA"]:
        return 0 if node.attrs["transB"] else 1
    return None


def layer_name(node: Node) -> str:
    """How reports and the keep_float option name a layer: its output value."""
    return node.outputs[0].name


def activation_params(lo: float, hi: float, dtype: str) -> tuple[np.float32, np.ndarray]:
    """(scale, zero point) mapping [lo, hi] onto u8 (asymmetric) or s8 (symmetric)."""
    if dtype == "u8":
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = (hi - lo) / 255 or 1.0
        return np.float32(scale), np.array(np.clip(np.rint(-lo / scale), 0, 255), np.uint8)
    scale = max(abs(lo), abs(hi)) / 127 or 1.0
    return np.float32(scale), np.array(0, np.int8)


def weight_params(w: np.ndarray, axis: int, per_tensor: bool) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, f32 scales): symmetric, per output channel along `axis` or per tensor."""
    if per_tensor:
        amax = np.array(np.max(np.abs(w)), np.float64)
    else:
        amax = np.max(np.abs(w), axis=tuple(a for a in range(w.ndim) if a != axis))
    scale = np.where(amax > 0, amax / 127, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    if not per_tensor:
        shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


@register_pass
class Quantize:
    name = "quantize"
    tolerance = Tolerance(rtol=0.0, atol=0.1, int_steps=2,
                          why="int8 rounding of weights and activations; accuracy is judged on real data")

    def __init__(self, method: str = "minmax", per_tensor: bool = False, activations: str = "u8",
                 percentile: float = 99.99, keep_float: tuple = (), only: tuple = ()):
        self.method = Method(method)
        if activations not in ACTIVATION_DTYPES:
            raise ValueError(f"activations must be one of {', '.join(ACTIVATION_DTYPES)}, got {activations!r}")
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.per_tensor, self.activations, self.percentile = per_tensor, activations, percentile
        self.keep_float, self.only = set(keep_float), set(only)
        self.context = PassContext()
        self.quantized: list[str] = []  # the layers the last run quantized

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        if not self.context.calibration:
            raise ValueError("quantize needs calibration data: minidlc.compile(..., calibration=...) or "
                             "minidlc quantize --calibration (an .npz named after the inputs, a directory "
                             "of them, or random:N)")
        names = [layer_name(n) for n in graph.nodes if weight_axis(graph, n) is not None]
        unknown = (self.keep_float | self.only) - set(names)
        if unknown:
            raise ValueError(f"quantize: no quantizable layer named {sorted(unknown)}; the layers: {names}")
        layers = [n for n in graph.nodes if weight_axis(graph, n) is not None and self._wanted(n)]
        batches = [[batch[v.name] for v in graph.inputs] for batch in self.context.calibration]
        seen = observe(graph, batches, {n.inputs[0].name for n in layers}, self.method)
        levels = 256 if self.activations == "u8" else 128
        dequantized: dict[Value, Value] = {}
        for node in layers:
            x = node.inputs[0]
            if x not in dequantized:
                lo, hi = calibrated_range(seen[x.name], self.method, self.percentile, levels)
                scale, zp = activation_params(lo, hi, self.activations)
                dequantized[x] = _qdq(graph, x, scale, zp, node)
            node.inputs[0] = dequantized[x]
            self._quantize_weights(graph, node, float(graph.const_value(dequantized[x].producer.inputs[1])))
        self.quantized = [layer_name(n) for n in layers]
        remove_dead_nodes(graph)
        return graph, bool(layers)

    def _wanted(self, node: Node) -> bool:
        name = layer_name(node)
        return name not in self.keep_float and (not self.only or name in self.only)

    def _quantize_weights(self, graph: Graph, node: Node, x_scale: float) -> None:
        axis = weight_axis(graph, node)
        q, scale = weight_params(graph.const_value(node.inputs[1]), axis, self.per_tensor)
        node.inputs[1] = _dequantize(graph, node, q, scale, np.zeros(scale.shape, np.int8), axis, "weight")
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        b = graph.const_value(bias)
        n_out = node.inputs[1].type.shape[axis]
        if b is None or b.dtype != np.float32 or b.shape != (n_out,) or (node.op == "Gemm" and node.attrs["beta"] != 1):
            return
        b_scale = (x_scale * scale.astype(np.float64)).astype(np.float32)
        if np.any(b_scale == 0):
            return
        info = np.iinfo(np.int32)
        bq = np.rint(b.astype(np.float64) / b_scale)
        if np.any(np.abs(bq) > info.max):  # s_x * s_w too small for i32: the bias stays f32, exact
            return
        bq = bq.astype(np.int32)
        node.inputs[2] = _dequantize(graph, node, bq, b_scale if b_scale.size > 1 else b_scale.reshape(()), None, 0,
                                     "bias")


def _dequantize(graph: Graph, node: Node, q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int,
                role: str) -> Value:
    """DequantizeLinear(q, scale[, zp]) of constants, just before `node`."""
    name = f"{layer_name(node)}.{role}"
    inputs = [graph.constant(q, f"{name}_q", before=node), graph.constant(scale, f"{name}_scale", before=node)]
    if zp is not None:
        inputs.append(graph.constant(zp, f"{name}_zero_point", before=node))
    return graph.add("DequantizeLinear", inputs, {"axis": axis, "block_size": 0}, loc=node.loc,
                     names=[name], before=node).output


def _qdq(graph: Graph, x: Value, scale: np.float32, zp: np.ndarray, first_reader: Node) -> Value:
    """QuantizeLinear -> DequantizeLinear of activation x, just before its first quantized reader."""
    s = graph.constant(scale, f"{x.name}_scale", before=first_reader)
    z = graph.constant(zp, f"{x.name}_zero_point", before=first_reader)
    q = graph.add("QuantizeLinear", [x, s, z], {"axis": 1, "block_size": 0, "dtype": "u8" if zp.dtype == np.uint8 else "i8"},
                  loc=first_reader.loc, names=[f"{x.name}_q"], before=first_reader).output
    return graph.add("DequantizeLinear", [q, s, z], {"axis": 1, "block_size": 0}, loc=first_reader.loc,
                     names=[f"{x.name}_dq"], before=first_reader).output
