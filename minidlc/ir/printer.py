"""Print a Graph as text: one SSA line per node, with types and locations.

    graph main(%x: f32[1,4]) {
      %w = Constant() {value=<f32[4,4] @w>} : f32[4,4]
      %y = MatMul(%x, %w) : f32[1,4]  # fc1
      return %y
    }

Small constant tensors print their values, large ones a reference `@key`
into a weights mapping, so `parser.parse_graph(text, weights)` can read the
text back. The printer never raises: a node it cannot format, or one that
reads a value not yet defined, is printed with an `ERROR` comment, because a
broken graph is exactly when people need the dump.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np

from .types import TensorType

SMALL_TENSOR = 16  # constants with at most this many elements print their values

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")


def fmt_name(name: str) -> str:
    return "%" + (name if _PLAIN_NAME.match(name) else json.dumps(name))


def fmt_scalar(x) -> str:
    """A number as the parser reads it back exactly (shortest round-trip digits)."""
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = str(x) if isinstance(x, np.floating) else repr(float(x))
    return text if any(c in text for c in ".en") else text + ".0"


def _nested(a: np.ndarray) -> str:
    if a.ndim == 0:
        return fmt_scalar(a[()])
    return "[" + ", ".join(_nested(x) for x in a) + "]"


def fmt_tensor(a: np.ndarray, key: str) -> str:
    t = TensorType.of(a)
    if a.size <= SMALL_TENSOR:
        return f"<{t} {_nested(a)}>"
    return f"<{t} @{key}>"


def fmt_attr(value, key: str) -> str:
    if isinstance(value, np.ndarray):
        return fmt_tensor(value, key)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_attr(v, key) for v in value) + "]"
    return fmt_scalar(value)


def weight_key(node, attr: str) -> str:
    """The key under which a large tensor attribute is found in the weights mapping."""
    out = node.outputs[0].name if node.outputs else "?"
    return out if (node.op == "Constant" and attr == "value") else f"{out}.{attr}"


def format_node(node, defined: set | None = None) -> str:
    """One node as text (its body, for a fused group, on following lines)."""
    errors = []
    args = []
    for v in node.inputs:
        if v is None:
            args.append("_")
            continue
        args.append(fmt_name(v.name))
        if defined is not None and id(v) not in defined:
            errors.append(f"{fmt_name(v.name)} is used before it is defined")
    attrs = [f"{k}={fmt_attr(v, weight_key(node, k))}" for k, v in node.attrs.items() if k != "body"]
    outs = ", ".join(fmt_name(v.name) for v in node.outputs)
    types = ", ".join(str(v.type) for v in node.outputs)
    line = f"{outs} = {node.op}({', '.join(args)})"
    if attrs:
        line += " {" + ", ".join(attrs) + "}"
    line += f" : {types}"
    body = node.attrs.get("body")
    if body is not None:
        line += " " + print_graph(body).replace("\n", "\n  ")
    comments = ([node.loc] if node.loc else []) + [f"ERROR: {e}" for e in errors]
    if comments:
        line += "  # " + "; ".join(comments)
    return line


def print_graph(graph) -> str:
    defined = {id(v) for v in graph.inputs}
    params = ", ".join(f"{fmt_name(v.name)}: {v.type}" for v in graph.inputs)
    lines = [f"graph {graph.name}({params}) {{"]
    for node in graph.nodes:
        try:
            text = format_node(node, defined)
        except Exception as e:  # the printer must never raise
            text = f"<<unprintable {getattr(node, 'op', '?')} node: {type(e).__name__}: {e}>>  # ERROR"
        lines.append("  " + text)
        defined.update(id(v) for v in getattr(node, "outputs", []))
    outs = ", ".join(fmt_name(v.name) for v in graph.outputs)
    lines.append(f"  return {outs}")
    lines.append("}")
    return "\n".join(lines)


def collect_weights(graph) -> dict[str, np.ndarray]:
    """The large tensors that print as `@key`, keyed as the text refers to them."""
    weights = {}
    for node in graph.nodes:
        for k, v in node.attrs.items():
            if isinstance(v, np.ndarray) and v.size > SMALL_TENSOR:
                weights[weight_key(node, k)] = v
        if node.body is not None:
            weights.update(collect_weights(node.body))
    return weights
