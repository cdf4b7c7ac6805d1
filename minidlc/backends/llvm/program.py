"""Native programs: one entry point for a run of kernels.

Every thread calls the same function (SPMD, as in an OpenMP parallel region) with
its thread id. A parallel stage runs the thread's share [lo, hi) of its loop; a
serial stage runs on thread 0 alone; a barrier separates a stage from the next
one whenever another thread may read what it wrote. The threads are a team
(team.py) that waits in native code between runs, so a whole run costs one
Python call, not one per kernel or per thread.
"""
from __future__ import annotations

import ctypes
import threading

import llvmlite.ir as ir
import numpy as np

from ...loops.ir import Kernel
from ...loops.verify import verify_kernel
from ..host import check_kernel_arrays
from .codegen import KernelCodegen, stage_extents
from .jit import JitModule
from .team import PROGRAM, Team, emit_team

_I64 = ir.IntType(64)


def emit_program(module: ir.Module, name: str, stages: list[tuple[str, int | None, int]]) -> None:
    """`void name(i8*** tables, i64 tid, i64 nthreads, i64* team_state)` running
    `stages` -- (stage function, parallel extent or None, table index) -- in order."""
    barrier = emit_team(module)
    fn = ir.Function(module, PROGRAM, name)
    tables, tid, nthreads, state = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero, one = ir.Constant(_I64, 0), ir.Constant(_I64, 1)
    is_first = b.icmp_signed("==", tid, zero)
    many = b.icmp_signed(">", nthreads, one)
    for k, (stage, extent, table) in enumerate(stages):
        ptrs = b.load(b.gep(tables, [ir.Constant(_I64, table)]))
        callee = module.globals[stage]
        if extent is None:
            with b.if_then(is_first):
                b.call(callee, [ptrs, zero, zero])
        else:
            chunk = b.sdiv(b.add(ir.Constant(_I64, extent), b.sub(nthreads, one)), nthreads)
            lo = b.mul(tid, chunk)
            hi = b.select(b.icmp_signed("<", b.add(lo, chunk), ir.Constant(_I64, extent)),
                          b.add(lo, chunk), ir.Constant(_I64, extent))
            with b.if_then(b.icmp_signed("<", lo, hi)):
                b.call(callee, [ptrs, lo, hi])
        # thread 0 may run serial stages back to back; anything else waits for everyone
        if k + 1 < len(stages) and not (extent is None and stages[k + 1][1] is None):
            with b.if_then(many):
                b.call(barrier, [state, nthreads])
    b.ret_void()


class NativeProgram:
    """A compiled program, run by a team of threads (see team.py) when it has a
    parallel stage, else by the caller alone: waking threads costs more than
    serial work gains from them."""

    def __init__(self, jit: JitModule, name: str, kernels: list[Kernel], team: Team | None):
        self.address = jit.engine.get_function_address(name)
        self.team = team if is_parallel(kernels) else None
        if self.team is None:
            self._alone = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)(
                self.address)

    @property
    def threads(self) -> int:
        return self.team.threads if self.team is not None else 1

    def __call__(self, tables) -> None:
        if self.team is None:
            self._alone(ctypes.addressof(tables), 0, 1, None)  # one thread never reaches a barrier
        else:
            self.team.run(self.address, tables)


def is_parallel(kernels: list[Kernel]) -> bool:
    return any(e is not None for k in kernels for e in stage_extents(k))


def team_of_threads(jit: JitModule, threads: int, programs: list[list[Kernel]]) -> Team | None:
    """A team for `programs`, if it would have more than one thread and work to share."""
    return Team(jit, threads) if threads > 1 and any(is_parallel(p) for p in programs) else None


def jit_programs(name: str, programs: list[list[Kernel]]) -> JitModule:
    """Compile `program0`, `program1`, ...: program i runs the kernels of
    `programs[i]` in order, kernel j reading its buffers from pointer table j."""
    def build() -> ir.Module:
        module = ir.Module(name=name)
        for i, kernels in enumerate(programs):
            stages = [(stage, extent, j) for j, k in enumerate(kernels)
                      for stage, extent in KernelCodegen(module, k).emit()]
            emit_program(module, f"program{i}", stages)
        return module
    return JitModule(build, "\n".join(f"program{i}: {kernels!r}" for i, kernels in enumerate(programs)))


def compile_kernel(kernel: Kernel, threads: int = 1):
    """JIT one kernel by itself; returns `run(arrays)`, which checks each array
    against its parameter (dtype, size) and calls the kernel on them in place.
    Used by the tests and the GEMM ladder benchmark."""
    verify_kernel(kernel)
    jit = jit_programs(kernel.name, [[kernel]])
    program = NativeProgram(jit, "program0", [kernel], team_of_threads(jit, threads, [[kernel]]))
    lock = threading.Lock()

    def run(arrays: list[np.ndarray]) -> None:
        check_kernel_arrays(kernel, arrays)
        ptrs = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        with lock:  # the team serves one run at a time
            program((ctypes.c_void_p * 1)(ctypes.addressof(ptrs)))
    run.jit = jit
    return run
