"""The LLVM CPU backend: loop IR -> LLVM IR (llvmlite) -> native code, JIT-compiled.

- codegen.py: each top-level statement of a kernel becomes an LLVM function,
  a *stage* `void stage(i8** buffers, i64 lo, i64 hi)`; a parallel stage runs
  iterations [lo, hi) of its loop.
- program.py: consecutive native steps of the graph form one *program*, a
  function every thread runs with its thread id: it calls the stages in
  order, sharing each out among the threads.
- team.py: the threads, waiting in native code between runs; shares are
  claimed, so a stage needs no barrier. A run costs one native call (ctypes
  releases the GIL), not one per kernel or per thread.
- jit.py: each distinct kernel is a module of its own, and the programs one
  more; each is optimized at O3 for the host CPU (its name and features, so
  AVX2/AVX-512 and FMA are used), in parallel worker processes, and its object
  code is cached on disk under a hash of its loop IR, so a kernel compiled
  once (by any model) is not compiled again.
- here: the executable. It runs the loop program (loops/program.py: kernels,
  views, host steps, the memory plan) over one host arena (backends/host.py).
"""
from __future__ import annotations

import ctypes
import os
import re
from typing import Callable

from ...loops.program import LoopProgram, Step, StepKind
from ..host import HostExecutable
from .program import NativeProgram, compile_kernel, jit_programs, team_of_threads

__all__ = ["LLVMExecutable", "build", "compile_kernel"]


class LLVMExecutable(HostExecutable):
    """The loop program's kernels compiled by LLVM: each run of consecutive
    kernel steps is one native program (see `emit_program`), run by a team of
    threads (see team.py), so a run makes one native call per program plus one
    per host step."""

    def __init__(self, program: LoopProgram, threads: int | None = None, split: bool = False):
        self.threads = threads or os.cpu_count() or 1
        super().__init__(program, self._compile, split)

    def _compile(self, segments: list[list[Step]]) -> list[Callable[[], None]]:
        kernels = [[st.lowered.kernel for st in seg] for seg in segments]
        self.jit = jit_programs(kernels)
        self.team = team_of_threads(self.jit, self.threads, kernels)
        calls, self.programs, self.keepalive = [], [], []
        for i, seg in enumerate(segments):
            arrays = [[self.arena.buffer(st, b) for b in st.lowered.bindings] for st in seg]
            ptrs = [(ctypes.c_void_p * len(a))(*[x.ctypes.data for x in a]) for a in arrays]
            tables = (ctypes.c_void_p * len(ptrs))(*[ctypes.addressof(t) for t in ptrs])
            self.programs.append(NativeProgram(self.jit, f"program{i}", kernels[i], self.team))
            calls.append(self.programs[-1].bind(tables))
            self.keepalive.append((tables, ptrs, arrays))  # what the call's addresses point at
        return calls

    def compile_summary(self) -> str:
        """What --time-passes says of the llvm stage: modules compiled, and loaded from the cache."""
        return self.jit.summary()

    def sleeps(self) -> int:
        """How often one of its threads has slept (between runs or waiting for a stage, see team.py) so far."""
        return self.team.sleeps if self.team is not None else 0

    def emit(self, stage: str) -> str:
        """The modules after O3 ('llvm') or their machine code ('asm'): each
        kernel's module, its functions named after the first kernel it serves
        and the first preceded by a comment naming the graph nodes that kernel
        computes; then the programs."""
        texts, comment = (self.jit.optimized(), ";") if stage == "llvm" else (self.jit.asm(), "#")
        names, text = self.jit.names, "\n".join(texts)
        if names:  # (a model of views only has no kernel modules)
            text = re.sub("|".join(map(re.escape, names)), lambda m: names[m.group(0)], text)
        computes = {st.lowered.kernel.name: st.computes() for seg in self.segments
                    if seg[0].kind == StepKind.KERNEL for st in seg}
        pattern = r"^define [^@\n]*@(\w+)_s0\(" if stage == "llvm" else r"^(\w+)_s0:"

        def note(m: re.Match) -> str:
            what = computes.get(m.group(1))
            return f"{comment} computes {what}\n{m.group(0)}" if what else m.group(0)
        return re.sub(pattern, note, text, flags=re.M)


def build(program: LoopProgram, threads: int | None = None, split: bool = False) -> LLVMExecutable:
    """`split`: one native call per kernel (for the profiler), instead of one per run of kernels."""
    return LLVMExecutable(program, threads, split)
