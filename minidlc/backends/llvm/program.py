"""Native programs: one entry point for a run of kernels.

Every thread calls the same function (SPMD, as in an OpenMP parallel region) with
its thread id. A parallel stage runs the thread's share [lo, hi) of its loop; a
serial stage runs on thread 0 alone; a barrier (spin, then sleep on a futex)
separates a stage from the next one whenever another thread may read what it wrote. So a whole run costs one
Python call per thread, not one per kernel, and threads never return to Python.
"""
from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import llvmlite.binding as llvm
import llvmlite.ir as ir

from ...loops.ir import Kernel
from ...loops.verify import verify_kernel
from ..host import check_kernel_arrays
from .codegen import I8_PTR, KernelCodegen, stage_extents
from .jit import JitModule

_I64 = ir.IntType(64)
_TABLES = I8_PTR.as_pointer().as_pointer()  # i8*** : one pointer table per step
_PROGRAM = ir.FunctionType(ir.VoidType(), [_TABLES, _I64, _I64, _I64.as_pointer()])
_I32 = ir.IntType(32)
# A waiting thread spins this many times, then sleeps; read at run time from the
# barrier's state, so changing it needs no recompile. Fewer spins cost an idle
# machine latency (a sleeper wakes late after a long serial stage); many more
# cost a busy one (benchmarks/bench_contention.py measures both).
SPINS_BEFORE_SLEEP = int(os.environ.get("MINIDLC_BARRIER_SPINS", "100000"))
# The futex system call number, by (architecture, OS) of the host; elsewhere a
# waiting thread yields its core with sched_yield instead of sleeping.
FUTEX_SYSCALL = {("x86_64", "linux"): 202, ("aarch64", "linux"): 98}
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129
# The barrier's state: i64 slots (64 bytes in all, one cache line).
ARRIVED, GENERATION, SLEEPERS, SLEEPS, SPIN_LIMIT = 0, 1, 2, 3, 4


def futex_syscall() -> int | None:
    arch, _, rest = llvm.get_process_triple().partition("-")
    return next((nr for (a, os_), nr in FUTEX_SYSCALL.items() if a == arch and os_ in rest), None)


def _emit_barrier(module: ir.Module) -> ir.Function:
    """`void barrier(i64* state, i64 n)`. state[ARRIVED] counts arrivals; the
    last thread to arrive resets it and bumps the 32-bit generation. The others
    spin on the generation for state[SPIN_LIMIT] rounds, then sleep on it with
    a futex, so that a thread that lost its core to another process does not
    keep the waiting ones busy: they give their cores back. A sleeper counts
    itself in state[SLEEPERS] first, and the last thread wakes the sleepers
    only when there are some (both sequentially consistent, so either the
    waker sees the sleeper or the futex sees the new generation).
    state[SLEEPS] counts the sleeps, for tests and benchmarks."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [_I64.as_pointer(), _I64]), "minidlc_barrier")
    state, n = fn.args
    nr = futex_syscall()
    if nr is None:
        sched_yield = ir.Function(module, ir.FunctionType(_I32, []), "sched_yield")
    else:
        syscall = ir.Function(module, ir.FunctionType(_I64, [_I64], var_arg=True), "syscall")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    slot = lambda i: b.gep(state, [ir.Constant(_I64, i)])  # noqa: E731
    gen_ptr = b.bitcast(slot(GENERATION), _I32.as_pointer())
    null = ir.Constant(I8_PTR, None)

    def futex(op: int, value) -> None:
        b.call(syscall, [ir.Constant(_I64, nr), gen_ptr, ir.Constant(_I64, op), value, null])

    gen = b.load_atomic(gen_ptr, "acquire", 4)
    arrived = b.atomic_rmw("add", slot(ARRIVED), ir.Constant(_I64, 1), "acq_rel")
    last, waiter = fn.append_basic_block("last"), fn.append_basic_block("waiter")
    wait, done = fn.append_basic_block("wait"), fn.append_basic_block("done")
    b.cbranch(b.icmp_signed("==", arrived, b.sub(n, ir.Constant(_I64, 1))), last, waiter)
    b.position_at_end(last)
    b.store_atomic(ir.Constant(_I64, 0), slot(ARRIVED), "monotonic", 8)
    b.atomic_rmw("add", gen_ptr, ir.Constant(_I32, 1), "seq_cst")
    if nr is not None:
        sleepers = b.load_atomic(slot(SLEEPERS), "seq_cst", 8)
        with b.if_then(b.icmp_signed("!=", sleepers, ir.Constant(_I64, 0))):
            futex(FUTEX_WAKE_PRIVATE, ir.Constant(_I64, 2 ** 31 - 1))
    b.ret_void()
    b.position_at_end(waiter)
    limit = b.load(slot(SPIN_LIMIT))
    b.branch(wait)
    b.position_at_end(wait)
    spins = b.phi(_I64)
    spins.add_incoming(ir.Constant(_I64, 0), waiter)
    spin = fn.append_basic_block("spin")
    b.cbranch(b.icmp_signed("!=", b.load_atomic(gen_ptr, "acquire", 4), gen), done, spin)
    b.position_at_end(spin)
    nxt = b.add(spins, ir.Constant(_I64, 1))
    with b.if_then(b.icmp_signed(">", nxt, limit)):
        if nr is None:
            b.call(sched_yield, [])
        else:
            b.atomic_rmw("add", slot(SLEEPERS), ir.Constant(_I64, 1), "seq_cst")
            futex(FUTEX_WAIT_PRIVATE, b.zext(gen, _I64))  # returns at once if the generation moved on
            b.atomic_rmw("sub", slot(SLEEPERS), ir.Constant(_I64, 1), "seq_cst")
            b.atomic_rmw("add", slot(SLEEPS), ir.Constant(_I64, 1), "monotonic")
    spins.add_incoming(nxt, b.block)
    b.branch(wait)
    b.position_at_end(done)
    b.ret_void()
    return fn


def emit_program(module: ir.Module, name: str, stages: list[tuple[str, int | None, int]]) -> None:
    """`void name(i8*** tables, i64 tid, i64 nthreads, i64* barrier)` running
    `stages` -- (stage function, parallel extent or None, table index) -- in order."""
    barrier = module.globals.get("minidlc_barrier") or _emit_barrier(module)
    fn = ir.Function(module, _PROGRAM, name)
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
    """A compiled program and the threads that run it. Thread 0 is the caller;
    ctypes releases the GIL during each native call, so the others run alongside."""

    def __init__(self, jit: JitModule, name: str, kernels: list[Kernel], pool: ThreadPoolExecutor | None,
                 threads: int):
        self.fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)(
            jit.engine.get_function_address(name))
        parallel = any(e is not None for k in kernels for e in stage_extents(k))
        # waking a thread costs tens of microseconds: not worth it for serial work
        self.pool, self.threads = pool, threads if pool is not None and parallel else 1
        self.barrier = np.zeros(8, np.int64)  # see _emit_barrier (and padding to 64 bytes)
        self.barrier[SPIN_LIMIT] = SPINS_BEFORE_SLEEP

    @property
    def sleeps(self) -> int:
        return int(self.barrier[SLEEPS])

    def __call__(self, tables) -> None:
        state = self.barrier.ctypes.data
        rest = [self.pool.submit(self.fn, tables, t, self.threads, state) for t in range(1, self.threads)]
        self.fn(tables, 0, self.threads, state)
        for f in rest:
            f.result()


def pool_of_threads(threads: int) -> ThreadPoolExecutor | None:
    return ThreadPoolExecutor(threads - 1) if threads > 1 else None


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
    program = NativeProgram(jit, "program0", [kernel], pool_of_threads(threads), threads)
    lock = threading.Lock()

    def run(arrays: list[np.ndarray]) -> None:
        check_kernel_arrays(kernel, arrays)
        ptrs = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        with lock:  # the program's barrier serves one run at a time
            program((ctypes.c_void_p * 1)(ctypes.addressof(ptrs)))
    run.jit = jit
    return run
