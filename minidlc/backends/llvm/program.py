"""Native programs: one entry point for a run of kernels.

Every thread calls the same function (SPMD, as in an OpenMP parallel region) with
its thread id. Each stage is shared out in claimed shares (a parallel stage's
loop cut into ranges [lo, hi), a serial stage one share) and starts when the
stage before has completed (team.py: no barriers, so a late thread holds
nobody up). The threads are a team that waits in native code between runs,
so a whole run costs one Python call, not one per kernel or per thread.
"""
from __future__ import annotations

import ctypes
import hashlib
import threading
from dataclasses import replace
from functools import partial
from typing import Callable

import llvmlite.ir as ir
import numpy as np

from ...loops.ir import Kernel
from ...loops.transform import canonical_kernel
from ...loops.verify import verify_kernel
from ..host import check_kernel_arrays
from .codegen import STAGE, KernelCodegen, stage_extents, stage_name
from .jit import JitModule, Unit
from .team import PROGRAM, Team, emit_team

_I64 = ir.IntType(64)


def emit_program(module: ir.Module, name: str, stages: list[tuple[str, int | None, int]]) -> None:
    """`void name(i8*** tables, i64 tid, i64 nthreads, i64* team_state, i64 run)`
    running `stages` -- (stage function, parallel extent or None, table index)
    -- in order. On one thread it calls them in turn; on a team, each through
    `minidlc_stage` (team.py), which waits for the stage before and shares
    the stage out, and thread 0 returns once the last stage has completed."""
    share = emit_team(module)
    fn = ir.Function(module, PROGRAM, name)
    tables, tid, nthreads, state, run = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero = ir.Constant(_I64, 0)
    with b.if_else(b.icmp_signed(">", nthreads, ir.Constant(_I64, 1))) as (team, alone):
        with team:
            for k, (stage, extent, table) in enumerate(stages):
                ptrs = b.load(b.gep(tables, [ir.Constant(_I64, table)]))
                b.call(share, [state, ir.Constant(_I64, k), tid, nthreads, run, module.globals[stage], ptrs,
                               ir.Constant(_I64, -1 if extent is None else extent)])
            with b.if_then(b.icmp_signed("==", tid, zero)):  # the caller returns when all is done
                b.call(module.globals["minidlc_await"], [state, ir.Constant(_I64, len(stages) - 1), nthreads, run])
        with alone:
            for stage, extent, table in stages:
                ptrs = b.load(b.gep(tables, [ir.Constant(_I64, table)]))
                b.call(module.globals[stage], [ptrs, zero, ir.Constant(_I64, extent or 0)])
    b.ret_void()


class NativeProgram:
    """A compiled program, run by a team of threads (see team.py) when it has a
    parallel stage, else by the caller alone: waking threads costs more than
    serial work gains from them."""

    def __init__(self, jit: JitModule, name: str, kernels: list[Kernel], team: Team | None):
        self.address = jit.engine.get_function_address(name)
        self.team = team if is_parallel(kernels) else None
        if self.team is None:
            self._alone = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                           ctypes.c_int64)(self.address)

    @property
    def threads(self) -> int:
        return self.team.threads if self.team is not None else 1

    def bind(self, tables: ctypes.Array) -> Callable[[], None]:
        """The call that runs the program on `tables`, its arguments worked out
        now: Python right after a run is slow (the kernels have evicted it from
        the caches), so a run should do no more of it than the call itself."""
        if self.team is None:
            return partial(self._alone, ctypes.addressof(tables), 0, 1, None, 0)  # one thread needs no team state
        return self.team.bind(self.address, tables)


def is_parallel(kernels: list[Kernel]) -> bool:
    return any(e is not None for k in kernels for e in stage_extents(k))


def stage_count(kernels: list[Kernel]) -> int:
    return sum(len(stage_extents(k)) for k in kernels)


def team_of_threads(jit: JitModule, threads: int, programs: list[list[Kernel]]) -> Team | None:
    """A team for `programs`, if it would have more than one thread and work to share."""
    if threads > 1 and any(is_parallel(p) for p in programs):
        return Team(jit, threads, max(stage_count(p) for p in programs))
    return None


def jit_programs(programs: list[list[Kernel]]) -> JitModule:
    """Compile `program0`, `program1`, ...: program i runs the kernels of
    `programs[i]` in order, kernel j reading its buffers from pointer table j.

    Each distinct kernel is a module of its own, named by a hash of its loop
    IR up to buffer names (`canonical_kernel`): kernels that differ only in
    those share one, and a model that has a kernel some other model had
    finds its object code in the cache. The programs, which call the kernels'
    stage functions, are one more module; the JIT's `names` map each kernel
    module's symbol to the name of the first kernel it serves (for printing)."""
    symbols: dict[str, str] = {}  # canonical text -> its symbol
    stages: dict[str, list[tuple[str, int | None]]] = {}  # symbol -> (stage function, parallel extent)
    names: dict[str, str] = {}
    units = []
    for k in (k for kernels in programs for k in kernels):
        if k.canonical in symbols:
            continue
        symbol = symbols[k.canonical] = "k" + hashlib.sha256(k.canonical.encode()).hexdigest()[:16]
        names[symbol] = k.name
        stages[symbol] = [(stage_name(symbol, i), extent) for i, extent in enumerate(stage_extents(k))]
        units.append(Unit(k.canonical, partial(_kernel_module, k, symbol), k.name))

    plan = [[(stage, extent, j) for j, k in enumerate(kernels) for stage, extent in stages[symbols[k.canonical]]]
            for kernels in programs]

    def build() -> ir.Module:
        module = ir.Module(name="programs")
        for stage in {stage for p in plan for stage, _, _ in p}:
            ir.Function(module, STAGE, stage)  # declared here, defined in its kernel's module
        for i, p in enumerate(plan):
            emit_program(module, f"program{i}", p)
        return module
    return JitModule([*units, Unit(repr(plan), build, "the programs")], names)


def _kernel_module(kernel: Kernel, symbol: str) -> ir.Module:
    """The module of `kernel` in canonical form, its functions named after `symbol`."""
    module = ir.Module(name=symbol)
    KernelCodegen(module, replace(canonical_kernel(kernel), name=symbol)).emit()
    return module


def compile_kernel(kernel: Kernel, threads: int = 1):
    """JIT one kernel by itself; returns `run(arrays)`, which checks each array
    against its parameter (dtype, size) and calls the kernel on them in place.
    Used by the tests and the GEMM ladder benchmark."""
    verify_kernel(kernel)
    jit = jit_programs([[kernel]])
    program = NativeProgram(jit, "program0", [kernel], team_of_threads(jit, threads, [[kernel]]))
    lock = threading.Lock()

    def run(arrays: list[np.ndarray]) -> None:
        check_kernel_arrays(kernel, arrays)
        ptrs = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        tables = (ctypes.c_void_p * 1)(ctypes.addressof(ptrs))  # (alive until the call returns)
        with lock:  # the team serves one run at a time
            program.bind(tables)()
    run.jit = jit
    return run
