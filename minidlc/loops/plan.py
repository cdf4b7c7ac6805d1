"""The memory plan: every intermediate tensor gets an offset in one arena,
and tensors whose lifetimes do not overlap share memory.

Lifetimes are measured in steps (one step per group, in execution order): a
value lives from the step that writes it to the last step that reads it
(graph inputs from the start, graph outputs to the end). Views (Reshape and
friends, contiguous slices) share their source's storage and extend its lifetime. Scratch
buffers of a kernel live during that kernel's step only. Offsets are placed
first-fit against the buffers whose lifetimes overlap, 64-byte aligned.
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
    def __init__(self, slots: dict, roots: dict, offsets: dict, constants: dict, scratch: dict):
        self.slots = slots            # key -> Slot (key: id(root value) or (id(node), param name))
        self.roots = roots            # id(value) -> key of the storage it lives in
        self.offsets = offsets        # id(value) -> its byte offset in that storage (views of slices)
        self.constants = constants    # id(value) -> array, for weights
        self.scratch = scratch        # (id(node), param name) -> key
        self.size = max((s.offset + s.size for s in slots.values()), default=0)
        self.arena = np.zeros(max(self.size, 1) + ALIGN, np.uint8)
        base = self.arena.ctypes.data
        self.base = (-base) % ALIGN  # align the arena itself
        self._keep: list[np.ndarray] = []

    def array(self, v: Value) -> np.ndarray:
        """The arena view (or the constant array) holding value `v`."""
        if id(v) in self.constants:
            return self.constants[id(v)]
        start = self._arena_offset(v)
        raw = self.arena[start:start + v.type.nbytes]
        return raw.view(v.type.np_dtype).reshape(v.type.shape)

    def pointer(self, node, binding) -> int:
        """The address a kernel parameter binds to for this node's step."""
        if binding.role == "input":
            v = [x for x in node.inputs if x is not None][binding.index]
            return self._address(v)
        if binding.role == "output":
            return self._address(node.outputs[binding.index])
        if binding.role == "const":
            a = np.ascontiguousarray(binding.array)
            self._keep.append(a)
            return a.ctypes.data
        slot = self.slots[self.scratch[(id(node), binding.param.name)]]
        return self.arena.ctypes.data + self.base + slot.offset

    def _address(self, v: Value) -> int:
        if id(v) in self.constants:
            a = np.ascontiguousarray(self.constants[id(v)])
            self._keep.append(a)
            return a.ctypes.data
        return self.arena.ctypes.data + self._arena_offset(v)

    def _arena_offset(self, v: Value) -> int:
        """Where value `v` starts in the arena: its storage's slot, plus its offset there (a slice view)."""
        return self.base + self.slots[self.roots[id(v)]].offset + self.offsets.get(id(v), 0)

    def lower_bound(self) -> int:
        """The arena no plan can beat: the largest total size of buffers alive at one step."""
        steps = {t for s in self.slots.values() for t in (s.start, s.end)}
        return max((sum(s.size for s in self.slots.values() if s.start <= t <= s.end) for t in steps), default=0)

    def weight_bytes(self) -> int:
        """Bytes of the constant arrays the kernels point at (each array once):
        packed copies of weights, and the weights that kernels read unpacked."""
        return sum({a.ctypes.data: a.nbytes for a in self._keep}.values())

    def describe(self) -> str:
        total = sum(s.size for s in self.slots.values())
        bound = self.lower_bound()
        return (f"memory plan: one arena of {self.size} bytes for {len(self.slots)} buffers "
                f"({total} bytes without reuse; a perfect plan needs {bound}, "
                f"so the arena is {self.size / max(bound, 1):.2f}x that); weights: {self.weight_bytes()} bytes")


def plan_memory(graph: Graph, steps) -> MemoryPlan:
    constants = {id(n.output): n.attrs["value"] for n in graph.nodes if n.op == "Constant"}
    roots: dict[int, object] = {}
    offsets: dict[int, int] = {}
    slots: dict[object, Slot] = {}
    scratch: dict = {}
    last = len(steps) + 1

    def define(v: Value, step: int):
        roots[id(v)] = id(v)
        slots[id(v)] = Slot(_aligned(v.type.nbytes), step, step)

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
        if step.kind == "view" and id(node.inputs[0]) not in constants:
            src = node.inputs[0]
            roots[id(node.output)] = roots[id(src)]
            offsets[id(node.output)] = offsets.get(id(src), 0) + step.view_offset * src.type.np_dtype.itemsize
        elif step.kind == "view":
            src, start = np.asarray(constants[id(node.inputs[0])]).ravel(), step.view_offset
            constants[id(node.output)] = src[start:start + node.output.type.numel].reshape(node.output.type.shape)
        else:
            for v in node.outputs:
                define(v, i)
        if step.kind == "native":
            for b in step.lowered.bindings:
                if b.role == "scratch":
                    key = (id(node), b.param.name)
                    scratch[key] = key
                    slots[key] = Slot(_aligned(b.param.size * np.dtype(DTYPES[b.param.dtype]).itemsize), i, i)
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


