"""The memory plan: every intermediate tensor gets an offset in one arena,
and tensors whose lifetimes do not overlap share memory.

Lifetimes are measured in steps (one step per group, in execution order): a
value lives from the step that writes it to the last step that reads it
(graph inputs from the start, graph outputs to the end). Views (Reshape and
friends, contiguous slices) share their source's storage and extend its lifetime;
the inputs of an in-place concat live in its output's storage, at their
offsets, so its lifetime starts with the first of them. Scratch
buffers of a kernel live during that kernel's step only. Offsets are placed
first-fit against the buffers whose lifetimes overlap, 64-byte aligned.

The plan is offsets only; allocating the arena is each backend's job.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import DTYPES, Graph, Value

ALIGN = 64


@dataclass
class Slot:
    size: int
    start: int  # first step that writes it
    end: int    # last step that reads it
    offset: int = 0


class MemoryPlan:
    """Offsets only: where each value and scratch buffer lives in one arena of
    `size` bytes. A backend allocates the arena (host memory, device memory)
    and turns offsets into its own pointers or arrays."""

    def __init__(self, slots: dict, roots: dict, offsets: dict, constants: dict, scratch: dict):
        self.slots = slots            # key -> Slot (key: id(root value) or (id(node), param name))
        self.roots = roots            # id(value) -> key of the storage it lives in
        self.offsets = offsets        # id(value) -> its byte offset in that storage (views of slices)
        self.constants = constants    # id(value) -> array, for weights (and views of them)
        self.scratch = scratch        # (id(node), param name) -> key
        self.size = max((s.offset + s.size for s in slots.values()), default=0)

    def offset(self, v: Value) -> int | None:
        """Where value `v` starts in the arena (its storage's slot, plus its
        offset there for a slice view); None for a constant, which lives outside."""
        if id(v) in self.constants:
            return None
        return self.slots[self.roots[id(v)]].offset + self.offsets.get(id(v), 0)

    def scratch_offset(self, node, param_name: str) -> int:
        """Where the scratch buffer `param_name` of `node`'s kernel starts in the arena."""
        return self.slots[self.scratch[(id(node), param_name)]].offset

    def lower_bound(self) -> int:
        """The arena no plan can beat: the largest total size of buffers alive at one step."""
        steps = {t for s in self.slots.values() for t in (s.start, s.end)}
        return max((sum(s.size for s in self.slots.values() if s.start <= t <= s.end) for t in steps), default=0)

    def describe(self, weight_bytes: int) -> str:
        total = sum(s.size for s in self.slots.values())
        bound = self.lower_bound()
        return (f"memory plan: one arena of {self.size} bytes for {len(self.slots)} buffers "
                f"({total} bytes without reuse; a perfect plan needs {bound}, "
                f"so the arena is {self.size / max(bound, 1):.2f}x that); weights: {weight_bytes} bytes")


def plan_memory(graph: Graph, steps: list) -> MemoryPlan:
    """Offsets for every value the `steps` (program.Step: a node, the view
    offset of a view, the scratch parameters of a kernel) write, reusing memory by liveness."""
    constants = {id(n.output): n.attrs["value"] for n in graph.nodes if n.op == "Constant"}
    roots: dict[int, object] = {}
    offsets: dict[int, int] = {}
    slots: dict[object, Slot] = {}
    scratch: dict = {}
    last = len(steps) + 1
    into = {id(v): (step.node.outputs[0], offset * v.type.np_dtype.itemsize)  # in-place concat inputs
            for step in steps if step.join_offsets for v, offset in zip(step.node.inputs, step.join_offsets)}

    def define(v: Value, step: int):
        root, offset = v, 0
        while id(root) in into:  # a concat input, maybe of a concat that is another's input
            root, more = into[id(root)]
            offset += more
        roots[id(v)] = id(root)
        if offset:
            offsets[id(v)] = offset
        if id(root) not in slots:  # the first value stored in it
            slots[id(root)] = Slot(_aligned(root.type.nbytes), step, step)

    def use(v: Value | None, step: int):
        if v is not None and id(v) not in constants:
            slot = slots[roots[id(v)]]
            slot.end = max(slot.end, step)

    for v in graph.inputs:
        define(v, 0)
    for i, step in enumerate(steps, start=1):
        node = step.node
        for v in node.inputs:
            use(v, i)
        if step.view_offset is not None and id(node.inputs[0]) not in constants:
            src = node.inputs[0]
            roots[id(node.output)] = roots[id(src)]
            offsets[id(node.output)] = offsets.get(id(src), 0) + step.view_offset * src.type.np_dtype.itemsize
        elif step.view_offset is not None:
            src, start = np.asarray(constants[id(node.inputs[0])]).ravel(), step.view_offset
            constants[id(node.output)] = src[start:start + node.output.type.numel].reshape(node.output.type.shape)
        else:
            for v in node.outputs:
                define(v, i)
        for p in step.scratch_params():
            key = (id(node), p.name)
            scratch[key] = key
            slots[key] = Slot(_aligned(p.size * np.dtype(DTYPES[p.dtype]).itemsize), i, i)
    for v in graph.outputs:
        if id(v) not in constants:
            slots[roots[id(v)]].end = last
    _place(list(slots.values()))
    return MemoryPlan(slots, roots, offsets, constants, scratch)


def _aligned(n: int) -> int:
    return max(ALIGN, -(-n // ALIGN) * ALIGN)


def _place(slots: list[Slot]) -> None:
    """First-fit offsets: each slot avoids the placed slots whose lifetimes overlap."""
    placed: list[Slot] = []
    for s in sorted(slots, key=lambda s: (-s.size, s.start)):
        busy = sorted((p.offset, p.offset + p.size) for p in placed if p.start <= s.end and s.start <= p.end)
        offset = 0
        for lo, hi in busy:
            if offset + s.size <= lo:
                break
            offset = max(offset, hi)
        s.offset = offset
        placed.append(s)


