"""The Numba CPU backend: loop IR -> Python source -> `numba.njit`.

- render.py: each kernel of the loop program becomes a Python function
  (parallel loops as `prange`), and each run of consecutive kernel steps a
  `programN` function that calls them in order: one call from Python per run,
  as with the llvm backend. `--emit numba` prints the module.
- support.py: the loop-IR operations that Python's operators would get
  wrong (integer division, NaN in min/max, saturating casts, ldexp), as Numba
  intrinsics that emit the same LLVM instructions as the llvm backend.
- here: the module is written to the disk cache under a hash of its text
  (keyed like the llvm cache), imported, and compiled by Numba with
  `cache=True`, so compiling the same model again loads Numba's cached code
  (once its files match the digests recorded when they were made).
  The executable runs over the same host arena as the llvm backend.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...loops.ir import Kernel
from ...loops.program import LoopProgram, Step
from ...loops.verify import verify_kernel
from .. import cache
from ..host import HostExecutable, check_kernel_arrays
from .render import as_numba, render_module, uses_prange

RENDER_VERSION = cache.source_version(Path(__file__).parent)
log = logging.getLogger(__name__)
# After each parallel loop, Numba's OpenMP workers spin (libgomp's default: 300,000 times) before they
# sleep, keeping cores busy that the next host step or another runtime in the process needs (measured:
# onnxruntime 1.6x slower right after a Numba run). Spin about as long as the llvm backend's barrier
# does; a user's own setting wins. libgomp reads it when it starts, at the first parallel loop.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")


# Loading and compiling touch process-wide state (sys.modules, Numba's config): one thread at a time.
_COMPILE_LOCK = threading.RLock()
# Numba's fallback threading layer (workqueue, when neither OpenMP nor TBB is there) aborts the
# process if two threads launch parallel loops at once: programs with parallel loops take turns.
_PARALLEL_LOCK = threading.Lock()


def load_module(source: str, version: str = RENDER_VERSION):
    """Import the generated `source` from the cache (writing it there first).
    Numba's own cache files for it (under __pycache__) are used only when they
    match the digests recorded after they were made (`seal`); otherwise they
    are deleted and Numba compiles afresh. `version`: of the code that made
    the source and of what it calls (a change there invalidates the cache)."""
    import numba

    key = cache.cache_key(source, numba.__version__, version)
    name = f"minidlc_numba_{key[:16]}"
    with _COMPILE_LOCK:
        if name in sys.modules:
            return sys.modules[name]
        folder = cache.directory("numba") or _scratch_dir()  # untrusted or read-only cache: compile uncached
        path = folder / f"m_{key[:40]}.py"
        if not (cache.trusted(path) and path.read_text() == source):
            log.info("numba: compiling %d kernel(s), cold: this takes a while (seconds to a minute); later "
                     "compiles of this model load Numba's cache", source.count("\ndef ") - source.count("\ndef program"))
            _drop_numba_cache(path)
            if not cache.write_atomic(path, source.encode()):
                path = _scratch_dir() / path.name
                path.write_text(source)
        elif not _numba_cache_intact(path, key):
            _drop_numba_cache(path)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        module.__minidlc_key__ = key
        sys.modules[name] = module  # Numba's cache finds a function's module here
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module


def _numba_files(path: Path) -> list[Path]:
    """Numba's cache files (index and data) for the functions of module file `path`."""
    return sorted((path.parent / "__pycache__").glob(f"{path.stem}.*"))


def _manifest(path: Path) -> Path:
    return path.with_suffix(".manifest")


def _digests(files: list[Path]) -> bytes:
    return "".join(f"{f.name} {hashlib.sha256(f.read_bytes()).hexdigest()}\n" for f in files).encode()


def _numba_cache_intact(path: Path, key: str) -> bool:
    files = _numba_files(path)
    if not files:
        return True
    recorded = cache.load(_manifest(path), key)
    return recorded is not None and all(cache.trusted(f) for f in files) and recorded == _digests(files)


def _drop_numba_cache(path: Path) -> None:
    for f in _numba_files(path) + [_manifest(path)]:
        f.unlink(missing_ok=True)


def seal(module, dispatchers: list) -> None:
    """Record the digests of Numba's cache files for `module` when Numba
    compiled (and cached) something of it since the last time: a warm load
    or a repeated run costs no hashing or writing."""
    compiled = sum(sum(d.stats.cache_misses.values()) for d in dispatchers)
    if compiled == getattr(module, "__minidlc_sealed__", 0):
        return
    module.__minidlc_sealed__ = compiled
    record_cache_files(module)


def record_cache_files(module) -> None:
    """Record the digests of Numba's cache files for `module` now (see seal)."""
    path = Path(module.__file__)
    files = _numba_files(path)
    if files and cache.directory("numba") == path.parent:
        cache.store(_manifest(path), module.__minidlc_key__, _digests(files))


@lru_cache(maxsize=1)
def _scratch_dir() -> Path:
    """One temporary directory per process, for modules when the cache cannot be written."""
    return Path(tempfile.mkdtemp(prefix="minidlc-numba-"))


@contextmanager
def slp_vectorizer():
    """Numba runs LLVM without its SLP vectorizer by default; a GEMM's register
    block (a row of `acc[jj] += a * b[jj]` loops, unrolled by LLVM) needs it
    to become vector FMAs (6.9 -> 112 GFLOP/s on one Zen 4 core). On only
    while minidlc's own functions compile (under the compile lock, so that
    nobody else's code compiles meanwhile from another of our threads)."""
    from numba.core import config

    with _COMPILE_LOCK:
        saved, config.SLP_VECTORIZE = config.SLP_VECTORIZE, 1
        try:
            yield
        finally:
            config.SLP_VECTORIZE = saved


class NumbaCall:
    """One compiled program bound to its arrays (kernel after kernel, parameter after parameter)."""

    def __init__(self, fn, arrays: list, threads: int | None):
        import numba

        self.fn, self.arrays, self.threads = fn, arrays, threads
        self._set_threads = numba.set_num_threads
        with slp_vectorizer():
            fn.compile(tuple(numba.typeof(a) for a in arrays))  # now, not at the first run

    def __call__(self) -> None:
        if self.threads is None:
            self.fn(*self.arrays)
            return
        with _PARALLEL_LOCK:
            self._set_threads(self.threads)  # per calling thread, as Numba keeps it
            self.fn(*self.arrays)


class NumbaExecutable(HostExecutable):
    """The loop program's kernels compiled by Numba, over one host arena."""

    def __init__(self, program: LoopProgram, threads: int | None = None, split: bool = False):
        import numba

        pool = numba.config.NUMBA_NUM_THREADS
        if threads is not None and threads > pool:
            raise ValueError(f"target numba: threads={threads}, but Numba's thread pool has {pool} "
                             f"(set NUMBA_NUM_THREADS={threads} before starting Python)")
        self.threads = threads or min(os.cpu_count() or 1, pool)
        super().__init__(program, self._compile, split)

    def _compile(self, segments: list[list[Step]]) -> list[NumbaCall]:
        kernels = [[st.lowered.kernel for st in seg] for seg in segments]
        self.source = render_module(kernels, [[st.computes() for st in seg] for seg in segments])
        if not segments:
            return []
        module = load_module(self.source)
        calls = [NumbaCall(getattr(module, f"program{i}"),
                           [as_numba(self.arena.buffer(st, b)) for st in seg for b in st.lowered.bindings],
                           self.threads if any(uses_prange(k) for k in kernels[i]) else None)
                 for i, seg in enumerate(segments)]
        seal(module, [c.fn for c in calls])
        return calls

    def emit(self, stage: str) -> str:
        return self.source


def build(program: LoopProgram, threads: int | None = None, split: bool = False) -> NumbaExecutable:
    """`split`: one native call per kernel (for the profiler), instead of one per run of kernels."""
    return NumbaExecutable(program, threads, split)


def compile_kernel(kernel: Kernel, threads: int = 1):
    """Compile one kernel by itself; returns `run(arrays)`, which checks each
    array against its parameter (dtype, size) and calls the kernel on them in
    place. The counterpart of the llvm backend's compile_kernel."""
    verify_kernel(kernel)
    source = render_module([[kernel]])
    module = load_module(source)

    def run(arrays: list[np.ndarray]) -> None:
        check_kernel_arrays(kernel, arrays)
        call = NumbaCall(module.program0, [as_numba(a.reshape(-1)) for a in arrays], threads)  # flat views: kernels index flat
        seal(module, [module.program0])
        call()
    run.source = source
    return run
