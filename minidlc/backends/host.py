"""What the CPU backends share: host memory for a loop program, and the
executable that runs its segments.

`Arena` hands out the arrays a kernel parameter binds to (a typed, flat
view of the arena, or a weight); `HostArena` keeps the arena in one NumPy
byte array (the cuda backend's `DeviceArena`, in device memory). `HostExecutable` copies the inputs in, runs each
segment (a backend's compiled run of kernels, or a host step on NumPy), and
copies the outputs out; a backend only says how a run of kernels becomes
one callable.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from ..ir import DTYPES, Value
from ..ir.interpreter import evaluate_node
from ..loops.ir import Kernel
from ..loops.lower import Binding
from ..loops.plan import ALIGN
from ..loops.program import LoopProgram, Step, StepKind


class Arena:
    """The memory plan's arena in some memory (host or device), and the flat
    arrays kernel parameters bind to. A subclass says how to view `nbytes` at
    an offset of its memory as an array, and where a weight lives."""

    def __init__(self, program: LoopProgram):
        self.plan = program.plan
        self.flags: list[tuple[object, Step, str]] = []  # each kernel's check flag, its step, what it means

    def region(self, offset: int, nbytes: int, dtype: np.dtype):
        raise NotImplementedError

    def kernel_dtype(self, dtype: np.dtype) -> np.dtype:
        """The dtype kernels see a buffer of `dtype` as (`region` and `constant` give that)."""
        return dtype

    def constant(self, a: np.ndarray):
        raise NotImplementedError

    def flat(self, a):
        return a.reshape(-1)

    def new_flag(self):
        """A zeroed one-element i32 array for a check flag."""
        return np.zeros(1, np.int32)

    def take_flag(self, flag) -> bool:
        """Whether a check flag is set; clears it."""
        raised = bool(flag[0])
        flag[0] = 0
        return raised

    def check_flags(self) -> None:
        """After a run: clear every flag, and raise for the first step (in
        program order) whose kernel found its input invalid (an index out of
        range), naming its node."""
        raised = [(step, message) for flag, step, message in self.flags if self.take_flag(flag)]
        if raised:
            step, message = raised[0]
            raise IndexError(f"{step.node.describe()}: {message}")

    def checked(self, calls: list[Callable[[], None]]) -> None:
        """Run `calls`, then check the flags; a call that raises (a failing host
        step) clears them, so that no stale flag fails the next run."""
        try:
            for call in calls:
                call()
        except BaseException:
            for flag, _, _ in self.flags:
                self.take_flag(flag)
            raise
        if self.flags:
            self.check_flags()

    def read(self, v: Value) -> np.ndarray:
        """Value `v` as a host array (on the host, the arena's own memory:
        copy it to keep it)."""
        raise NotImplementedError

    def write(self, v: Value, a) -> None:
        """Set value `v` (its place in the arena) from host data `a`, cast to its dtype."""
        raise NotImplementedError

    def array(self, v: Value):
        """The array holding value `v`: its place in the arena, or the weight itself."""
        offset = self.plan.offset(v)
        if offset is None:
            return self.constant(self.plan.constants[id(v)])
        return self.region(offset, v.type.nbytes, v.type.np_dtype).reshape(v.type.shape)

    def buffer(self, step: Step, binding: Binding):
        """The flat array a kernel parameter binds to for this step (C-contiguous,
        of the parameter's dtype and size; empty for an empty tensor, whose
        parameter still has one element)."""
        p = binding.param
        if binding.role == "const":
            a = self.constant(binding.array)
        elif binding.role == "check":
            a = self.new_flag()
            self.flags.append((a, step, binding.message))
        elif binding.role == "scratch":
            dtype = np.dtype(DTYPES[p.dtype])
            a = self.region(self.plan.scratch_offset(step.node, p.name), p.size * dtype.itemsize, dtype)
        else:
            a = self.array(LoopProgram.bound_value(step, binding))
        a = self.flat(a)
        assert a.dtype == self.kernel_dtype(DTYPES[p.dtype]) and (a.size >= p.size or a.size == 0), \
            (step.node.describe(), p)
        return a


class HostArena(Arena):
    """The arena as one NumPy byte array (weights stay where they are)."""

    def __init__(self, program: LoopProgram):
        super().__init__(program)
        self.memory = np.zeros(max(self.plan.size, 1) + ALIGN, np.uint8)
        self.base = (-self.memory.ctypes.data) % ALIGN  # align the arena itself

    def region(self, offset: int, nbytes: int, dtype: np.dtype) -> np.ndarray:
        start = self.base + offset
        return self.memory[start:start + nbytes].view(dtype)

    def constant(self, a: np.ndarray) -> np.ndarray:
        return a

    def flat(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a).reshape(-1)

    def read(self, v: Value) -> np.ndarray:
        return self.array(v)

    def write(self, v: Value, a) -> None:
        dst = self.array(v)
        np.copyto(dst, np.asarray(a).reshape(dst.shape), casting="unsafe")


def host_step(arena: Arena, step: Step) -> Callable[[], None]:
    """Runs a node without a lowering on its NumPy reference implementation,
    reading its inputs from the arena and writing its outputs there."""
    node = step.node

    def run_on_host():
        outs = evaluate_node(node, [None if v is None else arena.read(v) for v in node.inputs])
        for v, a in zip(node.outputs, outs):
            arena.write(v, a)
    return run_on_host


class HostExecutable:
    """A loop program bound once to one host arena. Runs copy the inputs in and
    the outputs out, so results never alias the arena; runs from several
    Python threads take turns (they share the arena)."""

    def __init__(self, program: LoopProgram, compile_kernels: Callable[[list[list[Step]]], list[Callable[[], None]]],
                 split: bool = False):
        """`compile_kernels(segments)` turns each run of kernel steps into one
        callable; with `split`, each kernel (see `time_steps`)."""
        self.program = program
        self.graph = program.graph
        self.arena = HostArena(program)
        self.segments = program.segments(split)
        native = iter(compile_kernels([seg for seg in self.segments if seg[0].kind == StepKind.KERNEL]))
        self.calls = [host_step(self.arena, seg[0]) if seg[0].kind == StepKind.HOST else next(native)
                      for seg in self.segments]
        self.lock = threading.Lock()
        # made once (the arena never moves): right after the kernels, which evict it
        # from the caches, each Python step costs microseconds
        self.input_arrays = [self.arena.array(v) for v in self.graph.inputs]
        self.output_arrays = [self.arena.read(v) for v in self.graph.outputs]

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        with self.lock:
            self._feed(arrays)
            self.arena.checked(self.calls)
            return [a.copy() for a in self.output_arrays]

    def time_steps(self, arrays: list[np.ndarray], repeat: int) -> list[tuple[list[Step], float]]:
        """Each segment (each kernel, when built with `split`) with its median
        time in seconds over `repeat` runs after a warm-up run."""
        with self.lock:
            self._feed(arrays)
            times: list[list[float]] = [[] for _ in self.calls]
            for r in range(repeat + 1):
                for k, call in enumerate(self.calls):
                    start = time.perf_counter()
                    call()
                    if r:
                        times[k].append(time.perf_counter() - start)
                self.arena.check_flags()  # the timings of a run on invalid indices mean nothing
            return [(seg, float(np.median(t))) for seg, t in zip(self.segments, times)]

    def _feed(self, arrays: list[np.ndarray]) -> None:
        for dst, a in zip(self.input_arrays, arrays):
            dst[...] = a  # (check_inputs gave each the input's shape and dtype)


def check_kernel_arrays(kernel: Kernel, arrays: list[np.ndarray]) -> None:
    """Before a kernel runs by itself on arrays the caller made (the tests, the
    GEMM ladder): each must be a C-contiguous array of its parameter's dtype,
    with at least its size."""
    if len(arrays) != len(kernel.params):
        raise ValueError(f"kernel {kernel.name} takes {len(kernel.params)} arrays, got {len(arrays)}")
    for p, a in zip(kernel.params, arrays):
        if a.dtype != DTYPES[p.dtype] or a.size < p.size or not a.flags.c_contiguous:
            raise ValueError(f"kernel {kernel.name}: parameter {p.name} wants {p.size} contiguous {p.dtype} "
                             f"elements, got {a.dtype}{list(a.shape)}")
