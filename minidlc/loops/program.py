"""The loop program: what every backend builds from.

The optimized graph becomes a list of *steps*, one per top-level node:

    kernel   the node (a fused group or a plain op) lowered to one loop-IR
             kernel, scheduled for the target
    view     a reshape or a contiguous slice: shares its input's memory, no code;
             or a concat whose inputs are written into it in place (each
             input's storage is a stretch of the output's), no code either
    host     no lowering: the node runs on the host with its NumPy reference
             implementation (the reason is kept, and printed)

plus the memory plan, which gives every intermediate tensor and every kernel's
scratch buffer an offset in one arena. The program holds offsets only: a
backend allocates the arena (host memory, device memory) and renders the
kernels in its own way (LLVM IR, Numba source), so every backend runs the
same kernels over the same memory layout.

`str(program)` is what `--emit loops` prints. Lowering happens on first use,
so a backend that interprets the graph (the reference) never pays for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

from ..ir import Graph, Node
from .ir import Kernel, Param
from .gemm import GEMM_OPS, describe_config
from .lower import CpuChoices, Device, LoweredGroup, Unsupported, lower_group
from .plan import MemoryPlan, plan_memory
from .printer import print_kernel
from .rules import view_offset
from .schedule import default_schedule
from .verify import verify_kernel

Schedule = Callable[[Kernel], Kernel]


class StepKind(str, Enum):
    KERNEL = "kernel"
    VIEW = "view"
    HOST = "host"


@dataclass
class Step:
    """One top-level node of the graph, as the program runs it."""

    node: Node
    kind: StepKind
    lowered: LoweredGroup | None = None  # kernels: the kernel and what its parameters bind to
    reason: str = ""                     # host steps: why there is no kernel
    view_offset: int | None = None       # views: the first element within the input
    join_offsets: list[int] | None = None  # in-place concats: where each input starts in the output (elements)

    def scratch_params(self) -> list[Param]:
        """The kernel's parameters that the memory plan places as scratch."""
        return [b.param for b in self.lowered.bindings if b.role == "scratch"] if self.lowered else []

    def computes(self) -> str:
        """The graph nodes this step computes, with their source locations."""
        nodes = [n for n in self.node.body.nodes if n.op != "Constant"] if self.node.body is not None else [self.node]
        return ", ".join(f"{n.op} %{n.outputs[0].name}" + (f" ({n.loc})" if n.loc else "") for n in nodes)

    def __str__(self) -> str:
        if self.kind == StepKind.KERNEL:
            tiles = "".join(f"// product {p}\n" for p in self.lowered.gemms)
            return f"// computes {self.computes()}\n{tiles}" + print_kernel(self.lowered.kernel)
        if self.join_offsets is not None:
            return f"// {self.node.describe()}: its inputs are written into it in place, no copy"
        if self.kind == StepKind.VIEW:
            return f"// {self.node.describe()}: a view of %{self.node.inputs[0].name}, no copy"
        return f"// {self.node.describe()}: runs on NumPy (fallback: {self.reason})"


def lowering_failure(node: Node, device: Device = Device.CPU) -> str | None:
    """Why `node` has no loop-IR lowering for `device`, or None when it has one.
    Fusion asks this of every node so that a group only holds what lowers;
    the answer for a node like one asked about before (a repeated layer) is
    remembered (`_probe_key`)."""
    if node.op == "Constant" or view_offset(node) is not None:
        return None
    key = _probe_key(node, device)
    if key is not None and key in _PROBED:
        return _PROBED[key]
    try:
        lower_group(node, "probe", device=device, probe=True)
        failure = None
    except Unsupported as e:
        failure = str(e)
    if key is not None:
        if len(_PROBED) > 10_000:
            _PROBED.clear()
        _PROBED[key] = failure
    return failure


_PROBED: dict[tuple, str | None] = {}


def _probe_key(node: Node, device: Device) -> tuple | None:
    """What a lowering can depend on: the op, its attributes, its operands' and
    results' types, which operands are constants, and the values of small
    constants (zero points, scalars); weights count by shape and dtype only. None
    (ask the lowering) for a fused group, or attributes holding arrays."""
    if node.body is not None or any(isinstance(a, np.ndarray) for a in node.attrs.values()):
        return None

    def operand(v):
        if v is None:
            return None
        c = v.producer.attrs["value"] if v.producer is not None and v.producer.op == "Constant" else None
        return v.type, None if c is None else (c.shape, c.dtype.str, c.tobytes() if c.size <= 64 else None)
    return (device, node.op, repr(sorted(node.attrs.items())), tuple(operand(v) for v in node.inputs),
            tuple(v.type for v in node.outputs))


def in_place_concats(graph: Graph) -> dict[int, list[int]]:
    """The standalone Concats that need not copy (id(node) -> each input's
    element offset in the output): their inputs are written straight into
    the output's memory, which the memory plan arranges. That takes a concat
    whose inputs are contiguous stretches of the output (every axis before
    the concat axis has extent 1: channels at batch 1), each input a value a
    step computes (not a graph input or output, a weight, or a view of
    something else), placed by no other concat. A chain of them (DenseNet's
    growing feature map) nests: every layer's output lands in the last
    concat's buffer, and no concat copies."""
    fixed = {id(v) for v in (*graph.inputs, *graph.outputs)}
    placed: set[int] = set()
    joins = {}
    for node in graph.nodes:
        if node.op != "Concat" or node.body is not None:
            continue
        shape, inputs = node.outputs[0].type.shape, node.inputs
        if math.prod(shape[:node.attrs["axis"] % len(shape)]) != 1 or len({id(v) for v in inputs}) < len(inputs):
            continue
        if any(id(v) in fixed or id(v) in placed or v.producer is None or v.producer.op == "Constant"
               or view_offset(v.producer) is not None for v in inputs):
            continue
        joins[id(node)] = [sum(v.type.numel for v in inputs[:i]) for i in range(len(inputs))]
        placed.update(id(v) for v in inputs)
    return joins


class LoopProgram:
    """The steps of a graph, their kernels lowered for `device` and scheduled
    by `schedule`, and the memory plan."""

    def __init__(self, graph: Graph, schedule: Schedule | None = default_schedule, device: Device = Device.CPU,
                 cpu: CpuChoices = CpuChoices(), tiles: Mapping[str, object] = MappingProxyType({})):
        self.graph = graph
        self.schedule = schedule
        self.device = device
        self.cpu = cpu  # see lower.CpuChoices
        self.tiles = dict(tiles)  # likewise

    @cached_property
    def steps(self) -> list[Step]:
        steps, names = [], set()
        counts = self.graph.use_counts()
        joins = in_place_concats(self.graph)
        for node in self.graph.nodes:
            if node.op == "Constant":
                continue
            if id(node) in joins:
                steps.append(Step(node, StepKind.VIEW, join_offsets=joins[id(node)]))
                continue
            offset = view_offset(node)
            if offset is not None:
                steps.append(Step(node, StepKind.VIEW, view_offset=offset))
                continue
            try:
                steps.append(Step(node, StepKind.KERNEL, self.lower(node, _kernel_name(node, names), counts)))
            except Unsupported as e:
                steps.append(Step(node, StepKind.HOST, reason=str(e)))
        return steps

    def lower(self, node: Node, name: str, counts: dict, tiles: Mapping[str, object] | None = None) -> LoweredGroup:
        """`node`'s kernel, lowered, scheduled and verified (raises Unsupported);
        `counts`: the graph's use counts (outputs nobody reads are not
        computed); `tiles`: other GPU tiles than the program's (tuning tries them)."""
        unused = frozenset(i for i, v in enumerate(node.outputs) if not counts.get(v))
        lowered = lower_group(node, name, unused, self.device, cpu=self.cpu,
                              tiles=self.tiles if tiles is None else tiles)
        if self.schedule is not None:
            lowered.kernel = self.schedule(lowered.kernel)
        verify_kernel(lowered.kernel)
        return lowered

    @cached_property
    def plan(self) -> MemoryPlan:
        return plan_memory(self.graph, self.steps)

    def __getstate__(self) -> dict:
        """What pickles (for the compile cache): everything but the memory
        plan, which is keyed by object ids; unpickled, the plan is made again
        on first use (milliseconds)."""
        state = dict(self.__dict__)
        state.pop("plan", None)
        return state

    def segments(self, split: bool = False) -> list[list[Step]]:
        """The steps that run, in order: each run of consecutive kernel steps is
        one segment (a backend makes it one native call), each host step is a
        segment by itself. Views run nothing. `split`: every kernel a segment
        of its own (so that a profiler can time each)."""
        out: list[list[Step]] = []
        for step in self.steps:
            if step.kind == StepKind.HOST:
                out.append([step])
            elif step.kind == StepKind.KERNEL:
                if split or not out or out[-1][0].kind != StepKind.KERNEL:
                    out.append([])
                out[-1].append(step)
        return out

    def count(self, kind: StepKind) -> int:
        return sum(s.kind == kind for s in self.steps)

    def weight_bytes(self) -> int:
        """Bytes of the constant arrays the kernels read (each array once):
        packed copies of weights, and the weights that kernels read unpacked."""
        arrays = {}
        for step in self.steps:
            if step.kind != StepKind.KERNEL:
                continue
            for b in step.lowered.bindings:
                a = b.array if b.role == "const" else (
                    self.plan.constants.get(id(self.bound_value(step, b))) if b.role == "input" else None)
                if a is not None:
                    arrays[np.asarray(a).__array_interface__["data"][0]] = np.asarray(a).nbytes
        return sum(arrays.values())

    @staticmethod
    def bound_value(step: Step, binding):
        """The graph value an input or output parameter of a kernel step binds to."""
        if binding.role == "input":
            return [v for v in step.node.inputs if v is not None][binding.index]
        return step.node.outputs[binding.index]

    def __str__(self) -> str:
        notes = ["// " + self.plan.describe(self.weight_bytes())]
        if self.device == Device.CPU and any(n.op in GEMM_OPS for s in self.steps if s.kind == StepKind.KERNEL
                                             for n in (s.node.body.nodes if s.node.body else [s.node])):
            notes.append("// " + describe_config())
        return "\n\n".join([str(s) for s in self.steps] + notes)


def _kernel_name(node: Node, taken: set[str]) -> str:
    """k_<group name or op>, unique within the program."""
    base = "k_" + "".join(c if c.isalnum() else "_" for c in (node.attrs.get("name") if node.body else node.op.lower()))
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name
