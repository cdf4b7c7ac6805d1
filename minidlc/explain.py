"""One node's journey through the compiler (`minidlc explain MODEL NODE`).

Where the node came from (its ONNX node or PyTorch source line), each rewrite
that changed it or folded a neighbour into it (with what the rewrite
computed), the fused group it ended up in, the loop-IR kernel that computes
it, and on llvm the LLVM functions of that kernel with their instruction
counts and vector widths. A node is followed by the names of its values: a
value a rewrite makes is named after the one it replaces.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .ir import Graph, Node
from .passes.manager import Instrument


class UnknownNode(ValueError):
    """The model has no node of that name."""


@dataclass
class _Journey(Instrument):
    """Records the rewrites that touch the followed values (and then follows
    what the rewrite made). A rewrite names its new value after the node it
    replaces, perhaps with a `_N` suffix to keep names unique."""

    names: set[str]
    events: list[str] = field(default_factory=list)

    def follows(self, name: str) -> bool:
        base = re.sub(r"_\d+$", "", name)
        return name in self.names or base in self.names

    def on_rewrite(self, p, rule: str, node: Node, note: str | None, detail: str | None = None) -> None:
        if note is not None or p.name == "fuse":  # near misses, and fuse (shown as the group below)
            return
        touched = [v.name for v in node.outputs] + [o.name for v in node.inputs if v is not None and v.producer
                                                    for o in v.producer.outputs]
        if any(self.follows(n) for n in touched):
            self.events.append(f"{p.name}: {rule} fired on {node.describe()}")
            self.events += [f"    {line}" for line in (detail or "").splitlines()]
            self.names.update(v.name for v in node.outputs)


def find_node(graph: Graph, name: str) -> Node:
    """The node whose source location or output value is `name`."""
    for n in graph.nodes:
        if n.loc == name or any(v.name == name for v in n.outputs):
            return n
    names = [n.loc or n.outputs[0].name for n in graph.nodes if n.op != "Constant"]
    raise UnknownNode(f"no node named {name!r}; nodes: {', '.join(names[:12])}" + (", ..." if len(names) > 12 else ""))


def explain(graph: Graph, name: str, target: str = "llvm", opt_level: int = 2, profile: bool = False,
            **options) -> str:
    """The journey of the node called `name` (see the module docstring); with
    `profile`, also its kernel's time and share of a run (profiler.py)."""
    import minidlc

    node = find_node(graph, name)
    journey = _Journey({v.name for v in node.outputs})
    m = minidlc.compile(graph, target=target, opt_level=opt_level, instruments=[journey], **options)
    lines = [f"{node.describe()}: {node.op} of {', '.join(f'%{v.name}' for v in node.inputs if v is not None)}"
             f" -> {', '.join(f'{v.type}' for v in node.outputs)}",
             f"from: {node.loc or 'no source location'}", f"passes (-O{opt_level}):"]
    lines += [f"  {e}" for e in journey.events] or ["  no rewrite changed it"]
    ours = lambda n: n.op != "Constant" and any(journey.follows(v.name) for v in n.outputs)  # noqa: E731
    home = next((n for n in m.graph.nodes if (n.body is not None and any(ours(b) for b in n.body.nodes))
                 or (n.body is None and ours(n))), None)
    if home is None:
        lines.append("after the passes: gone (folded into a constant or removed as dead)")
        return "\n".join(lines) + "\n"
    if home.body is not None:
        lines.append(f"fused group: {home.attrs['name']} = {' + '.join(b.op for b in home.body.nodes if b.op != 'Constant')}")
    else:
        lines.append(f"after the passes: {home.describe()}, in no group")
    if not m.backend.runs_kernels:
        lines.append(f"target {target} interprets the graph: no kernel")
        return "\n".join(lines) + "\n"
    step = next(s for s in m.program.steps if s.node is home)
    lines.append(f"loop program: {step.kind.value} step")
    lines += [f"  {line}" for line in str(step).splitlines()]
    if target == "llvm" and step.lowered is not None:
        lines += _llvm_functions(m.emit("llvm"), step.lowered.kernel.name)
    if profile:
        lines.append(_time_share(m, step))
    return "\n".join(lines) + "\n"


def _time_share(m, step) -> str:
    from .profiler import profile

    rows = profile(m, m.random_inputs())
    name = step.lowered.kernel.name if step.lowered is not None else step.node.outputs[0].name
    total = sum(r.seconds for r in rows)
    row = next((r for r in rows if r.name == name), None)
    if row is None:  # a view: no work of its own
        return "time: none (a view of its input)"
    return (f"time: {row.seconds * 1e3:.3f} ms, {100 * row.seconds / total:.1f}% of a run "
            f"({len(rows)} steps timed alone, {row.flops / row.seconds / 1e9:.1f} GFLOP/s)")


def _llvm_functions(module: str, kernel: str) -> list[str]:
    """Each stage function of `kernel` in the optimized module: instructions and widest vectors."""
    from .backends.llvm.codegen import stage_functions

    out = ["llvm (after O3):"]
    for name, text in stage_functions(module, kernel):
        body = [line.strip() for line in text.splitlines()[1:-1]]
        count = sum(1 for line in body if line and not line.endswith(":") and not line.startswith(";"))
        widths = [int(w) for w in re.findall(r"<(\d+) x (?:float|double|i\d+)>", text)]
        vec = f"vectors of up to {max(widths)} lanes" if widths else "scalar code"
        out.append(f"  @{name}: {count} instructions, {vec}")
    return out
