"""The graph as a Graphviz picture (`--emit dot`, `--emit svg`).

Each node is a box labelled with its op and output type; a fused group is a
cluster around its member nodes, named after the group; graph inputs and
outputs are ellipses. Edges carry the tensor's type. Constants are not
drawn as nodes: a small one is written into its reader's label with its
value, a weight with its type.
"""
from __future__ import annotations

import shutil
import subprocess

from .graph import Graph, Node, Value

SMALL_CONSTANT = 4  # constants with at most this many elements show their values
NEWLINE = "\n"


def to_dot(graph: Graph) -> str:
    return _Dot(graph).text()


def to_svg(graph: Graph) -> str:
    """The picture as SVG, drawn by Graphviz's `dot` program."""
    dot = shutil.which("dot")
    if dot is None:
        raise FileNotFoundError("--emit svg needs Graphviz's `dot` program: install graphviz "
                                "(apt install graphviz, brew install graphviz), or use --emit dot")
    done = subprocess.run([dot, "-Tsvg"], input=to_dot(graph), capture_output=True, text=True)
    if done.returncode:
        raise OSError(f"Graphviz's dot failed: {done.stderr.strip()}")
    return done.stdout


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _type(v: Value) -> str:
    return f"{v.type.dtype}[{','.join(map(str, v.type.shape))}]"


class _Dot:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.lines: list[str] = []
        self.source: dict[int, str] = {}  # id(value) -> the DOT node that produces it
        self.weight: dict[int, Value] = {}  # id(group input) -> the outer constant it stands for
        self.edges: list[str] = []  # drawn after all nodes: an edge inside a cluster would pull both ends in
        self.ids = 0

    def fresh(self) -> str:
        self.ids += 1
        return f"n{self.ids}"

    def text(self) -> str:
        g = self.graph
        self.lines = [f"digraph {_quote(g.name)} {{", "  rankdir=TB;",
                      '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica"];',
                      '  edge [fontname="Helvetica", fontsize=10];']
        for v in g.inputs:
            self.source[id(v)] = name = self.fresh()
            self.ellipse(name, f"{v.name}\n{_type(v)}")
        self.nodes(g, "  ")
        for v in g.outputs:
            name = self.fresh()
            self.ellipse(name, f"output {v.name}")
            self.edge(v, name)
        self.lines += self.edges + ["}"]
        return "\n".join(self.lines) + "\n"

    def ellipse(self, name: str, label: str) -> None:
        self.lines.append(f"  {name} [shape=ellipse, fillcolor=lightblue, label={_quote(label)}];")

    def nodes(self, graph: Graph, indent: str) -> None:
        for node in graph.nodes:
            if node.op == "Constant":
                continue
            if node.body is not None:
                self.cluster(node, indent)
                continue
            name = self.fresh()
            for v in node.outputs:
                self.source[id(v)] = name
            label = [node.op, ", ".join(_type(v) for v in node.outputs)]
            label += [self.constant_text(v) for v in node.inputs if self.is_constant(v)]
            self.lines.append(f"{indent}{name} [label={_quote(NEWLINE.join(label))}];")
            for v in node.inputs:
                if v is not None and not self.is_constant(v):
                    self.edge(v, name)

    def cluster(self, node: Node, indent: str) -> None:
        """A fused group: its body's nodes in a box; its inputs and outputs are the outer values."""
        body = node.body
        for inner, outer in zip(body.inputs, node.inputs):
            if outer is not None and id(outer) in self.source:
                self.source[id(inner)] = self.source[id(outer)]
            elif outer is not None:  # a weight read by the group: drawn in its reader's label
                self.weight[id(inner)] = outer
        self.lines.append(f"{indent}subgraph cluster_{self.fresh()} {{")
        self.lines.append(f'{indent}  label={_quote(node.attrs.get("name", "fused"))}; style="rounded,filled"; '
                          "fillcolor=lightyellow;")
        self.nodes(body, indent + "  ")
        self.lines.append(f"{indent}}}")
        for inner, outer in zip(body.outputs, node.outputs):
            self.source[id(outer)] = self.source[id(inner)]

    def is_constant(self, v: Value | None) -> bool:
        return v is not None and (id(v) in self.weight or (v.producer is not None and v.producer.op == "Constant"))

    def constant_text(self, v: Value) -> str:
        outer = self.weight.get(id(v), v)
        array = outer.producer.attrs["value"] if outer.producer is not None else None
        if array is not None and array.size <= SMALL_CONSTANT:
            return f"{v.name} = {array.reshape(-1).tolist() if array.ndim else array.item()}"
        return f"{v.name}: {_type(v)}"

    def edge(self, v: Value, to: str) -> None:
        if id(v) in self.source:
            self.edges.append(f"  {self.source[id(v)]} -> {to} [label={_quote(_type(v))}];")
