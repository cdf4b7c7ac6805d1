"""Operator fusion: partition the graph into groups that each become one kernel.

Why fuse? Between two ops that run as separate kernels, the intermediate
tensor goes to memory and comes back. Fusing `conv -> add bias -> relu` into
one kernel computes the relu while the conv's result is still in registers.
Which ops may fuse is decided by each op's fusion kind (registry.Kind), as in
TVM's FuseOps:

    ELEMENTWISE, BROADCAST   out[i] depends on in[i] (broadcast: modulo shape)
    INJECTIVE                each output reads one input element (reshape, transpose)
    REDUCTION                reduces axes (softmax, layernorm, mean)
    OUT_FUSABLE              heavy op that can take an elementwise epilogue (conv, matmul)
    OPAQUE                   never fused (constants, pooling, ...)

A group holds at most one "master" (an OUT_FUSABLE or REDUCTION op); the
other members are cheap elementwise/injective ops around it. The algorithm has
two phases, both linear walks over the nodes:

Phase 1, epilogues (forward, in topological order). Each master starts a
group. While the group's last node has one output with exactly one reader,
and that reader is ELEMENTWISE or BROADCAST and keeps the shape (so the
epilogue runs once per element of the master's result), the reader joins.
This builds conv + bias + relu + residual add, matmul + bias, softmax * x.

Phase 2, prologues and chains (backward, in reverse topological order). Each
node `p` that is ELEMENTWISE, BROADCAST or INJECTIVE and not yet grouped
joins the group of its readers when *all* of its readers are in one group
and that group has no master or a REDUCTION master (a reduction takes an
elementwise prologue, a conv or matmul does not, except the Cast that widens
its f16 weights). Otherwise `p` starts a new group, which its own producers
may join later. Walking backwards, `p`'s readers are decided before `p`,
which is what TVM's post-dominator analysis computes in general; requiring
that every reader is in the group means the group has a single exit, so
merging can never create a cycle between groups.
A value that is a graph output also ends its group (groups have one exit).

Fusion asks the target (the pass context's `can_lower`): a node that the
target cannot compute in a kernel joins no group, so it runs alone (on the
host) and does not drag its neighbours along with it.

Finally every group of two or more nodes becomes one `Fused` node whose
`body` sub-graph holds the members; single nodes stay as they are.

Constants: scalars (such as the 0.5 of GELU) and small integer vectors
(shapes and indices: Reshape needs its target shape at compile time) are
copied into each group body that reads them, so a kernel generator sees them
as literals. All other constants (weights, biases) stay group inputs: a
backend packs them once, and two groups may share them.
"""
from __future__ import annotations

from typing import Callable

from ..ir import Graph, Kind, Node, Value
from ..ir.ops.shape import VIEW_OPS
from .dce import remove_dead_nodes
from .manager import PassContext, register_pass

INLINE_CONSTANT_NUMEL = 1  # constants this small are copied into group bodies
INLINE_INDEX_NUMEL = 16  # integer constants (shapes, indices) up to this size too
MASTERS = (Kind.OUT_FUSABLE, Kind.REDUCTION)
EPILOGUE = (Kind.ELEMENTWISE, Kind.BROADCAST)
CHAIN = (Kind.ELEMENTWISE, Kind.BROADCAST, Kind.INJECTIVE)


class _Groups:
    """Union of nodes into groups: group id per node, members and master per group."""

    def __init__(self):
        self.of: dict[int, int] = {}
        self.members: list[list[Node]] = []
        self.master: list[Node | None] = []

    def new(self, node: Node, master: Node | None = None) -> int:
        self.members.append([])
        self.master.append(master)
        gid = len(self.members) - 1
        self.join(node, gid)
        return gid

    def join(self, node: Node, gid: int) -> None:
        self.of[id(node)] = gid
        self.members[gid].append(node)

    def group(self, node: Node) -> int | None:
        return self.of.get(id(node))


Explain = Callable[[str, Node, "str | None"], None]


def find_groups(graph: Graph, can_lower: Callable[[Node], bool] = lambda node: True,
                explain: Explain | None = None) -> list[list[Node]]:
    """The fusion groups of `graph`, each as its member nodes in graph order;
    nodes for which `can_lower` is false stay out of every group. `explain`,
    if given, hears each group made (`explain("group ...", last node, None)`)
    and each place where a group stopped growing, with the reason
    (`explain("boundary", node, reason)`)."""
    readers: dict[int, list[Node]] = {}
    for n in graph.nodes:
        for v in n.inputs:
            if v is not None:
                readers.setdefault(id(v), []).append(n)
    outputs = {id(v) for v in graph.outputs}
    groups = _Groups()
    stop = (lambda node, why: explain("boundary", node, why)) if explain else (lambda node, why: None)

    lowerable: dict[int, bool] = {}

    def kind(n: Node) -> Kind:
        if id(n) not in lowerable:
            lowerable[id(n)] = n.opdef.kind == Kind.OPAQUE or can_lower(n)
            if not lowerable[id(n)]:
                stop(n, f"the target cannot lower {n.op}, so it runs alone")
        return n.opdef.kind if lowerable[id(n)] else Kind.OPAQUE

    # phase 1: each master takes the chain of elementwise ops after it
    for n in graph.nodes:
        if kind(n) not in MASTERS or groups.group(n) is not None:
            continue
        gid, last = groups.new(n, master=n), n
        while True:
            why = _epilogue_stop(last, readers, outputs, groups, kind)
            if why is not None:
                if why:
                    stop(last, why)
                break
            (c,) = {id(r): r for r in readers[id(last.output)]}.values()
            groups.join(c, gid)
            last = c

    # phase 2: cheap ops join their readers' group when all readers agree
    for p in reversed(graph.nodes):
        if groups.group(p) is not None or kind(p) not in CHAIN or all(_literal(graph, v) is not None
                                                                      for v in p.outputs):
            continue  # (a shape computation is copied into its readers' groups as a literal)
        rs = [r for v in p.outputs for r in readers.get(id(v), [])]
        gids = {groups.group(r) for r in rs}
        exposed = [v for v in p.outputs if id(v) in outputs]
        if len(gids) == 1 and None not in gids and not exposed:
            (gid,) = gids
            master = groups.master[gid]
            if (master is None or kind(master) == Kind.REDUCTION or _widens_constant(graph, p)
                    or _index_map_into_padded_conv(p, master, groups.members[gid])):
                groups.join(p, gid)
                continue
            stop(p, f"its reader's group holds {master.op}, which is out-fusable: an elementwise "
                    "prologue would be computed again for every output element")
        elif exposed and rs:
            stop(p, f"%{exposed[0].name} is a graph output, and a group has one exit")
        elif None in gids and rs:
            alone = next(r for r in rs if groups.group(r) is None)
            stop(p, f"its reader {alone.op} (%{alone.outputs[0].name}) is in no group "
                    f"({kind(alone).value})")
        elif len(gids) > 1:
            stop(p, f"its result is read by {len(gids)} different groups")
        groups.new(p)

    order = {id(n): i for i, n in enumerate(graph.nodes)}
    found = [sorted(m, key=lambda n: order[id(n)]) for m in groups.members if len(m) > 1]
    if explain:
        for members, master in ((m, groups.master[groups.group(m[0])]) for m in found):
            explain(f"group {_group_name(members)} = {' + '.join(n.op for n in members)}: "
                    f"{_describe(members, master)}", members[-1], None)
    return found


def _epilogue_stop(last: Node, readers, outputs, groups: _Groups, kind) -> str | None:
    """Why the group ending at `last` takes no epilogue node after it ("" when
    there is simply nothing after it), or None when its reader may join."""
    if len(last.outputs) != 1:
        return f"{last.op} has {len(last.outputs)} outputs"
    v = last.output
    if id(v) in outputs:
        return f"%{v.name} is a graph output, and a group has one exit"
    rs = list({id(r): r for r in readers.get(id(v), [])}.values())
    if not rs:
        return ""
    if len(rs) != 1:
        return f"%{v.name} has {len(rs)} readers ({', '.join(r.op for r in rs)})"
    (c,) = rs
    if groups.group(c) is not None:
        return f"its reader {c.op} is already in another group"
    k = kind(c)
    if k not in EPILOGUE:
        return f"its reader {c.op} is {k.value}, not elementwise: only elementwise ops join as an epilogue"
    if len(c.outputs) != 1:
        return f"its reader {c.op} has {len(c.outputs)} outputs"
    if c.output.type.shape != v.type.shape:
        return (f"its reader {c.op} broadcasts to a larger shape {list(c.output.type.shape)}, "
                "so an epilogue would run more than once per element")
    return None


def _widens_constant(graph: Graph, node: Node) -> bool:
    """A Cast of f16 or bf16 weights to f32 (the mixed-precision pass): it joins even a
    conv's or matmul's group, whose packed weights are then the 16-bit array, each
    element widened as the micro-kernel loads it (loops/gemm.py)."""
    return (node.op == "Cast" and node.inputs[0].type.dtype in ("f16", "bf16") and node.output.type.dtype == "f32"
            and graph.const_value(node.inputs[0]) is not None)


def _index_map_into_padded_conv(node: Node, master: Node, members: list[Node]) -> bool:
    """A Reshape or Transpose that keeps the last axis (a channel shuffle) before
    a padded float Conv joins its group: a padded conv whose input is computed
    in its group copies that input padded once (loops/lower.padded_copy; one
    reading its input from memory would test reads at the borders instead,
    `pads_in_place`), and the copy reads through the index map, a row at a
    time, so the shuffle costs no kernel and no buffer of its own, only that
    copy (a GPU, which reads the padding in place, computes the map on every
    read instead). Only on the conv's data input, through index maps."""
    if master.op != "Conv" or not any(master.attrs["pads"]) or node.outputs[0].type.dtype not in ("f32", "f64"):
        return False
    if node.op == "Transpose":
        keeps_rows = node.attrs["perm"][-1] == node.inputs[0].type.rank - 1
    else:
        keeps_rows = node.op in VIEW_OPS and node.inputs[0].type.shape[-1:] == node.outputs[0].type.shape[-1:]
    out = node.outputs[0]
    for r in (r for r in members if any(v is out for v in r.inputs)):
        if r is master and (master.inputs[0] is not out or any(v is out for v in master.inputs[1:])):
            return False  # the weight or the bias: not read through a copy
        if r is not master and r.op not in (*VIEW_OPS, "Transpose"):
            return False
    return keeps_rows


def _describe(members: list[Node], master: Node | None) -> str:
    if master is None:
        return "a chain of elementwise and data-movement ops"
    i = members.index(master)
    parts = (["a prologue"] if i > 0 else []) + (["an elementwise epilogue"] if i + 1 < len(members) else [])
    return f"{master.opdef.kind.value} {master.op}" + (" with " + " and ".join(parts) if parts else "")


def _group_name(members: list[Node]) -> str:
    ops = list(dict.fromkeys(n.op.lower() for n in members))  # distinct, in order
    return "fused_" + "_".join(ops[:5]) + ("_etc" if len(ops) > 5 else "")


def _literal(graph: Graph, v: Value):
    """The array to copy into a group body for `v`, or None if `v` stays a group input.
    Small integer values also come from shape computations that were not folded
    (`static_value`), since ops such as Reshape need them at compile time."""
    if v.type.dtype.startswith(("i", "u")):
        return graph.static_value(v) if v.type.numel <= INLINE_INDEX_NUMEL else None
    return graph.const_value(v) if v.type.numel <= INLINE_CONSTANT_NUMEL else None


def build_body(graph: Graph, members: list[Node], name: str) -> tuple[Graph, list[Value], list[Value]]:
    """The sub-graph of a group, with the outer values it reads and the ones it defines for others."""
    inside = {id(n) for n in members}
    defined = {id(v) for n in members for v in n.outputs}
    body = Graph(name)
    vmap: dict[int, Value] = {}
    params: list[Value] = []
    for n in members:
        for v in n.inputs:
            if v is None or id(v) in defined or id(v) in vmap:
                continue
            literal = _literal(graph, v)
            if literal is not None:
                vmap[id(v)] = body.constant(literal, name=v.name, loc=v.loc)
            else:
                vmap[id(v)] = body.add_input(v.name, v.type, v.loc)
                params.append(v)
    for n in members:
        _copy_node(body, n, vmap)
    used_outside = {id(v) for n in graph.nodes if id(n) not in inside for v in n.inputs if v is not None}
    used_outside |= {id(v) for v in graph.outputs}
    exits = [v for n in members for v in n.outputs if id(v) in used_outside]
    body.outputs = [vmap[id(v)] for v in exits]
    return body, params, exits


def _copy_node(g: Graph, n: Node, vmap: dict[int, Value]) -> Node:
    """Add a copy of `n` to `g`, reading the copies of its inputs; record its outputs."""
    m = g.add(n.op, [None if v is None else vmap[id(v)] for v in n.inputs], n.attrs, loc=n.loc,
              names=[v.name for v in n.outputs], num_outputs=len(n.outputs))
    for old, new in zip(n.outputs, m.outputs):
        vmap[id(old)] = new
    return m


def fuse(graph: Graph, can_lower: Callable[[Node], bool] = lambda node: True,
         explain: Explain | None = None) -> tuple[Graph, int]:
    """A new graph in which each fusion group is one Fused node; and the number of groups."""
    groups = find_groups(graph, can_lower, explain)
    group_of = {id(n): members for members in groups for n in members}
    last = {id(members[-1]) for members in groups}
    out = Graph(graph.name)
    vmap: dict[int, Value] = {id(v): out.add_input(v.name, v.type, v.loc) for v in graph.inputs}
    for n in graph.nodes:
        members = group_of.get(id(n))
        if members is None:
            _copy_node(out, n, vmap)
        elif id(n) in last:
            name = _group_name(members)
            body, params, exits = build_body(graph, members, name)
            f = out.add("Fused", [vmap[id(v)] for v in params], {"body": body, "name": name},
                        loc=members[-1].loc, names=[v.name for v in exits])
            vmap.update({id(old): new for old, new in zip(exits, f.outputs)})
    out.outputs = [vmap[id(v)] for v in graph.outputs]
    remove_dead_nodes(out)  # small constants now live inside the groups
    return out, len(groups)


@register_pass
class FuseOps:
    name = "fuse"
    context = PassContext()
    trace = None  # set by the pipeline when instruments listen: hears each group and boundary

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        fused, count = fuse(graph, self.context.can_lower, self.trace)
        return (fused, True) if count else (graph, False)
