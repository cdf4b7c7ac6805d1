"""The graph verifier: the invariants every pass must preserve.

* SSA: every value has one definition and a name used once;
* topological order: a node reads only graph inputs and earlier outputs;
* no dangling values: every input and graph output is defined in the graph;
* types: each node's output types equal what its op infers now;
* fused groups: the body is itself a valid graph whose signature matches.
"""
from __future__ import annotations

from .graph import Graph, Operand
from .registry import IRError, get_op


class VerifyError(IRError):
    pass


def verify(graph: Graph) -> None:
    """Raise VerifyError listing every broken invariant (empty list: fine)."""
    problems = list(_check(graph))
    if problems:
        raise VerifyError(f"graph {graph.name} is invalid:\n  " + "\n  ".join(problems))


def _check(graph: Graph):
    names: set[str] = set()
    defined: set[int] = set()
    for v in graph.inputs:
        if v.name in names:
            yield f"%{v.name} is defined twice"
        names.add(v.name)
        defined.add(id(v))
    for node in graph.nodes:
        where = node.describe()
        for v in node.inputs:
            if v is not None and id(v) not in defined:
                yield f"{where} reads %{v.name}, which is not defined before it"
        try:
            opdef = get_op(node.op)
            operands = [None if v is None else Operand(v.type, lambda v=v: graph.static_value(v))
                        for v in node.inputs]
            types = opdef.infer_types(operands, opdef.check_attrs(node.attrs, where), where)
        except IRError as e:
            yield str(e)
            types = None
        if types is not None:
            if len(types) < len(node.outputs):
                yield f"{where} has {len(node.outputs)} outputs, its op makes {len(types)}"
            for v, t in zip(node.outputs, types):
                if v.type != t:
                    yield f"{where}: %{v.name} has type {v.type}, inference gives {t}"
        for v in node.outputs:
            if v.producer is not node:
                yield f"{where}: %{v.name} does not name it as its producer"
            if v.name in names:
                yield f"%{v.name} is defined twice"
            names.add(v.name)
            defined.add(id(v))
        if node.body is not None:
            for p in _check(node.body):
                yield f"in the body of {where}: {p}"
    for v in graph.outputs:
        if id(v) not in defined:
            yield f"graph output %{v.name} is not defined in the graph"
