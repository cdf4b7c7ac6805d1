"""Native programs: one entry point for a run of kernels.

Every thread calls the same function (SPMD, as in an OpenMP parallel region) with
its thread id. A parallel stage runs the thread's share [lo, hi) of its loop; a
serial stage runs on thread 0 alone; a spinning barrier separates a stage from the
next one whenever another thread may read what it wrote. So a whole run costs one
Python call per thread, not one per kernel, and threads never return to Python.
"""
from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import llvmlite.ir as ir

from ...loops.ir import Kernel
from ...loops.verify import verify_kernel
from ..host import check_kernel_arrays
from .codegen import I8_PTR, KernelCodegen, stage_extents
from .jit import JitModule

_I64 = ir.IntType(64)
_TABLES = I8_PTR.as_pointer().as_pointer()  # i8*** : one pointer table per step
_PROGRAM = ir.FunctionType(ir.VoidType(), [_TABLES, _I64, _I64, _I64.as_pointer()])
SPINS_BEFORE_YIELD = 2000


def _emit_barrier(module: ir.Module) -> ir.Function:
    """`void barrier(i64* state, i64 n)`: state[0] counts arrivals, state[1] is the
    generation. The last thread to arrive resets the count and bumps the
    generation; the others spin on the generation (yielding the core after a while)."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [_I64.as_pointer(), _I64]), "minidlc_barrier")
    state, n = fn.args
    sched_yield = ir.Function(module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    gen_ptr = b.gep(state, [ir.Constant(_I64, 1)])
    gen = b.load_atomic(gen_ptr, "acquire", 8)
    arrived = b.atomic_rmw("add", state, ir.Constant(_I64, 1), "acq_rel")
    last, wait, done = fn.append_basic_block("last"), fn.append_basic_block("wait"), fn.append_basic_block("done")
    entry = b.block
    b.cbranch(b.icmp_signed("==", arrived, b.sub(n, ir.Constant(_I64, 1))), last, wait)
    b.position_at_end(last)
    b.store_atomic(ir.Constant(_I64, 0), state, "monotonic", 8)
    b.atomic_rmw("add", gen_ptr, ir.Constant(_I64, 1), "release")
    b.ret_void()
    b.position_at_end(wait)
    spins = b.phi(_I64)
    spins.add_incoming(ir.Constant(_I64, 0), entry)
    spin = fn.append_basic_block("spin")
    b.cbranch(b.icmp_signed("!=", b.load_atomic(gen_ptr, "acquire", 8), gen), done, spin)
    b.position_at_end(spin)
    nxt = b.add(spins, ir.Constant(_I64, 1))
    with b.if_then(b.icmp_signed(">", nxt, ir.Constant(_I64, SPINS_BEFORE_YIELD))):
        b.call(sched_yield, [])
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
        self.barrier = np.zeros(8, np.int64)  # count, generation (and padding: 64 bytes in all)

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
