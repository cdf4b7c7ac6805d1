"""The JIT: LLVM modules optimized at O3 for this CPU, compiled to object code
(in parallel worker processes when there are several), cached on disk one
module at a time, and linked into one engine so that their functions can be
called and can call each other."""
from __future__ import annotations

import os
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import llvmlite.binding as llvm
import llvmlite.ir as ir

from ... import cpu
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
    use, or MINIDLC_COMPILE_JOBS (1: all in this process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, int(os.environ.get("MINIDLC_COMPILE_JOBS", cores)))


@dataclass
class Unit:
    """One LLVM module of a JIT. `source` is what it is generated from (loop IR):
    its cache key. `build` makes the llvmlite module, only on a cache miss or
    when someone asks to see the code."""

    source: str
    build: Callable[[], ir.Module]


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
    pickled but the results). With other Python threads about, which might be
    inside LLVM when we fork, this process compiles them all itself."""
    jobs = min(compile_jobs(), len(units))
    with _COMPILING:
        if (jobs < 2 or not hasattr(os, "fork") or sum(len(u.source) for u in units) < PARALLEL_MIN_SOURCE
                or not _fork_is_safe()):
            return [_object_code(u) for u in units], 1
        order = sorted(range(len(units)), key=lambda i: -len(units[i].source))
        with ProcessPoolExecutor(jobs, mp_context=get_context("fork"), initializer=_adopt, initargs=(units,)) as pool:
            done = dict(zip(order, pool.map(_pending_object_code, order)))
    return [done[i] for i in range(len(units))], jobs


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
