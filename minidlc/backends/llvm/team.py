"""A team of threads that run native programs together, as in OpenMP.

The workers are Python threads that call into native code once and stay
there: between runs they wait in `minidlc_worker` for the next job, so a run
costs no Python work on the workers and no wait for the GIL. The caller is
thread 0: `minidlc_run` posts the job (program, pointer tables, thread
count), runs its own share, and waits at a last barrier for the others.

All waiting (for a job, at a barrier) is `minidlc_wait`: spin on a 32-bit
word for `state[SPIN_LIMIT]` rounds, then sleep on it with a futex, so that
threads that wait long (between runs, or for a thread that lost its core to
another process) give their cores back. A sleeper counts itself first, and
whoever changes the word wakes the sleepers only when there are some (both
sequentially consistent: either the waker sees the sleeper, or the futex
sees the new value and returns at once). Where there is no futex (not
Linux), a waiting thread yields its core with sched_yield instead.
"""
from __future__ import annotations

import ctypes
import os
import threading
import weakref

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np

from .codegen import I8_PTR

_I64, _I32 = ir.IntType(64), ir.IntType(32)
TABLES = I8_PTR.as_pointer().as_pointer()  # i8*** : one pointer table per kernel
PROGRAM = ir.FunctionType(ir.VoidType(), [TABLES, _I64, _I64, _I64.as_pointer()])  # (tables, tid, n, state)

# A waiting thread spins this many rounds, then sleeps. Read at run time from the
# state, so changing it needs no recompile. Fewer spins cost an idle machine
# (a sleeper wakes late); many more cost a busy one, where a spinning thread
# keeps a core from the thread it waits for (benchmarks/bench_contention.py).
SPINS_BEFORE_SLEEP = int(os.environ.get("MINIDLC_BARRIER_SPINS", "100000"))
# The futex system call number, by (architecture, OS) of the host.
FUTEX_SYSCALL = {("x86_64", "linux"): 202, ("aarch64", "linux"): 98}
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129

# The team's state, i64 slots. The barrier and the job each own a cache line.
ARRIVED, GENERATION, SLEEPERS, SLEEPS, SPIN_LIMIT = 0, 1, 2, 3, 4
JOB, JOB_SLEEPERS, JOB_PROGRAM, JOB_TABLES, JOB_THREADS, STOP = 8, 9, 10, 11, 12, 13
STATE_SLOTS = 16


def futex_syscall() -> int | None:
    arch, _, rest = llvm.get_process_triple().partition("-")
    return next((nr for (a, os_), nr in FUTEX_SYSCALL.items() if a == arch and os_ in rest), None)


class _Emitter:
    """Emits the team's functions into a module (once per module)."""

    def __init__(self, module: ir.Module):
        self.module = module
        self.nr = futex_syscall()
        if self.nr is None:
            self.sched_yield = ir.Function(module, ir.FunctionType(_I32, []), "sched_yield")
        else:
            self.syscall = ir.Function(module, ir.FunctionType(_I64, [_I64], var_arg=True), "syscall")
        self.wait = self._wait()
        self.wake = self._wake()
        self.barrier = self._barrier()
        self._worker()
        self._run()

    def _futex(self, b: ir.IRBuilder, word, op: int, value) -> None:
        b.call(self.syscall, [ir.Constant(_I64, self.nr), word, ir.Constant(_I64, op), value, ir.Constant(I8_PTR, None)])

    @staticmethod
    def _slot(b: ir.IRBuilder, state, i: int):
        return b.gep(state, [ir.Constant(_I64, i)])

    def _word(self, b: ir.IRBuilder, state, i: int):
        return b.bitcast(self._slot(b, state, i), _I32.as_pointer())

    def _wait(self) -> ir.Function:
        """`void minidlc_wait(i64* state, i32* word, i32 value, i64* sleepers)`: return once *word != value."""
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [_I64.as_pointer(), _I32.as_pointer(), _I32,
                                                                       _I64.as_pointer()]), "minidlc_wait")
        state, word, value, sleepers = fn.args
        entry, loop, spin, done = (fn.append_basic_block(n) for n in ("entry", "loop", "spin", "done"))
        b = ir.IRBuilder(entry)
        limit = b.load(self._slot(b, state, SPIN_LIMIT))
        b.branch(loop)
        b.position_at_end(loop)
        spins = b.phi(_I64)
        spins.add_incoming(ir.Constant(_I64, 0), entry)
        b.cbranch(b.icmp_unsigned("!=", b.load_atomic(word, "acquire", 4), value), done, spin)
        b.position_at_end(spin)
        nxt = b.add(spins, ir.Constant(_I64, 1))
        with b.if_then(b.icmp_signed(">", nxt, limit)):
            if self.nr is None:
                b.call(self.sched_yield, [])
            else:
                b.atomic_rmw("add", sleepers, ir.Constant(_I64, 1), "seq_cst")
                self._futex(b, word, FUTEX_WAIT_PRIVATE, b.zext(value, _I64))  # returns at once if *word moved on
                b.atomic_rmw("sub", sleepers, ir.Constant(_I64, 1), "seq_cst")
                b.atomic_rmw("add", self._slot(b, state, SLEEPS), ir.Constant(_I64, 1), "monotonic")
        spins.add_incoming(nxt, b.block)
        b.branch(loop)
        b.position_at_end(done)
        b.ret_void()
        return fn

    def _wake(self) -> ir.Function:
        """`void minidlc_wake(i32* word, i64* sleepers)`: bump *word; wake its sleepers, if any."""
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [_I32.as_pointer(), _I64.as_pointer()]),
                         "minidlc_wake")
        word, sleepers = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.atomic_rmw("add", word, ir.Constant(_I32, 1), "seq_cst")
        if self.nr is not None:
            with b.if_then(b.icmp_signed("!=", b.load_atomic(sleepers, "seq_cst", 8), ir.Constant(_I64, 0))):
                self._futex(b, word, FUTEX_WAKE_PRIVATE, ir.Constant(_I64, 2 ** 31 - 1))
        b.ret_void()
        return fn

    def _barrier(self) -> ir.Function:
        """`void minidlc_barrier(i64* state, i64 n)`: state[ARRIVED] counts arrivals;
        the last of the n threads resets it and bumps the generation, which
        the others wait on."""
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [_I64.as_pointer(), _I64]), "minidlc_barrier")
        state, n = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        gen_ptr, sleepers = self._word(b, state, GENERATION), self._slot(b, state, SLEEPERS)
        gen = b.load_atomic(gen_ptr, "acquire", 4)
        arrived = b.atomic_rmw("add", self._slot(b, state, ARRIVED), ir.Constant(_I64, 1), "acq_rel")
        with b.if_else(b.icmp_signed("==", arrived, b.sub(n, ir.Constant(_I64, 1)))) as (last, other):
            with last:
                b.store_atomic(ir.Constant(_I64, 0), self._slot(b, state, ARRIVED), "monotonic", 8)
                b.call(self.wake, [gen_ptr, sleepers])
            with other:
                b.call(self.wait, [state, gen_ptr, gen, sleepers])
        b.ret_void()
        return fn

    def _worker(self) -> None:
        """`void minidlc_worker(i64* state, i64 tid)`: wait for a job, run it, end at
        a barrier with the caller; until state[STOP]."""
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [_I64.as_pointer(), _I64]), "minidlc_worker")
        state, tid = fn.args
        entry, loop, work, done = (fn.append_basic_block(n) for n in ("entry", "loop", "work", "done"))
        b = ir.IRBuilder(entry)
        job, sleepers = self._word(b, state, JOB), self._slot(b, state, JOB_SLEEPERS)
        b.branch(loop)
        b.position_at_end(loop)
        seen = b.phi(_I32)
        seen.add_incoming(ir.Constant(_I32, 0), entry)  # the team starts at job 0, maybe before this thread does
        b.call(self.wait, [state, job, seen, sleepers])
        current = b.load_atomic(job, "acquire", 4)
        seen.add_incoming(current, work)
        b.cbranch(b.icmp_signed("!=", b.load_atomic(self._slot(b, state, STOP), "acquire", 8), ir.Constant(_I64, 0)),
                  done, work)
        b.position_at_end(work)
        program = b.inttoptr(b.load(self._slot(b, state, JOB_PROGRAM)), PROGRAM.as_pointer())
        tables = b.inttoptr(b.load(self._slot(b, state, JOB_TABLES)), TABLES)
        n = b.load(self._slot(b, state, JOB_THREADS))
        b.call(program, [tables, tid, n, state])
        b.call(self.barrier, [state, n])
        b.branch(loop)
        b.position_at_end(done)
        b.ret_void()

    def _run(self) -> None:
        """`void minidlc_run(i64* state, program*, i8*** tables, i64 n)`: post the job,
        run thread 0's share, wait at the last barrier for the others."""
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [_I64.as_pointer(), PROGRAM.as_pointer(), TABLES,
                                                                       _I64]), "minidlc_run")
        state, program, tables, n = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.store(b.ptrtoint(program, _I64), self._slot(b, state, JOB_PROGRAM))
        b.store(b.ptrtoint(tables, _I64), self._slot(b, state, JOB_TABLES))
        b.store(n, self._slot(b, state, JOB_THREADS))
        b.call(self.wake, [self._word(b, state, JOB), self._slot(b, state, JOB_SLEEPERS)])  # seq_cst: publishes the job
        b.call(program, [tables, ir.Constant(_I64, 0), n, state])
        b.call(self.barrier, [state, n])
        b.ret_void()


def emit_team(module: ir.Module) -> ir.Function:
    """Emit the team's functions into `module` (once); returns the barrier."""
    if "minidlc_barrier" not in module.globals:
        _Emitter(module)
    return module.globals["minidlc_barrier"]


class Team:
    """`threads - 1` workers waiting in native code, and the state they share.
    `run(program, tables)` runs a program on all of them and the caller; one run
    at a time (the state holds one job). The workers stop when the team is
    garbage collected (or at exit)."""

    def __init__(self, jit, threads: int):
        self.threads = threads
        self.state = np.zeros(STATE_SLOTS, np.int64)
        self.state[SPIN_LIMIT] = SPINS_BEFORE_SLEEP
        addr = self.state.ctypes.data
        self._run = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
            jit.engine.get_function_address("minidlc_run"))
        worker = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(jit.engine.get_function_address("minidlc_worker"))
        workers = [threading.Thread(target=worker, args=(addr, tid), daemon=True, name=f"minidlc-worker-{tid}")
                   for tid in range(1, threads)]
        for w in workers:
            w.start()
        # the finalizer keeps the code, the state and the wake-up alive until the workers are gone
        self._stop = weakref.finalize(self, _stop_workers, jit, self.state, workers,
                                      ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(
                                          jit.engine.get_function_address("minidlc_wake")))

    @property
    def sleeps(self) -> int:
        """How often a thread of this team slept (waiting for a job or at a barrier)."""
        return int(self.state[SLEEPS])

    def run(self, program_address: int, tables) -> None:
        self._run(self.state.ctypes.data, program_address, ctypes.addressof(tables), self.threads)


def _stop_workers(jit, state: np.ndarray, workers: list[threading.Thread], wake) -> None:
    state[STOP] = 1
    wake(state[JOB:].ctypes.data, state[JOB_SLEEPERS:].ctypes.data)
    for w in workers:
        w.join()
