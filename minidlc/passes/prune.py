"""Structured pruning: remove whole output channels of Conv and Gemm/MatMul layers.

Unstructured sparsity (zeros scattered in a weight) saves nothing unless the
kernels are sparse; removing a whole output channel makes the layer, and the
next one, really smaller: a Conv with 32 filters becomes one with 24, and the
Conv that reads it loses the same 8 input channels.

    prune-channels{ratio=0.25 criterion=l1}

For each prunable layer (a Conv with one group, or a Gemm/MatMul with a
constant weight) the pass ranks its output channels (`criterion`: the l1 or
l2 norm of each channel's weights, or `activation`: the mean |output| of the
channel on the calibration data), keeps the best (1 - ratio) of them, and
follows the removed channels through what the layer feeds (its *region*):

* elementwise ops and pools pass channels through; per-channel constants
  (a BatchNormalization's parameters, a bias add) are sliced;
* Flatten turns each channel into a block of features;
* the next Conv, Gemm or MatMul loses the matching input channels (rows of
  its weight), which ends the region.

A layer is left alone, and the report says why, when its channels reach
anything else: a graph output (a classifier's logits), a residual Add that
also reads another layer's channels (both sides would have to lose the same
channels), a Reshape or a Transpose. Through a Concat along the channels the
removed channels are shifted by the inputs before them. Ratios per layer: layer_ratios=name:0.5,...

Accuracy lost by pruning usually needs fine-tuning (training) to come back;
minidlc does not train, so judge the result on data (`minidlc compress --report`).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from ..ir import Graph, Kind, Node, Value, interpret
from .manager import PassContext, Tolerance, register_pass
from .quantize import layer_name

CRITERIA = ("l1", "l2", "activation")
POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool")
PER_TENSOR_Q = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class Cut:
    """A constant that loses the positions `removed` along `axis`."""

    value: Value
    axis: int
    removed: np.ndarray


@dataclass
class Pruned:
    """One row of the pass's report."""

    layer: str
    op: str
    channels: int
    kept: int
    note: str  # what was pruned with it, or why it was left alone


def output_axis(graph: Graph, node: Node) -> int | None:
    """The axis of `node`'s weight that holds its output channels, if prunable."""
    if len(node.inputs) < 2 or graph.const_value(node.inputs[1]) is None or node.inputs[1].type.dtype != "f32":
        return None
    if node.op == "Conv":
        return 0 if node.attrs["group"] == 1 else None
    if node.op == "MatMul":
        return 1 if node.inputs[1].type.rank == 2 else None
    if node.op == "Gemm" and not node.attrs["transA"]:
        return 0 if node.attrs["transB"] else 1
    return None


def region(graph: Graph, layer: Node, drop: np.ndarray) -> tuple[list[Cut], str | None]:
    """The constants to cut when `layer` loses the output channels `drop`, or why
    it cannot. One sweep in graph order carries, for each value the channels
    reach, the positions that go along one axis."""
    reached: dict[int, tuple[int, np.ndarray]] = {id(layer.outputs[0]): (channel_axis(layer), drop)}
    cuts: list[Cut] = []
    for node in graph.nodes[graph.nodes.index(layer) + 1:]:
        ins = {i: reached[id(v)] for i, v in enumerate(node.inputs) if v is not None and id(v) in reached}
        if ins:
            went, why = _follow(graph, node, ins, cuts)
            if why:
                return cuts, why
            reached.update((id(v), (axis, removed)) for v, axis, removed in went)
    out = next((v for v in graph.outputs if id(v) in reached), None)
    return cuts, f"its channels reach the graph output %{out.name}" if out is not None else None


def readers(graph: Graph) -> dict[int, list[tuple[Node, int]]]:
    """id(value) -> the (node, input index) pairs that read it."""
    uses: dict[int, list[tuple[Node, int]]] = {}
    for n in graph.nodes:
        for i, v in enumerate(n.inputs):
            if v is not None:
                uses.setdefault(id(v), []).append((n, i))
    return uses


def channel_axis(layer: Node) -> int:
    """The axis of the layer's output that holds its channels (features)."""
    return 1 if layer.op == "Conv" else layer.outputs[0].type.rank - 1


def _follow(graph: Graph, node: Node, ins: dict[int, tuple[int, np.ndarray]], cuts: list[Cut]):
    """Where the removed positions on the inputs `ins` of `node` go:
    ([(output, axis, removed)], None), or ([], why they cannot)."""
    op, out = node.op, node.outputs[0]
    if op == "Concat":  # along the channels: shifted by the inputs before each
        axes = {axis for axis, _ in ins.values()}
        if axes != {node.attrs["axis"] % out.type.rank}:
            return [], f"Concat %{out.name} joins along another axis"
        offsets = np.cumsum([0] + [v.type.shape[node.attrs["axis"]] for v in node.inputs])
        return [(out, axes.pop(), np.concatenate([r + offsets[i] for i, (_, r) in sorted(ins.items())]))], None
    (i, (axis, removed)), *more = ins.items()
    if any(a != axis or not np.array_equal(r, removed) for a, r in (v for _, v in more)):
        return [], f"{op} %{out.name} reads channels pruned in two different ways"
    if set(ins) == {0} and op in ("Conv", "MatMul", "Gemm") and output_axis(graph, node) is not None:
        # the next layer loses the matching input channels of its weight, which ends the region
        if axis != (1 if op == "Conv" else node.inputs[0].type.rank - 1):
            return [], f"{op} %{out.name} reads the channels along another axis"
        cuts.append(Cut(node.inputs[1], 1 if op == "Conv" or (op == "Gemm" and node.attrs["transB"]) else 0, removed))
        return [], None
    if op in POOLS and axis == 1:
        return [(out, axis, removed)], None
    if op == "Flatten" and node.attrs["axis"] == 1 and axis == 1:  # a channel becomes a block of features
        block = prod(node.inputs[0].type.shape[2:])
        return [(out, 1, (removed[:, None] * block + np.arange(block)).reshape(-1))], None
    if op == "BatchNormalization" and set(ins) == {0} and axis == 1:
        cuts.extend(Cut(p, 0, removed) for p in node.inputs[1:5])
        return [(out, axis, removed)], None
    if op in PER_TENSOR_Q and set(ins) == {0}:
        if node.inputs[1].type.numel != 1:
            return [], f"{op} %{out.name} quantizes per channel"
        return [(out, axis, removed)], None
    if node.opdef.kind in (Kind.ELEMENTWISE, Kind.BROADCAST) and len(node.outputs) == 1:
        for j, other in enumerate(node.inputs):
            if j in ins or other is None:
                continue
            c = graph.const_value(other)
            if c is None:
                return [], f"{op} %{out.name} also reads %{other.name}: a residual (prune both sides alike, or neither)"
            lead = out.type.rank - c.ndim
            if axis >= lead and c.shape[axis - lead] != 1:  # one value per channel: cut it too
                cuts.append(Cut(other, axis - lead, removed))
        if out.type.shape[axis] != node.inputs[i].type.shape[axis]:
            return [], f"{op} %{out.name} broadcasts along the channels"
        return [(out, axis, removed)], None
    return [], f"{op} %{out.name} reads the channels"


def importance(graph: Graph, layer: Node, criterion: str, batches) -> np.ndarray:
    """One score per output channel: weight norm, or mean |activation| on data."""
    axis = output_axis(graph, layer)
    if criterion == "activation":
        out, total, c_axis = activated(graph, layer), None, channel_axis(layer)
        for batch in batches:
            def record(v, a, out=out):
                nonlocal total
                if v is out:
                    s = np.abs(a).astype(np.float64).sum(axis=tuple(d for d in range(a.ndim) if d != c_axis))
                    total = s if total is None else total + s
            interpret(graph, [batch[v.name] for v in graph.inputs], on_value=record)
        return total
    w = np.moveaxis(graph.const_value(layer.inputs[1]).astype(np.float64), axis, 0).reshape(
        layer.inputs[1].type.shape[axis], -1)
    return np.abs(w).sum(1) if criterion == "l1" else np.sqrt((w * w).sum(1))


def activated(graph: Graph, layer: Node) -> Value:
    """The layer's output after the unary ops (bias add, BatchNorm, activation)
    that it alone feeds: what the next layer sees of its channels."""
    v, uses = layer.outputs[0], readers(graph)
    while True:
        next_ = [n for n, _ in uses.get(id(v), [])]
        if len(next_) != 1 or next_[0].opdef.kind not in (Kind.ELEMENTWISE, Kind.BROADCAST) \
                or any(u is not v and graph.const_value(u) is None for u in next_[0].inputs if u is not None) \
                or next_[0].outputs[0].type.shape != v.type.shape:
            return v
        v = next_[0].outputs[0]


def rebuild(graph: Graph, arrays: dict[int, np.ndarray]) -> Graph:
    """The graph again with the constants in `arrays` (by id of their value)
    replaced, every type inferred anew; values keep their names."""
    g = Graph(graph.name)
    vmap: dict[int, Value] = {id(v): g.add_input(v.name, v.type, v.loc) for v in graph.inputs}
    for n in graph.nodes:
        if n.op == "Constant":
            array = arrays.get(id(n.outputs[0]), n.attrs["value"])
            vmap[id(n.outputs[0])] = g.constant(array, n.outputs[0].name, loc=n.loc)
            continue
        new = g.add(n.op, [None if v is None else vmap[id(v)] for v in n.inputs], dict(n.attrs), loc=n.loc,
                    names=[v.name for v in n.outputs], num_outputs=len(n.outputs))
        vmap.update((id(a), b) for a, b in zip(n.outputs, new.outputs))
    g.outputs = [vmap[id(v)] for v in graph.outputs]
    return g


@register_pass
class PruneChannels:
    name = "prune-channels"
    tolerance = Tolerance(rtol=0.0, atol=1.0, why="removing channels changes what the model computes; "
                                                  "accuracy is judged on data (minidlc compress --report)")

    def __init__(self, ratio: float = 0.25, criterion: str = "l1", layer_ratios: tuple = ()):
        if not 0 <= ratio < 1:
            raise ValueError(f"ratio must be in [0, 1), got {ratio}")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
        self.ratio, self.criterion = ratio, criterion
        self.layer_ratios = {}
        for item in layer_ratios:
            name, sep, value = str(item).rpartition(":")
            if not sep:
                raise ValueError(f"layer_ratios takes name:ratio items, got {item!r}")
            self.layer_ratios[name] = float(value)
        self.context = PassContext()
        self.report: list[Pruned] = []

    def describe(self) -> str:
        """What the last run did, a line per layer."""
        width = max([len(r.layer) for r in self.report] + [5])
        return "\n".join([f"{'layer':<{width}}  {'op':<6} {'channels':>12}  cut with it / why not"] +
                         [f"{r.layer:<{width}}  {r.op:<6} {r.channels:>5} -> {r.kept:<4}  {r.note}" for r in self.report])

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        if self.criterion == "activation" and not self.context.calibration:
            raise ValueError("prune-channels criterion=activation needs calibration data")
        names = [layer_name(n) for n in graph.nodes if output_axis(graph, n) is not None]
        unknown = set(self.layer_ratios) - set(names)
        if unknown:
            raise ValueError(f"prune-channels: no prunable layer named {sorted(unknown)}; prunable: {names}")
        self.report, changed = [], False
        for name in names:
            layer = next(n for n in graph.nodes if n.outputs and n.outputs[0].name == name)
            graph, row = self._prune(graph, layer)
            self.report.append(row)
            changed |= row.kept < row.channels
        return graph, changed

    def _prune(self, graph: Graph, layer: Node) -> tuple[Graph, Pruned]:
        axis = output_axis(graph, layer)
        channels = layer.inputs[1].type.shape[axis]
        ratio = self.layer_ratios.get(layer_name(layer), self.ratio)
        drop = min(int(ratio * channels), channels - 1)
        row = Pruned(layer_name(layer), layer.op, channels, channels, "")
        if drop == 0:
            row.note = "ratio removes no channel"
            return graph, row
        scores = importance(graph, layer, self.criterion, self.context.calibration)
        order = np.argsort(-scores, kind="stable")
        keep, removed = np.sort(order[:channels - drop]), np.sort(order[channels - drop:])
        cuts, why = region(graph, layer, removed)
        own = [layer.inputs[1]] + ([layer.inputs[2]] if len(layer.inputs) > 2 and layer.inputs[2] is not None else [])
        counts = graph.use_counts()
        shared = [v.name for v in own + [c.value for c in cuts] if counts.get(v, 0) > 1]
        if why or shared:
            row.note = why or f"the constant %{shared[0]} is shared with other layers"
            return graph, row
        arrays = {id(layer.inputs[1]): np.take(graph.const_value(layer.inputs[1]), keep, axis=axis)}
        bias = layer.inputs[2] if len(layer.inputs) > 2 else None
        if bias is not None:
            b = graph.const_value(bias)
            if b is None or b.shape != (channels,):
                row.note = "its bias is not one constant per channel"
                return graph, row
            arrays[id(bias)] = b[keep]
        for c in cuts:
            arrays[id(c.value)] = np.delete(graph.const_value(c.value), c.removed, axis=c.axis)
        row.kept = len(keep)
        row.note = ", ".join(sorted({f"%{c.value.name}" for c in cuts})) or "nothing else"
        return rebuild(graph, arrays), row
