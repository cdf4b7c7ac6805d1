"""Graph IR: `Value`, `Node` and `Graph`, with the editing API that passes use.

A Graph owns its input values, a list of nodes kept in topological order, and
its output values. Every value is produced by exactly one node (or is a graph
input) and has a static `TensorType`. Weights are `Constant` nodes whose
`value` attribute holds the array.

Creating a node through `Graph.add` validates its attributes and infers its
output types from the op registry, so a graph is well-typed by construction.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from .registry import IRError, Operand, get_op
from .types import TensorType

# Constants up to this many elements take part in compile-time evaluation
# of shape computations (Operand.value); larger results are never computed.
STATIC_VALUE_LIMIT = 4096


class Value:
    """An SSA value: a tensor with a name, a type and the node that makes it."""

    __slots__ = ("name", "type", "producer", "loc")

    def __init__(self, name: str, type: TensorType, producer: "Node | None" = None, loc: str | None = None):
        self.name = name
        self.type = type
        self.producer = producer
        self.loc = loc

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One op application. `outputs` are Values whose producer is this node."""

    __slots__ = ("op", "inputs", "outputs", "attrs", "loc")

    def __init__(self, op: str, inputs: list[Value | None], attrs: dict[str, Any], loc: str | None = None):
        self.op = op
        self.inputs = inputs  # None marks an omitted optional input
        self.outputs: list[Value] = []
        self.attrs = attrs
        self.loc = loc

    @property
    def output(self) -> Value:
        """The only output (most ops have one)."""
        assert len(self.outputs) == 1, f"{self.op} has {len(self.outputs)} outputs"
        return self.outputs[0]

    @property
    def opdef(self):
        return get_op(self.op)

    @property
    def body(self) -> "Graph | None":
        """The sub-graph of a fused group, else None."""
        return self.attrs.get("body")

    def describe(self) -> str:
        """How error messages name this node: op, output and source location."""
        name = self.outputs[0].name if self.outputs else "?"
        return f"{self.op} node %{name}" + (f" ({self.loc})" if self.loc else "")

    def __repr__(self) -> str:
        return f"<Node {self.describe()}>"


class Graph:
    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.outputs: list[Value] = []
        self._names: set[str] = set()
        self._counter = 0  # suffixes for fresh names (an int, so that a graph pickles)

    # ---- construction -------------------------------------------------
    def fresh_name(self, hint: str = "v") -> str:
        """A value name not used yet in this graph, derived from `hint`."""
        hint = hint or "v"  # any characters: the printer quotes unusual names
        name = hint
        while name in self._names:
            name = f"{hint}_{self._counter}"
            self._counter += 1
        self._names.add(name)
        return name

    def add_input(self, name: str, type: TensorType, loc: str | None = None) -> Value:
        if name in self._names:
            raise IRError(f"duplicate value name %{name}")
        self._names.add(name)
        v = Value(name, type, None, loc)
        self.inputs.append(v)
        return v

    def add(self, op: str, inputs: Iterable[Value | None] = (), attrs: dict[str, Any] | None = None, *,
            loc: str | None = None, names: list[str] | None = None, num_outputs: int | None = None,
            before: Node | None = None) -> Node:
        """Create a node, check its attributes, infer its output types, insert it.

        The node goes at the end, or just before `before`. Output values are
        named after `names` (made unique) or after the op.
        """
        opdef = get_op(op)
        inputs = list(inputs)
        where = f"{op} node" + (f" '{names[0]}'" if names else "") + (f" ({loc})" if loc else "")
        attrs = opdef.check_attrs(dict(attrs or {}), where)
        operands = [None if v is None else Operand(v.type, (lambda v=v: self.static_value(v))) for v in inputs]
        types = opdef.infer_types(operands, attrs, where)
        if num_outputs is not None:
            types = types[:num_outputs]
        node = Node(op, inputs, attrs, loc)
        hints = names or [op.lower()] * len(types)
        node.outputs = [Value(self.fresh_name(h), t, node, loc) for h, t in zip(hints, types)]
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(before), node)
        return node

    def constant(self, array, name: str | None = None, loc: str | None = None, before: Node | None = None) -> Value:
        """Add a Constant node holding `array` and return its value."""
        return self.add("Constant", [], {"value": np.asarray(array)}, loc=loc,
                        names=[name or "c"], before=before).output

    # ---- queries --------------------------------------------------------
    def values(self) -> Iterator[Value]:
        yield from self.inputs
        for n in self.nodes:
            yield from n.outputs

    def uses(self, value: Value) -> list[tuple[Node, int]]:
        """The (node, input index) pairs that read `value` (not graph outputs)."""
        return [(n, i) for n in self.nodes for i, v in enumerate(n.inputs) if v is value]

    def use_counts(self) -> dict[Value, int]:
        """How many times each value is read, graph outputs included."""
        counts: dict[Value, int] = {}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None:
                    counts[v] = counts.get(v, 0) + 1
        for v in self.outputs:
            counts[v] = counts.get(v, 0) + 1
        return counts

    def const_value(self, value: Value | None) -> np.ndarray | None:
        """The array of a value produced by a Constant node, else None."""
        if value is not None and value.producer is not None and value.producer.op == "Constant":
            return value.producer.attrs["value"]
        return None

    def static_value(self, value: Value) -> np.ndarray | None:
        """The value of `value` if it can be computed at compile time cheaply:
        constants, Shape of a typed tensor, and small ops over those. Used by
        type inference for shape-like inputs (Reshape, Expand, ...)."""
        node = value.producer
        if node is None:
            return None
        if node.op == "Constant":
            return node.attrs["value"]
        if node.op in ("Shape", "Size"):
            return node.opdef.evaluate([np.empty(node.inputs[0].type.shape, np.bool_)], node.attrs)[0]
        if value.type.numel > STATIC_VALUE_LIMIT or node.body is not None:
            return None
        args = []
        for v in node.inputs:
            a = None if v is None else self.static_value(v)
            if v is not None and a is None:
                return None
            args.append(a)
        return node.opdef.evaluate(args, node.attrs)[node.outputs.index(value)]

    # ---- editing ----------------------------------------------------------
    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every reader of `old` (graph outputs included) read `new`."""
        if old.type != new.type:
            raise IRError(f"replace_all_uses: %{old.name} is {old.type} but %{new.name} is {new.type}")
        for n in self.nodes:
            n.inputs = [new if v is old else v for v in n.inputs]
        self.outputs = [new if v is old else v for v in self.outputs]

    def erase(self, node: Node) -> None:
        """Remove a node whose outputs nobody reads."""
        counts = self.use_counts()
        for v in node.outputs:
            if counts.get(v):
                raise IRError(f"cannot erase {node.describe()}: %{v.name} still has uses")
        self.nodes.remove(node)
        for v in node.outputs:
            self._names.discard(v.name)

    def topo_sort(self) -> None:
        """Reorder nodes topologically (stable: keeps the current order where it can)."""
        placed: set[int] = {id(v) for v in self.inputs}
        pending, order = list(self.nodes), []
        while pending:
            rest = []
            for n in pending:
                if all(v is None or id(v) in placed for v in n.inputs):
                    order.append(n)
                    placed.update(id(v) for v in n.outputs)
                else:
                    rest.append(n)
            if len(rest) == len(pending):
                raise IRError(f"graph has a cycle or a value with no producer near {rest[0].describe()}")
            pending = rest
        self.nodes = order

    def copy(self) -> "Graph":
        """A structural copy: new Values and Nodes, copied attribute lists (a pass
        may edit them in place), shared constant arrays (never edited; big)."""
        g = Graph(self.name)
        vmap: dict[Value, Value] = {}
        for v in self.inputs:
            vmap[v] = g.add_input(v.name, v.type, v.loc)
        for n in self.nodes:
            attrs = {k: (b.copy() if isinstance(b, (Graph, list)) else b) for k, b in n.attrs.items()}
            m = Node(n.op, [None if v is None else vmap[v] for v in n.inputs], attrs, n.loc)
            for v in n.outputs:
                g._names.add(v.name)
                vmap[v] = Value(v.name, v.type, m, v.loc)
                m.outputs.append(vmap[v])
            g.nodes.append(m)
        g.outputs = [vmap[v] for v in self.outputs]
        return g

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, {len(self.outputs)} outputs>"
