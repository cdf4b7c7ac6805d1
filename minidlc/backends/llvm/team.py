"""A team of threads that run native programs together, as in OpenMP.

The workers are Python threads that call into native code once and stay
there: between runs they wait in `minidlc_worker` for the next job, so a run
costs no Python work on the workers and no wait for the GIL. The caller is
thread 0: `minidlc_run` posts the job (program, pointer tables, thread count,
run number) and runs the program itself.

Stages without barriers. A stage of a program is cut into shares: a few per
thread for a parallel stage (thread t first tries its own), one for a serial
stage. A thread *claims* a share before it runs it, so every
share runs once, and then tries the shares of the others: a thread that lost
its core to another process, or woke up late, finds its share done by
someone else and nobody waits for it. A stage may start when the one before
it has *completed* (all its shares have run). Claims and completions are
tagged with the run number, so nothing needs resetting between runs, and a
worker still in an old run (asleep while the run ended) claims nothing.

All waiting (for a job, for a stage to complete) is `minidlc_wait`: spin on
a 32-bit word for `state[SPIN_LIMIT]` rounds (SPIN_MICROSECONDS, about 0.1
ms; each round pauses on x86), then sleep on it with a futex, so waiting
threads give their cores back. A sleeper counts itself first, and
whoever changes the word wakes the sleepers only when there are some (both
sequentially consistent: either the waker sees the sleeper, or the futex sees
the new value and returns at once). Where there is no futex (not Linux), a
waiting thread yields its core with sched_yield instead.
"""
from __future__ import annotations

import ctypes
import math
import os
import threading
import time
import weakref
from functools import partial
from typing import Callable

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np

from .codegen import I8_PTR, STAGE

_I64, _I32, _VOID = ir.IntType(64), ir.IntType(32), ir.VoidType()
_STATE = _I64.as_pointer()
TABLES = I8_PTR.as_pointer().as_pointer()  # i8*** : one pointer table per kernel
# A program: (tables, thread id, threads, team state, run number).
PROGRAM = ir.FunctionType(_VOID, [TABLES, _I64, _I64, _STATE, _I64])

# A waiting thread spins about this long, then sleeps. Shorter costs an idle
# machine: a futex wake-up costs the waker some 6 us and the sleeper tens of
# microseconds on a VM, a small model's whole run, and the Python work between
# two runs (checking and copying the inputs) took 30 to 50 us (the mlp's 55 us
# fell to 33 with 6fb3465). Longer costs a
# busy one, where a spinning thread keeps a core from the thread it waits for
# (benchmarks/bench_contention.py). The rounds it takes are measured once per
# process (`spin_rounds`), since a round's time differs tenfold between CPUs.
SPIN_MICROSECONDS = float(os.environ.get("MINIDLC_SPIN_US", "100"))
WORKER_THREAD_PREFIX = "minidlc-worker-"  # (jit.py forks only when no other thread is about)
# The futex system call number, by (architecture, OS) of the host.
FUTEX_SYSCALL = {("x86_64", "linux"): 202, ("aarch64", "linux"): 98}
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129

# The team's state, in i64 slots; each group starts a cache line.
SLEEPS, SPIN_LIMIT, RUN = 0, 1, 2
# The job, a seqlock: JOB (a 32-bit word) is odd while thread 0 writes the fields.
JOB, JOB_SLEEPERS, JOB_PROGRAM, JOB_TABLES, JOB_THREADS, JOB_RUN, STOP = 8, 9, 10, 11, 12, 13, 14
# Stage k of a program, at STAGES + k * stage_slots(threads): the low 32 bits of
# the run that completed it (a futex word), its sleepers, the run and count of
# shares done (run << 16 | count), and one claim per share (the run that took it).
STAGES, DONE, DONE_SLEEPERS, DONE_COUNT, CLAIMS = 16, 0, 1, 2, 3
COUNT_BITS = 16


# A parallel stage is cut into this many shares a thread: a thread that loses its
# core while it runs a share holds up the stage for a smaller share.
SHARES_PER_THREAD = 4


def stage_slots(threads: int) -> int:
    return -(-(CLAIMS + threads * SHARES_PER_THREAD) // 8) * 8


def futex_syscall() -> int | None:
    arch, _, rest = llvm.get_process_triple().partition("-")
    return next((nr for (a, os_), nr in FUTEX_SYSCALL.items() if a == arch and os_ in rest), None)


def _const(v: int) -> ir.Constant:
    return ir.Constant(_I64, v)


class _Emitter:
    """Emits the team's functions into a module."""

    def __init__(self, module: ir.Module):
        self.module = module
        self.nr = futex_syscall()
        # a spin-wait hint: the waiting core yields to its SMT sibling, and leaves the loop without a pipeline flush
        self.pause = ir.Function(module, ir.FunctionType(_VOID, []), "llvm.x86.sse2.pause") \
            if llvm.get_process_triple().startswith("x86_64") else None
        if self.nr is None:
            self.sched_yield = ir.Function(module, ir.FunctionType(_I32, []), "sched_yield")
        else:
            self.syscall = ir.Function(module, ir.FunctionType(_I64, [_I64], var_arg=True), "syscall")
        self.wait = self._wait()
        self.publish = self._publish()
        self.await_stage = self._await_stage()
        self.stage = self._stage()
        self._worker()
        self._run()
        self._spin()
        self._stop()

    def _function(self, name: str, ret, args) -> tuple[ir.Function, ir.IRBuilder]:
        fn = ir.Function(self.module, ir.FunctionType(ret, args), name)
        fn.attributes.add("noinline")  # called once per stage: inlined at every call, it bloats programs
        return fn, ir.IRBuilder(fn.append_basic_block("entry"))

    def _futex(self, b: ir.IRBuilder, word, op: int, value) -> None:
        b.call(self.syscall, [_const(self.nr), word, _const(op), value, ir.Constant(I8_PTR, None)])

    @staticmethod
    def _slot(b: ir.IRBuilder, base, i):
        return b.gep(base, [i if isinstance(i, ir.Value) else _const(i)])

    def _word(self, b: ir.IRBuilder, base, i):
        return b.bitcast(self._slot(b, base, i), _I32.as_pointer())

    def _wait(self) -> ir.Function:
        """`minidlc_wait(state, i32* word, i32 value, i64* sleepers)`: return once *word != value."""
        fn, b = self._function("minidlc_wait", _VOID, [_STATE, _I32.as_pointer(), _I32, _I64.as_pointer()])
        state, word, value, sleepers = fn.args
        entry = b.block
        loop, spin, done = (fn.append_basic_block(n) for n in ("loop", "spin", "done"))
        limit = b.load(self._slot(b, state, SPIN_LIMIT))
        b.branch(loop)
        b.position_at_end(loop)
        spins = b.phi(_I64)
        spins.add_incoming(_const(0), entry)
        b.cbranch(b.icmp_unsigned("!=", b.load_atomic(word, "acquire", 4), value), done, spin)
        b.position_at_end(spin)
        self._relax(b)
        nxt = b.add(spins, _const(1))
        with b.if_then(b.icmp_signed(">", nxt, limit)):
            if self.nr is None:
                b.call(self.sched_yield, [])
            else:
                b.atomic_rmw("add", sleepers, _const(1), "seq_cst")
                self._futex(b, word, FUTEX_WAIT_PRIVATE, b.zext(value, _I64))  # returns at once if *word moved on
                b.atomic_rmw("sub", sleepers, _const(1), "seq_cst")
                b.atomic_rmw("add", self._slot(b, state, SLEEPS), _const(1), "monotonic")
        spins.add_incoming(nxt, b.block)
        b.branch(loop)
        b.position_at_end(done)
        b.ret_void()
        return fn

    def _publish(self) -> ir.Function:
        """`minidlc_publish(i32* word, i32 value, i64* sleepers)`: *word = value; wake its sleepers, if any."""
        fn, b = self._function("minidlc_publish", _VOID, [_I32.as_pointer(), _I32, _I64.as_pointer()])
        word, value, sleepers = fn.args
        b.atomic_rmw("xchg", word, value, "seq_cst")
        if self.nr is not None:
            with b.if_then(b.icmp_signed("!=", b.load_atomic(sleepers, "seq_cst", 8), _const(0))):
                self._futex(b, word, FUTEX_WAKE_PRIVATE, _const(2 ** 31 - 1))
        b.ret_void()
        return fn

    def _stage(self) -> ir.Function:
        """`minidlc_stage(state, k, tid, n, run, stage*, ptrs, extent)`: wait for stage k - 1
        to complete, then claim and run shares of stage k (n * SHARES_PER_THREAD
        shares of [0, extent) for a parallel stage, one share for a serial one:
        extent < 0), its own shares first; the thread that runs the last share
        marks the stage complete."""
        fn, b = self._function("minidlc_stage", _VOID, [_STATE, _I64, _I64, _I64, _I64, STAGE.as_pointer(),
                                                       I8_PTR.as_pointer(), _I64])
        state, k, tid, n, run, stage, ptrs, extent = fn.args
        with b.if_then(b.icmp_signed(">", k, _const(0))):
            b.call(self.await_stage, [state, b.sub(k, _const(1)), n, run])
        here = self._region(b, state, k, n)
        serial = b.icmp_signed("<", extent, _const(0))
        shares = b.select(serial, _const(1), b.mul(n, _const(SHARES_PER_THREAD)))
        chunk = b.sdiv(b.add(extent, b.sub(shares, _const(1))), shares)
        first = b.select(serial, _const(0), b.mul(tid, _const(SHARES_PER_THREAD)))
        with _for(b, shares) as j:
            s = b.srem(b.add(first, j), shares)
            with b.if_then(self._claim(b, self._slot(b, here, b.add(_const(CLAIMS), s)), run)):
                lo = b.select(serial, _const(0), b.mul(s, chunk))
                end = b.add(lo, chunk)
                hi = b.select(serial, _const(0), b.select(b.icmp_signed("<", end, extent), end, extent))
                with b.if_then(b.or_(serial, b.icmp_signed("<", lo, hi))):
                    b.call(stage, [ptrs, lo, hi])
                self._finish(b, here, shares, run)
        b.ret_void()
        return fn

    def _region(self, b: ir.IRBuilder, state, k, n):
        """Stage k's slots: at STAGES + k * stage_slots(n)."""
        claims = b.mul(n, _const(SHARES_PER_THREAD))
        size = b.mul(b.sdiv(b.add(claims, _const(CLAIMS + 7)), _const(8)), _const(8))
        return b.gep(state, [b.add(_const(STAGES), b.mul(k, size))])

    def _await_stage(self) -> ir.Function:
        """`minidlc_await(state, k, n, run)`: wait until stage k has completed run `run` (or a later one)."""
        fn, b = self._function("minidlc_await", _VOID, [_STATE, _I64, _I64, _I64])
        state, k, n, run = fn.args
        region = self._region(b, state, k, n)
        word, sleepers = self._word(b, region, DONE), self._slot(b, region, DONE_SLEEPERS)
        run32 = b.trunc(run, _I32)
        loop, wait, done = (fn.append_basic_block(n) for n in ("loop", "wait", "done"))
        b.branch(loop)
        b.position_at_end(loop)
        seen = b.load_atomic(word, "acquire", 4)
        b.cbranch(b.icmp_signed(">=", b.sub(seen, run32), ir.Constant(_I32, 0)), done, wait)  # wraps safely
        b.position_at_end(wait)
        b.call(self.wait, [state, word, seen, sleepers])
        b.branch(loop)
        b.position_at_end(done)
        b.ret_void()
        return fn

    @staticmethod
    def _claim(b: ir.IRBuilder, claim, run):
        """Take a share: its claim goes from an earlier run to `run`; false if it
        holds `run` (taken) or a later run (this thread is in a finished run)."""
        fn = b.block.parent
        loop, attempt, out = (fn.append_basic_block(n) for n in ("claim", "claim_try", "claim_end"))
        b.branch(loop)
        b.position_at_end(loop)
        seen = b.load_atomic(claim, "monotonic", 8)
        b.cbranch(b.icmp_signed("<", seen, run), attempt, out)
        b.position_at_end(attempt)
        ok = b.extract_value(b.cmpxchg(claim, seen, run, "acq_rel", "monotonic"), 1)
        b.cbranch(ok, out, loop)
        b.position_at_end(out)
        result = b.phi(ir.IntType(1))
        result.add_incoming(ir.Constant(ir.IntType(1), 0), loop)
        result.add_incoming(ir.Constant(ir.IntType(1), 1), attempt)
        return result

    def _finish(self, b: ir.IRBuilder, region, shares, run) -> None:
        """Count a share done; the last of `shares` marks the stage complete for `run`."""
        count = self._slot(b, region, DONE_COUNT)
        fn = b.block.parent
        loop, out = fn.append_basic_block("finish"), fn.append_basic_block("finish_end")
        b.branch(loop)
        b.position_at_end(loop)
        seen = b.load_atomic(count, "monotonic", 8)
        tag = b.shl(run, _const(COUNT_BITS))
        same = b.icmp_signed("==", b.ashr(seen, _const(COUNT_BITS)), run)
        new = b.select(same, b.add(seen, _const(1)), b.add(tag, _const(1)))
        ok = b.extract_value(b.cmpxchg(count, seen, new, "acq_rel", "monotonic"), 1)
        b.cbranch(ok, out, loop)
        b.position_at_end(out)
        last = b.icmp_signed("==", b.and_(new, _const((1 << COUNT_BITS) - 1)), shares)
        with b.if_then(last):
            word, sleepers = self._word(b, region, DONE), self._slot(b, region, DONE_SLEEPERS)
            b.call(self.publish, [word, b.trunc(run, _I32), sleepers])

    def _worker(self) -> None:
        """`minidlc_worker(state, tid)`: wait for a job, run it; until state[STOP]."""
        fn, b = self._function("minidlc_worker", _VOID, [_STATE, _I64])
        state, tid = fn.args
        entry = b.block
        idle, read, check, work, go, done = (fn.append_basic_block(n)
                                             for n in ("idle", "read", "check", "work", "go", "done"))
        job, sleepers = self._word(b, state, JOB), self._slot(b, state, JOB_SLEEPERS)
        b.branch(idle)
        b.position_at_end(idle)
        seen = b.phi(_I32)
        seen.add_incoming(ir.Constant(_I32, 0), entry)  # the team starts at job 0, maybe before this thread does
        b.call(self.wait, [state, job, seen, sleepers])
        b.branch(read)
        b.position_at_end(read)  # a seqlock read: an even JOB, the fields, JOB unchanged
        g1 = b.load_atomic(job, "acquire", 4)
        odd = b.icmp_unsigned("!=", b.and_(g1, ir.Constant(_I32, 1)), ir.Constant(_I32, 0))
        with b.if_then(odd):
            b.call(self.wait, [state, job, g1, sleepers])
        b.cbranch(odd, read, check)
        b.position_at_end(check)
        field = lambda i: b.load_atomic(self._slot(b, state, i), "monotonic", 8)  # noqa: E731
        stop, program, tables, n, run = (field(i) for i in (STOP, JOB_PROGRAM, JOB_TABLES, JOB_THREADS, JOB_RUN))
        b.fence("acquire")
        g2 = b.load_atomic(job, "monotonic", 4)
        b.cbranch(b.icmp_unsigned("!=", g1, g2), read, work)
        b.position_at_end(work)
        b.cbranch(b.icmp_signed("!=", stop, _const(0)), done, go)
        b.position_at_end(go)
        b.call(b.inttoptr(program, PROGRAM.as_pointer()), [b.inttoptr(tables, TABLES), tid, n, state, run])
        seen.add_incoming(g1, go)
        b.branch(idle)
        b.position_at_end(done)
        b.ret_void()

    def _post(self, b: ir.IRBuilder, state, fields: dict[int, ir.Value]) -> None:
        """Write the job's fields under the seqlock (only thread 0 writes), then wake the workers."""
        job = self._word(b, state, JOB)
        g = b.load_atomic(job, "monotonic", 4)
        b.store_atomic(b.add(g, ir.Constant(_I32, 1)), job, "monotonic", 4)
        b.fence("release")
        for slot, value in fields.items():
            b.store_atomic(value, self._slot(b, state, slot), "monotonic", 8)
        b.call(self.publish, [job, b.add(g, ir.Constant(_I32, 2)), self._slot(b, state, JOB_SLEEPERS)])

    def _run(self) -> None:
        """`minidlc_run(state, program*, tables, n)`: post the job as the next run, and run it as thread 0."""
        fn, b = self._function("minidlc_run", _VOID, [_STATE, PROGRAM.as_pointer(), TABLES, _I64])
        state, program, tables, n = fn.args
        run = b.add(b.load(self._slot(b, state, RUN)), _const(1))
        b.store(run, self._slot(b, state, RUN))
        self._post(b, state, {JOB_PROGRAM: b.ptrtoint(program, _I64), JOB_TABLES: b.ptrtoint(tables, _I64),
                              JOB_THREADS: n, JOB_RUN: run})
        b.call(program, [tables, _const(0), n, state, run])
        b.ret_void()

    def _relax(self, b: ir.IRBuilder) -> None:
        """One round's spin-wait hint (x86's pause, some 10 to 140 cycles by CPU)."""
        if self.pause is not None:
            b.call(self.pause, [])

    def _spin(self) -> None:
        """`minidlc_spin(i32* word, i64 rounds) -> i64`: `rounds` rounds of the
        wait loop's spinning, timed once to find how many make SPIN_MICROSECONDS."""
        fn, b = self._function("minidlc_spin", _I64, [_I32.as_pointer(), _I64])
        word, rounds = fn.args
        seen = b.alloca(_I64)
        b.store(_const(0), seen)
        with _for(b, rounds):
            self._relax(b)
            b.store(b.add(b.load(seen), b.zext(b.load_atomic(word, "acquire", 4), _I64)), seen)
        b.ret(b.load(seen))

    def _stop(self) -> None:
        """`minidlc_stop(state)`: tell the workers to return."""
        fn, b = self._function("minidlc_stop", _VOID, [_STATE])
        self._post(b, fn.args[0], {STOP: _const(1)})
        b.ret_void()


class _for:
    """`with _for(b, n) as j:` emits `for (j = 0; j < n; j++) { body }`."""

    def __init__(self, b: ir.IRBuilder, n):
        self.b, self.n = b, n

    def __enter__(self):
        b, fn = self.b, self.b.block.parent
        self.head, body, self.end = (fn.append_basic_block(n) for n in ("for", "for_body", "for_end"))
        before = b.block
        b.branch(self.head)
        b.position_at_end(self.head)
        self.j = b.phi(_I64)
        self.j.add_incoming(_const(0), before)
        b.cbranch(b.icmp_signed("<", self.j, self.n), body, self.end)
        b.position_at_end(body)
        return self.j

    def __exit__(self, *exc):
        b = self.b
        self.j.add_incoming(b.add(self.j, _const(1)), b.block)
        b.branch(self.head)
        b.position_at_end(self.end)


def emit_team(module: ir.Module) -> ir.Function:
    """Emit the team's functions into `module` (once); returns `minidlc_stage`."""
    if "minidlc_stage" not in module.globals:
        _Emitter(module)
    return module.globals["minidlc_stage"]


class Team:
    """`threads - 1` workers waiting in native code, and the state they share.
    `bind(program, tables)()` runs a program of at most `stages` stages on all of
    them and the caller; one run at a time (the state holds one job). The
    workers stop when the team is garbage collected (or at exit)."""

    def __init__(self, jit, threads: int, stages: int):
        self.threads = threads
        self.state = np.zeros(STAGES + stages * stage_slots(threads), np.int64)
        address = jit.engine.get_function_address
        self.state[SPIN_LIMIT] = spin_rounds(address("minidlc_spin"))
        self._run = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
            address("minidlc_run"))
        worker = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(address("minidlc_worker"))
        workers = [threading.Thread(target=worker, args=(self.state.ctypes.data, tid), daemon=True,
                                    name=f"{WORKER_THREAD_PREFIX}{tid}") for tid in range(1, threads)]
        for w in workers:
            w.start()
        stop = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(address("minidlc_stop"))
        # the finalizer keeps the code and the state alive until the workers are gone
        weakref.finalize(self, _stop_workers, jit, self.state, workers, stop)

    @property
    def sleeps(self) -> int:
        """How often a thread of this team slept (waiting for a job or for a stage)."""
        return int(self.state[SLEEPS])

    def bind(self, program_address: int, tables: ctypes.Array) -> Callable[[], None]:
        """The call that runs a program on `tables` (see NativeProgram.bind)."""
        return partial(self._run, self.state.ctypes.data, program_address, ctypes.addressof(tables), self.threads)


_ROUNDS_PER_MICROSECOND: list[float] = []  # measured by the first team of the process


def spin_rounds(spin_address: int) -> int:
    """The rounds of the wait loop that take SPIN_MICROSECONDS on this CPU (from
    the fastest of three timings of 20,000 rounds: 0.2 ms on the Rocket Lake VM)."""
    if not _ROUNDS_PER_MICROSECOND:
        spin = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64)(spin_address)
        word, rounds, best = np.zeros(1, np.int32), 20_000, math.inf
        for _ in range(3):
            start = time.perf_counter()
            spin(word.ctypes.data, rounds)
            best = min(best, time.perf_counter() - start)
        _ROUNDS_PER_MICROSECOND.append(rounds / max(best * 1e6, 1e-3))
    return int(SPIN_MICROSECONDS * _ROUNDS_PER_MICROSECOND[0])


def _stop_workers(jit, state: np.ndarray, workers: list[threading.Thread], stop) -> None:
    stop(state.ctypes.data)
    for w in workers:
        w.join()
