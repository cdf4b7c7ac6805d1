"""The graph IR back to ONNX (`--emit onnx -o FILE`): the optimized graph, to
open in Netron or run in onnxruntime.

Each fused group becomes an ONNX function (domain `minidlc.fused`) whose body
is the group's nodes, called once where the group stands. The IR keeps some
of ONNX's inputs as attributes (Slice bounds, Reduce/Squeeze axes, Split
sizes, Pad's pads, Tile's repeats, Trilu's k, CumSum's axis, Resize's scales,
sizes and roi, Cast's dtype by name); here they become the opset-17 inputs
again. Gelu (opset 20) is written out as the formula ONNX defines it by. Constants become
initializers at the top level and Constant nodes inside functions (a function
has no initializers).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...ir import Graph, IRError, Node
from .converters import ONNX_DTYPES

OPSET = 17
DOMAIN = "minidlc.fused"
_TO_ONNX = {name: code for code, name in ONNX_DTYPES.items()}
# IR attribute -> the ONNX input it was (in order after the data input), as int64 tensors
_ATTR_INPUTS = {"Slice": ("starts", "ends", "axes", "steps"), "ReduceSum": ("axes",), "Squeeze": ("axes",),
                "Unsqueeze": ("axes",), "Split": ("split",), "Tile": ("repeats",), "Trilu": ("k",),
                "CumSum": ("axis",)}


def export_onnx(graph: Graph, output_names: list[str] | None = None) -> onnx.ModelProto:
    """`graph` as ONNX; `output_names` renames its outputs (passes may have
    renamed a value the original model's output was called by)."""
    ex = _Exporter()
    nodes, inits = ex.nodes(graph, top=True)
    outputs = []
    for v, name in zip(graph.outputs, output_names or [v.name for v in graph.outputs]):
        if name != v.name:
            nodes.append(helper.make_node("Identity", [v.name], [name]))
        outputs.append(helper.make_tensor_value_info(name, _TO_ONNX[v.type.dtype], list(v.type.shape)))
    g = helper.make_graph(nodes, graph.name, [_info(v) for v in graph.inputs], outputs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)],
                              functions=ex.functions, producer_name="minidlc")
    model.ir_version = 8
    return model


def _info(v) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(v.name, _TO_ONNX[v.type.dtype], list(v.type.shape))


class _Exporter:
    """Converts nodes, collecting the ONNX functions of fused groups."""

    def __init__(self):
        self.functions: list[onnx.FunctionProto] = []
        self.const_names = 0

    def fresh(self, hint: str) -> str:
        self.const_names += 1
        return f"{hint}__{self.const_names}"

    def nodes(self, graph: Graph, top: bool) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
        out, inits = [], []
        for n in graph.nodes:
            if n.op == "Constant":
                array = np.asarray(n.attrs["value"])
                if top:
                    inits.append(numpy_helper.from_array(array, n.output.name))
                else:
                    out.append(helper.make_node("Constant", [], [n.output.name],
                                                value=numpy_helper.from_array(array, n.output.name)))
            elif n.body is not None:
                out.append(self.group(n))
            else:
                out += self.node(n)
        return out, inits

    def group(self, node: Node) -> onnx.NodeProto:
        body = node.body
        name = f"{node.attrs.get('name', 'fused')}_{len(self.functions)}"
        nodes, _ = self.nodes(body, top=False)
        self.functions.append(helper.make_function(DOMAIN, name, [v.name for v in body.inputs],
                                                   [v.name for v in body.outputs], nodes,
                                                   [helper.make_opsetid("", OPSET)]))
        return helper.make_node(name, [v.name if v is not None else "" for v in node.inputs],
                                [v.name for v in node.outputs], domain=DOMAIN, name=node.outputs[0].name,
                                doc_string=node.loc or "")

    def const(self, hint: str, array: np.ndarray) -> tuple[str, onnx.NodeProto]:
        name = self.fresh(hint)
        return name, helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))

    def node(self, n: Node) -> list[onnx.NodeProto]:
        if n.op == "Gelu":
            return self.gelu(n)
        attrs = dict(n.attrs)
        inputs = [v.name if v is not None else "" for v in n.inputs]
        made = []
        for key in _ATTR_INPUTS.get(n.op, ()):
            value = attrs.pop(key)
            if isinstance(value, (list, tuple)) and not value:  # an empty list: ONNX's default, an omitted input
                inputs.append("")
                continue
            name = self.fresh(f"{n.outputs[0].name}.{key}")
            made.append(helper.make_node("Constant", [], [name],
                                         value=numpy_helper.from_array(np.array(value, np.int64), name)))
            inputs.append(name)
        while inputs and inputs[-1] == "":
            inputs.pop()
        if n.op == "Pad":
            pads, value = attrs.pop("pads"), attrs.pop("value")
            names = [self.fresh(f"{n.outputs[0].name}.pads"), self.fresh(f"{n.outputs[0].name}.value")]
            made += [helper.make_node("Constant", [], [names[0]],
                                      value=numpy_helper.from_array(np.array(pads, np.int64), names[0])),
                     helper.make_node("Constant", [], [names[1]], value=numpy_helper.from_array(
                         np.array(value, n.inputs[0].type.np_dtype), names[1]))]
            inputs += names
        if n.op == "Cast":
            attrs["to"] = _TO_ONNX[attrs["to"]]
        if n.op in ("QuantizeLinear", "DequantizeLinear"):  # opset 13's: the zero point gives the dtype
            if attrs.pop("block_size"):
                raise IRError(f"{n.describe()}: blocked quantization needs opset 21; minidlc exports opset {OPSET}")
            if attrs.pop("dtype", "u8") != "u8" and len(n.inputs) < 3:
                raise IRError(f"{n.describe()}: a QuantizeLinear to {n.outputs[0].type.dtype} needs a zero point "
                              f"in opset {OPSET}")
        if n.op == "Resize":  # geometry back to inputs: X, roi, scales (or "" and sizes)
            if attrs.pop("antialias"):
                raise IRError(f"{n.describe()}: antialias needs opset 18; minidlc exports opset {OPSET}")
            roi, scales, sizes = attrs.pop("roi"), attrs.pop("scales"), attrs.pop("sizes")
            geometry = [("roi", np.array(roi, np.float32)) if roi else None,
                        None if sizes else ("scales", np.array(scales, np.float32)),
                        ("sizes", np.array(sizes, np.int64)) if sizes else None]
            for item in geometry:
                if item is None:
                    inputs.append("")
                else:
                    name, const = self.const(f"{n.outputs[0].name}.{item[0]}", item[1])
                    made.append(const)
                    inputs.append(name)
            while inputs and inputs[-1] == "":
                inputs.pop()
        attrs = {k: v for k, v in attrs.items() if not (isinstance(v, (list, tuple)) and not v)}
        # node names must be unique (a PyTorch source line is not); the location goes to doc_string
        return made + [helper.make_node(n.op, inputs, [v.name for v in n.outputs], name=n.outputs[0].name,
                                        doc_string=n.loc or "", **attrs)]

    def gelu(self, n: Node) -> list[onnx.NodeProto]:
        """Gelu exists from opset 20: written out, as ONNX's own function body for it."""
        x, y = n.inputs[0].name, n.outputs[0].name
        dt = n.inputs[0].type.np_dtype
        made, names = [], {}
        for key, value in (("half", 0.5), ("one", 1.0), ("inv_sqrt2", 1 / np.sqrt(2)), ("c", np.sqrt(2 / np.pi)),
                           ("k", 0.044715)):
            names[key], const = self.const(f"{y}.{key}", np.array(value, dt))
            made.append(const)
        t = lambda hint: self.fresh(f"{y}.{hint}")  # noqa: E731
        if n.attrs["approximate"] == "tanh":  # 0.5 x (1 + tanh(c (x + k x^3)))
            x2, x3, kx3, inner, scaled, g = t("x2"), t("x3"), t("kx3"), t("inner"), t("scaled"), t("g")
            made += [helper.make_node("Mul", [x, x], [x2]), helper.make_node("Mul", [x2, x], [x3]),
                     helper.make_node("Mul", [names["k"], x3], [kx3]), helper.make_node("Add", [x, kx3], [inner]),
                     helper.make_node("Mul", [names["c"], inner], [scaled]), helper.make_node("Tanh", [scaled], [g])]
        else:  # 0.5 x (1 + erf(x / sqrt 2))
            scaled, g = t("scaled"), t("g")
            made += [helper.make_node("Mul", [x, names["inv_sqrt2"]], [scaled]), helper.make_node("Erf", [scaled], [g])]
        one_g, half_x = t("one_plus"), t("half_x")
        return made + [helper.make_node("Add", [names["one"], g], [one_g]),
                       helper.make_node("Mul", [names["half"], x], [half_x]),
                       helper.make_node("Mul", [half_x, one_g], [y], name=y, doc_string=n.loc or "")]
