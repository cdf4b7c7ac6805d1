"""The LLVM CPU backend: loop IR -> LLVM IR (llvmlite) -> native code, JIT-compiled.

- codegen.py: each top-level statement of a kernel becomes an LLVM function,
  a *stage* `void stage(i8** buffers, i64 lo, i64 hi)`; a parallel stage runs
  iterations [lo, hi) of its loop.
- program.py: consecutive native steps of the graph form one *program*, a
  function every thread runs with its thread id: it calls the stages in
  order, splits parallel ones by thread, and puts a barrier between stages.
  So a run costs one native call per thread (ctypes releases the GIL), not
  one per kernel.
- jit.py: the module is optimized at O3 for the host CPU (its name and
  features, so AVX2/AVX-512 and FMA are used); the object code is cached on
  disk under a hash of the loop IR, so compiling a model again skips LLVM.
- here: the executable. Groups are planned into steps (native kernels, views,
  NumPy fallbacks for groups without a native lowering, which `emit("loops")`
  lists) over one memory arena.
"""
from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

import numpy as np

from ...ir import Graph, Node
from ...ir.interpreter import evaluate_node
from ...loops.lower import LoweredGroup, Unsupported, lower_group
from ...loops.plan import MemoryPlan, plan_memory
from ...loops.printer import print_kernel
from ...loops.rules import view_offset
from ...loops.schedule import default_schedule
from ...loops.verify import verify_kernel
from .program import NativeProgram, compile_kernel, jit_programs, pool_of_threads

__all__ = ["LLVMExecutable", "build", "compile_kernel"]


@dataclass
class Step:
    """One group of the graph: a native kernel, a view, or a NumPy fallback."""

    node: Node
    kind: str  # "native" | "view" | "numpy"
    lowered: LoweredGroup | None = None
    reason: str = ""
    view_offset: int = 0  # a view's first element within its input


def _plan_steps(graph: Graph, schedule: bool) -> list[Step]:
    steps, names = [], set()
    counts = graph.use_counts()
    for node in graph.nodes:
        if node.op == "Constant":
            continue
        offset = view_offset(node)
        if offset is not None:
            steps.append(Step(node, "view", view_offset=offset))
            continue
        base = "k_" + "".join(c if c.isalnum() else "_" for c in (node.attrs.get("name") if node.body else node.op.lower()))
        name, i = base, 1
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names.add(name)
        try:
            lowered = lower_group(node, name, frozenset(i for i, v in enumerate(node.outputs) if not counts.get(v)))
            if schedule:
                lowered.kernel = default_schedule(lowered.kernel)
            verify_kernel(lowered.kernel)
            steps.append(Step(node, "native", lowered))
        except Unsupported as e:
            steps.append(Step(node, "numpy", reason=str(e)))
    return steps


@dataclass
class NativeCall:
    """One program bound to its pointer tables (table j: the buffers of kernel j)."""

    program: NativeProgram
    tables: ctypes.Array
    keepalive: list  # the per-kernel pointer arrays the tables point into

    def __call__(self) -> None:
        self.program(self.tables)


class LLVMExecutable:
    """The compiled graph: its steps (native kernels, views, NumPy fallbacks)
    bound once to one memory arena. Each run of consecutive native steps is one
    native program (see `emit_program`), so a run makes one native call per
    thread plus one per fallback. Runs copy the inputs in and the outputs out,
    so results never alias the arena; runs from several Python threads take
    turns (they share the arena)."""

    def __init__(self, graph: Graph, threads: int | None = None, schedule: bool = True):
        self.graph = graph
        self.threads = threads or os.cpu_count() or 1
        self.steps = _plan_steps(graph, schedule)
        self.plan: MemoryPlan = plan_memory(graph, self.steps)
        pool = pool_of_threads(self.threads)
        segments: list[list] = []  # each: the native steps of one program, or one fallback step
        for step in self.steps:
            if step.kind == "numpy":
                segments.append([step])
            elif step.kind == "native":
                if not segments or segments[-1][0].kind != "native":
                    segments.append([])
                segments[-1].append(step)
        native = [seg for seg in segments if seg[0].kind == "native"]
        kernels = [[st.lowered.kernel for st in seg] for seg in native]
        self.jit = jit_programs(graph.name, kernels)
        self.calls = []
        programs = ((f"program{i}", ks) for i, ks in enumerate(kernels))
        for seg in segments:
            if seg[0].kind == "numpy":
                self.calls.append(self._numpy_call(seg[0]))
            else:
                ptrs = [(ctypes.c_void_p * len(st.lowered.bindings))(
                    *[self.plan.pointer(st.node, bnd) for bnd in st.lowered.bindings]) for st in seg]
                tables = (ctypes.c_void_p * len(ptrs))(*[ctypes.addressof(t) for t in ptrs])
                program = NativeProgram(self.jit, *next(programs), pool, self.threads)
                self.calls.append(NativeCall(program, tables, ptrs))
        self.lock = threading.Lock()  # one run at a time: runs share the arena and the barriers

    def _numpy_call(self, step: Step):
        """Runs a group without a native lowering on its NumPy reference implementation."""
        ins = [None if v is None else self.plan.array(v) for v in step.node.inputs]
        outs = [self.plan.array(v) for v in step.node.outputs]

        def run_numpy():
            for dst, src in zip(outs, evaluate_node(step.node, ins)):
                np.copyto(dst, np.asarray(src).reshape(dst.shape), casting="unsafe")
        return run_numpy

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        with self.lock:
            for v, a in zip(self.graph.inputs, arrays):
                np.copyto(self.plan.array(v), a)
            for call in self.calls:
                call()
            return [self.plan.array(v).copy() for v in self.graph.outputs]

    def emit(self, stage: str) -> str:
        if stage == "loops":
            parts = []
            for s in self.steps:
                if s.kind == "native":
                    parts.append(print_kernel(s.lowered.kernel))
                elif s.kind == "view":
                    parts.append(f"// {s.node.describe()}: a view of %{s.node.inputs[0].name}, no copy")
                else:
                    parts.append(f"// {s.node.describe()}: runs on NumPy (fallback: {s.reason})")
            parts.append("// " + self.plan.describe())
            return "\n\n".join(parts)
        if stage == "llvm":
            return self.jit.llvm_ir()
        if stage == "asm":
            return self.jit.asm()
        raise ValueError(f"the llvm backend emits 'loops', 'llvm' or 'asm', not {stage!r}")


def build(graph: Graph, threads: int | None = None, schedule: bool = True, **options) -> LLVMExecutable:
    if options:
        raise TypeError(f"unknown llvm backend option(s): {sorted(options)}; it takes threads=, schedule=")
    return LLVMExecutable(graph, threads, schedule)
