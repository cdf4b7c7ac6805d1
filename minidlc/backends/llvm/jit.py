"""The JIT: LLVM modules optimized at O3 for this CPU, compiled to object code
in forked processes (several at once when there is enough to compile),
cached on disk one module at a time, and linked into one engine so that
their functions can be called and can call each other.

LLVM aborts the process it runs in when it cannot compile what it is given
(an instruction it cannot select, say): compiled in a child process, such a
bug in our code generation becomes a CompileError naming the kernel, with
LLVM's message, and the Python process that asked lives on."""
from __future__ import annotations

import os
import pickle
import signal
import sys
import tempfile
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import llvmlite.binding as llvm
import llvmlite.ir as ir

from ... import cpu
from ...runtime import CompileError
from .. import cache
from .team import WORKER_THREAD_PREFIX

_INITIALIZED = False


def _target_machine():
    global _INITIALIZED
    if not _INITIALIZED:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _INITIALIZED = True
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=cpu.name(), features=cpu.feature_string(),
                                        opt=3, codemodel="jitdefault")


# Compiled code on disk is stale when any file of this backend (the code generator) changes, or
# the loop-IR helpers its vector code generation uses (simplify, transform).
CODEGEN_VERSION = cache.source_version(Path(__file__).parent, Path(__file__).parents[2] / "loops",
                                       ("simplify.py", "transform.py"))


def compile_jobs() -> int:
    """How many processes compile modules at once: the cores this process may
    use, or MINIDLC_COMPILE_JOBS (0: this process itself, with no child to
    catch an LLVM abort: for profiling LLVM from Python)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, int(os.environ.get("MINIDLC_COMPILE_JOBS", cores)))


@dataclass
class Unit:
    """One LLVM module of a JIT. `source` is what it is generated from (loop IR):
    its cache key. `build` makes the llvmlite module, only on a cache miss or
    when someone asks to see the code. `name`: what errors call it (a kernel's name)."""

    source: str
    build: Callable[[], ir.Module]
    name: str = "a module"


def _optimize(tm, unit: Unit) -> llvm.ModuleRef:
    """Build the unit's module and run LLVM's O3 pipeline on it."""
    module = unit.build()
    module.triple = llvm.get_process_triple()
    module.data_layout = str(tm.target_data)
    mod = llvm.parse_assembly(str(module))
    mod.verify()
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    pb.getModulePassManager().run(mod, pb)
    return mod


# Forking workers costs about 15 ms; a GEMM kernel's loop IR (some 10,000 characters
# printed) takes LLVM about 0.1 s. Below this much loop IR, one process compiles it all.
PARALLEL_MIN_SOURCE = 20_000

_PENDING: list[Unit] = []  # in a forked worker: the units its pool compiles (set by _adopt)
_COMPILING = threading.Lock()  # one compile at a time in this process


def _fork_is_safe() -> bool:
    """Whether no other Python thread could be inside LLVM (or hold another lock
    a forked child would need): the only others are teams' workers, which wait
    in native code and never call LLVM. A fork while some thread held LLVM's
    lock would leave the child waiting for it forever."""
    return all(t is threading.current_thread() or t.name.startswith(WORKER_THREAD_PREFIX)
               for t in threading.enumerate())


def _object_code(unit: Unit) -> bytes:
    tm = _target_machine()
    return tm.emit_object(_optimize(tm, unit))


def _adopt(units: list[Unit]) -> None:
    """A worker's initializer: the units, inherited through fork (not pickled)."""
    global _PENDING
    _PENDING = units


def _pending_object_code(i: int) -> bytes:
    """Object code for _PENDING[i] (run in a worker process)."""
    return _object_code(_PENDING[i])


def _compile(units: list[Unit]) -> tuple[list[bytes], int]:
    """Object code for each unit, and how many processes made it. Several go to
    forked worker processes, largest first: LLVM holds one lock per process,
    so threads would take turns. The workers inherit the units (nothing is
    pickled but the results). A little goes to one forked child (`_in_child`),
    and a pool that broke (a worker died) hands its units to one too, which
    names the unit that kills it. With other Python threads about, which might
    be inside LLVM when we fork, this process compiles them all itself."""
    jobs = min(compile_jobs(), len(units))
    with _COMPILING:
        if not units:
            return [], 1
        if jobs == 0 or not hasattr(os, "fork") or not _fork_is_safe():
            return [_object_code(u) for u in units], 1
        if jobs < 2 or sum(len(u.source) for u in units) < PARALLEL_MIN_SOURCE:
            return _in_child(units), 1
        order = sorted(range(len(units)), key=lambda i: -len(units[i].source))
        try:
            with ProcessPoolExecutor(jobs, mp_context=get_context("fork"), initializer=_adopt,
                                     initargs=(units,)) as pool:
                done = dict(zip(order, pool.map(_pending_object_code, order)))
        except BrokenProcessPool:
            return _in_child(units), 1
    return [done[i] for i in range(len(units))], jobs


def _in_child(units: list[Unit]) -> list[bytes]:
    """Object code for `units`, compiled in order by one forked child (about
    5 ms to fork), which sends each back through a pipe as it is done: if the
    child dies, the first unit not sent killed it, and the CompileError names
    it with the end of what the child wrote to stderr (LLVM's "LLVM ERROR:
    ..." line). A Python exception in the child is raised here."""
    read, write = os.pipe()
    with tempfile.TemporaryFile() as stderr:
        pid = os.fork()
        if pid == 0:  # the child: never returns
            _child_compiles(units, read, write, stderr.fileno())
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            sent = pipe.read()
        _, status = os.waitpid(pid, 0)
        stderr.seek(0)
        said = stderr.read().decode(errors="replace")
    results, at = [], 0
    while at < len(sent):
        kind, size = sent[at:at + 1], int.from_bytes(sent[at + 1:at + 9], "little")
        data, at = sent[at + 9:at + 9 + size], at + 9 + size
        if kind == b"e":
            raise pickle.loads(data)
        results.append(data)
    if len(results) < len(units):
        how = (f"killed by {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
               else f"exit status {os.waitstatus_to_exitcode(status)}")
        last = "\n".join(said.strip().splitlines()[-5:])
        raise CompileError(f"LLVM failed on kernel {units[len(results)].name} ({how}): a bug in minidlc's code "
                           f"generation; --target numba or reference runs the model meanwhile"
                           + (f"\n{last}" if last else ""))
    if said:
        sys.stderr.write(said)  # (warnings)
    return results


def _child_compiles(units: list[Unit], read: int, write: int, stderr: int) -> None:
    """The forked child of _in_child: compile each unit and write it to the
    pipe (a kind byte, "o" object code or "e" a pickled exception, its length
    in 8 bytes, the data), with stderr redirected to the parent's file and
    no core dump if LLVM aborts."""
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.close(read)
        os.dup2(stderr, 2)
        with os.fdopen(write, "wb") as pipe:
            for unit in units:
                try:
                    kind, data = b"o", _object_code(unit)
                except Exception as e:
                    try:
                        kind, data = b"e", pickle.dumps(e)
                    except Exception:  # (an exception that cannot be pickled: its text)
                        kind, data = b"e", pickle.dumps(RuntimeError(f"{type(e).__name__}: {e}"))
                pipe.write(kind + len(data).to_bytes(8, "little") + data)
                pipe.flush()
                if kind == b"e":
                    break
    finally:  # (without flushing Python's buffers: they hold the parent's unwritten output too)
        os._exit(0)


class JitModule:
    """Native code for `units`, optimized at O3 for this CPU and linked into one
    engine (a function of one unit may call one of another). Each unit's object
    code is cached on disk under a hash of its source, so a unit that another
    model compiled before (a kernel of the same shape) is loaded, not compiled;
    a cache hit skips code generation and LLVM entirely. A cache entry is
    loaded only once its digest checks out (cache.load). `names` maps symbols
    of the units to the names printed for them (`--emit llvm`)."""

    def __init__(self, units: list[Unit], names: dict[str, str] | None = None):
        self.tm = _target_machine()
        self.units, self.names = units, names or {}
        folder = cache.directory()
        version = ".".join(map(str, llvm.llvm_version_info))
        keys = [cache.cache_key(u.source, version, CODEGEN_VERSION) for u in units]
        self.cache_files = [folder / f"{key}.o" if folder else None for key in keys]
        objects = [cache.load(f, key) if f else None for f, key in zip(self.cache_files, keys)]
        missing = [i for i, data in enumerate(objects) if data is None]
        self.compiled = len(missing)  # units compiled now; the rest came from the cache
        made, self.jobs = _compile([units[i] for i in missing])
        for i, data in zip(missing, made):
            objects[i] = data
            if self.cache_files[i]:
                cache.store(self.cache_files[i], keys[i], data)
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), self.tm)
        for data in objects:
            self.engine.add_object_file(llvm.ObjectFileRef.from_data(data))
        self.engine.finalize_object()
        self._texts: list[str] | None = None

    @property
    def cached(self) -> bool:
        """Whether every unit came from the cache."""
        return self.compiled == 0

    def summary(self) -> str:
        return (f"{len(self.units)} modules: {self.compiled} compiled"
                + (f" in {self.jobs} processes" if self.jobs > 1 else "") + f", {len(self.units) - self.compiled} from the cache")

    def optimized(self) -> list[str]:
        """Each unit's module text after O3: what its object code is compiled from."""
        if self._texts is None:
            self._texts = [str(_optimize(self.tm, u)) for u in self.units]
        return self._texts

    def asm(self) -> list[str]:
        return [self.tm.emit_assembly(llvm.parse_assembly(text)) for text in self.optimized()]
