"""Local rewrites given as data: a pattern, a check, a rewrite, and a name.

    Rule("mul-one", Pat("Mul", ("x", Const("one", 1.0))), rewrite=lambda g, m: m["x"], check=same_type("x"))

A pattern is a tree of `Pat(op, args)` whose leaves are capture names
(strings bind the value found there) or `Const(name)` (binds a value made by
a Constant node; `Const(name, 1.0)` only one that is 1 everywhere). `"..."`
as the last argument allows any further inputs. Commutative binary ops (Add,
Mul) match in either argument order.

`check(graph, match)` returns None when the rule applies, or a short reason
why not: the reason goes to the rewrite trace, so students can see why a
pattern matched yet nothing happened. `rewrite(graph, match)` adds the new
nodes just before the matched root (`graph.add(..., before=match.root)`) and
returns the value that replaces the root's first output. The engine refuses a
replacement of another type: a rewrite must never change a value's type.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np

from ..ir import Graph, Node, Value
from .dce import remove_dead_nodes

COMMUTATIVE = {"Add", "Mul"}


@dataclass(frozen=True)
class Const:
    """Matches a value produced by a Constant node (equal to `value` everywhere, if given)."""

    name: str
    value: float | None = None


@dataclass(frozen=True)
class Pat:
    """Matches a value produced by an `op` node whose inputs match `args`.
    `name` binds the node itself (the root is always bound as "root")."""

    op: str
    args: tuple["PatArg", ...] = ()
    name: str | None = None


PatArg = Union[Pat, Const, str]


@dataclass
class Match:
    graph: Graph
    values: dict[str, Value] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the rewrite computed, for the trace

    def explain(self, text: str) -> None:
        """Say what the rewrite computed (the algebra of a fold); the trace prints it under the rule."""
        self.notes.append(text)

    def __getitem__(self, name: str) -> Value:
        return self.values[name]

    @property
    def root(self) -> Node:
        return self.nodes["root"]

    def const(self, name: str) -> np.ndarray:
        """The array of a value captured by `Const(name)`."""
        return self.graph.const_value(self.values[name])

    def add(self, op: str, inputs, attrs: dict | None = None) -> Value:
        """Add a node just before the root, named and located after it."""
        root = self.root
        return self.graph.add(op, inputs, attrs, loc=root.loc, names=[root.outputs[0].name],
                              before=root).outputs[0]

    def constant(self, array, role: str = "c") -> Value:
        """Add a Constant just before the root, named after the root and its `role`."""
        return self.graph.constant(array, name=f"{self.root.outputs[0].name}.{role}", before=self.root)


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: Pat
    rewrite: Callable[[Graph, Match], Value]
    check: Callable[[Graph, Match], str | None] | None = None
    quiet: bool = False  # True: do not trace near misses (rules that match almost everywhere)


def match(graph: Graph, pattern: Pat, node: Node) -> Match | None:
    m = Match(graph)
    return m if _match_node(pattern, node, m, "root") else None


def _match_node(p: Pat, node: Node | None, m: Match, bind: str | None) -> bool:
    if node is None or node.op != p.op:
        return False
    args = list(p.args)
    open_ended = bool(args) and args[-1] == "..."
    if open_ended:
        args.pop()
    inputs = node.inputs
    if len(inputs) < len(args) or (not open_ended and len(inputs) != len(args)):
        return False
    orders = [inputs[:len(args)]]
    if p.op in COMMUTATIVE and len(args) == 2:
        orders.append(inputs[1::-1])
    for order in orders:
        trial = Match(m.graph, dict(m.values), dict(m.nodes))
        if all(_match_arg(a, v, trial) for a, v in zip(args, order)):
            m.values, m.nodes = trial.values, trial.nodes
            for name in filter(None, {bind, p.name}):
                m.nodes[name] = node
            return True
    return False


def _match_arg(a: PatArg, v: Value | None, m: Match) -> bool:
    if v is None:
        return False
    if isinstance(a, Pat):
        return _match_node(a, v.producer, m, None)
    if isinstance(a, Const):
        array = m.graph.const_value(v)
        if array is None or (a.value is not None and not np.all(array == a.value)):
            return False
        a = a.name
    if a in m.values:
        return m.values[a] is v
    m.values[a] = v
    return True


class RewritePass:
    """A pass that applies its `rules` everywhere until none fires, then removes
    the nodes the rewrites left dead. `trace(rule, node, note)` is set by the
    pass manager when an instrument listens."""

    name = "rewrite"
    rules: list[Rule] = []

    def __init__(self, disable: tuple[str, ...] = ()):
        unknown = sorted(set(disable) - {r.name for r in self.rules})
        if unknown:
            raise ValueError(f"pass '{self.name}' has no rule(s) {unknown}; "
                             f"its rules: {', '.join(r.name for r in self.rules)}")
        self.active = [r for r in self.rules if r.name not in disable]
        self.trace = None

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        return graph, apply_rules(graph, self.active, self.trace)


def apply_rules(graph: Graph, rules: list[Rule], trace=None) -> bool:
    """Rewrite `graph` in place with `rules` to a fixed point; True if anything fired.

    Each sweep tries every node of the graph as it was when the sweep began
    (one that a firing left without readers is skipped: its rewrite would be
    dead too); the nodes a rewrite adds are tried in the next sweep. Sweeps
    repeat until one fires nothing, so their number is the depth of the
    rewrites, not their count (restarting after each firing was quadratic in
    the model's size)."""
    by_op: dict[str, list[Rule]] = {}
    for r in rules:
        by_op.setdefault(r.pattern.op, []).append(r)
    changed = False
    reported: set[tuple[str, int]] = set()  # report each near miss once
    progress = True
    while progress:
        progress = False
        replaced: set[int] = set()  # nodes whose readers a firing took away
        for node in list(graph.nodes):
            if id(node) in replaced or node.op not in by_op:
                continue
            for rule in by_op[node.op]:
                said, fired = _try(graph, rule, node)
                if fired:
                    if trace:
                        trace(rule.name, node, None, said)  # what the rewrite computed, if it said
                    progress = changed = True
                    replaced.add(id(node))
                    break
                why = said
                if why and trace and not rule.quiet and (rule.name, id(node)) not in reported:
                    reported.add((rule.name, id(node)))
                    trace(rule.name, node, why)
        remove_dead_nodes(graph)
    return changed


def _try(graph: Graph, rule: Rule, node: Node) -> tuple[str | None, bool]:
    """(reason it did not fire or None, whether it fired); when it fired,
    instead of a reason what the rewrite computed (`Match.explain`), if it said."""
    m = match(graph, rule.pattern, node)
    if m is None:
        return None, False
    if len(node.outputs) > 1:
        counts = graph.use_counts()
        if any(counts.get(v) for v in node.outputs[1:]):
            return "its extra outputs are used", False
    why = rule.check(graph, m) if rule.check else None
    if why:
        return why, False
    old = node.outputs[0]
    new = rule.rewrite(graph, m)
    if new.type != old.type:
        return f"the rewrite gives {new.type}, not {old.type}", False
    graph.replace_all_uses(old, new)
    return "\n".join(m.notes) or None, True


# ---- helpers shared by rule sets ---------------------------------------------
def same_type(a: str, b: str = "root"):
    """A check: captured value `a` has the type of `b` (the root's output by default),
    so replacing one by the other cannot change a type (e.g. by broadcasting)."""

    def check(graph: Graph, m: Match) -> str | None:
        ta = m[a].type
        tb = m.root.outputs[0].type if b == "root" else m[b].type
        return None if ta == tb else f"%{m[a].name} is {ta} but the result is {tb}"

    return check


def all_of(*checks):
    """A check that passes when every check passes (the first reason wins)."""

    def check(graph: Graph, m: Match) -> str | None:
        for c in checks:
            why = c(graph, m)
            if why:
                return why
        return None

    return check
