"""The compile cache: a compile done before is loaded, not done again.

`minidlc.compile` keeps its work up to the backend -- the optimized graph and
its loop program, lowered and scheduled -- on disk, under a key made of
everything that work follows from (`key`):
- the imported graph: every op, attribute, name, source location and weight
  (`fingerprint`);
- the pass pipeline's options: -O level, pass list (quantization included),
  calibration data, verify_each;
- the backend's lowering choices: target, device, its CPU choices, schedule,
  and the GPU tiles tuned on this machine's GPU (backends/cuda/tuning.py);
- minidlc's own source (changing any of its files makes every entry stale),
  the host CPU (lowering picks the GEMM's register tile by its features),
  and the Python and NumPy versions.
A compile that finds its entry skips the passes and lowering; the backend then
finds each kernel's code in its own cache (backends/cache.py), so a warm
compile only loads. This is what torch.compile's FX graph cache does too. A
compile with instruments (--time-passes, --print-ir-after, ...) runs its
passes, since watching them is the point, and leaves the cache alone.

An entry is one file in the backends' cache folder (with its trust checks and
its eviction): a header, the program pickled without its arrays, and the
arrays (weights as folded and as packed), each 64-byte aligned. A program
bigger than a quarter of the cache's bound is not stored. The file is
written whole or not at all, and only its owner can write the folder, so what
a check on loading guards against is damage. The pickle, which Python
executes, is loaded only once its SHA-256 (which covers the arrays' offsets
too) checks out, and the arrays that are not floats (integer indices that
kernels may trust: a Gather on constant indices has no bounds check) once
their CRC-32 does. Float arrays are not checked: damage to them changes
numbers, as damage to the .onnx file would, and checking ResNet-50's 200 MB
would take a quarter of the 0.2 s a warm compile may take. The file is
mapped copy-on-write and the arrays are views of the mapping, so loading
copies nothing and reads only what runs touch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import pickle
import sys
import zlib
from dataclasses import astuple
from enum import Enum
from pathlib import Path

import numpy as np

from . import cpu
from .backends import cache
from .ir import Graph, TensorType
from .loops.plan import ALIGN

MAGIC = b"minidlc-program-1\n"
FLOAT_FORMATS = frozenset("efdg")  # buffer formats of float arrays (their checksums are skipped, see above)
log = logging.getLogger(__name__)


class Uncacheable(TypeError):
    """Part of a compile's input that has no fingerprint (a Python object in
    an attribute or the pass list): that compile is not cached."""


# Every Python file of minidlc: an entry made by other code is stale. Taken when this
# module is imported, with the rest of the compiler, so that it describes the code that runs.
SOURCE_VERSION = cache.files_version(sorted(Path(__file__).parent.rglob("*.py")))


def fingerprint(h, x) -> None:
    """Feed `x` -- a graph, an array, a scalar, a string, a list, tuple or
    dict of those -- into the hash `h`: a text that says what it is (each
    part tagged with its type, strings and floats as repr writes them:
    exactly), then the bytes of its arrays, so that two inputs feed the same
    bytes only if they are the same."""
    arrays: list[np.ndarray] = []
    h.update(_describe(x, arrays).encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def _describe(x, arrays: list) -> str:
    """The text of `x` for `fingerprint`; its arrays are appended to `arrays`
    (the text has their dtype and shape)."""
    if isinstance(x, Graph):
        def value(v) -> str:
            return f"{v.name!r}:{v.type}@{v.loc!r}"
        nodes = (f"{n.op}({','.join('_' if v is None else repr(v.name) for v in n.inputs)})"
                 f"{_describe(n.attrs, arrays)}@{n.loc!r}->{','.join(map(value, n.outputs))}" for n in x.nodes)
        return (f"G{x.name!r}({','.join(map(value, x.inputs))})\n" + "\n".join(nodes)
                + f"\nreturn {','.join(repr(v.name) for v in x.outputs)}")
    if isinstance(x, np.ndarray):
        if x.dtype.hasobject:
            raise Uncacheable("cannot fingerprint an array of Python objects")
        arrays.append(x)
        return f"A{x.dtype.str}{x.dtype.name}{x.shape}"  # (name: bfloat16's str is a void type)
    if isinstance(x, (list, tuple)):
        return f"{type(x).__name__}[{','.join(_describe(item, arrays) for item in x)}]"
    if isinstance(x, dict):
        return "{" + ",".join(f"{_describe(k, arrays)}:{_describe(x[k], arrays)}" for k in sorted(x)) + "}"
    if x is None or isinstance(x, (bool, int, float, str, bytes, np.generic, TensorType, Enum)):
        return f"{type(x).__name__}:{x!r}"
    raise Uncacheable(f"cannot fingerprint a {type(x).__name__}")


def key(source: Graph, backend, options: dict, tiles: dict | None = None) -> str | None:
    """The cache key of compiling `source` for `backend` (backends.Backend)
    with the pass pipeline's `options` and the GPU `tiles` tuned for the
    device (all of them: which of them a model's products take is only
    known once it is lowered), or None when the compile is not
    cached: a backend that lowers nothing (the reference), one whose
    schedule is not minidlc's (its source is not in the key), or something
    in the options with no fingerprint."""
    schedule = backend.schedule
    if not backend.runs_kernels or schedule is not None and not schedule.__module__.startswith("minidlc."):
        return None
    lowering = {"target": backend.name, "device": backend.device, "cpu": astuple(backend.cpu),
                "schedule": None if schedule is None else f"{schedule.__module__}.{schedule.__qualname__}",
                "tiles": {shape: astuple(tile) for shape, tile in (tiles or {}).items()}}
    h = hashlib.sha256(f"{SOURCE_VERSION}\n{cpu.describe()}\n{sys.version}\n{np.__version__}\n".encode())
    try:
        fingerprint(h, lowering)
        fingerprint(h, options)
        fingerprint(h, source)
    except Exception as e:  # noqa: BLE001 -- Uncacheable, or a dict whose keys do not sort: compile uncached
        log.info("minidlc: not caching this compile: %s", e)
        return None
    return h.hexdigest()


def _digest(layout: dict, data: bytes) -> str:
    """SHA-256 of the pickle and of where the arrays lie (a damaged offset must not go unseen)."""
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode() + data).hexdigest()


def _aligned(n: int) -> int:
    """n rounded up to a multiple of ALIGN (where each array of an entry starts)."""
    return -(-n // ALIGN) * ALIGN


def _crc32(arrays) -> int:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(a, crc)
    return crc


def _path(key: str) -> Path | None:
    folder = cache.directory("programs")
    return None if folder is None else folder / f"{key}.pkl"


def store(key: str, program) -> None:
    """Save the lowered `program` (loops.program.LoopProgram) under `key`.
    The cache is an optimization: a program that cannot be stored (one that
    does not pickle, a full disk) is not, and the compile goes on."""
    path = _path(key)
    if path is None:
        return
    buffers: list[pickle.PickleBuffer] = []
    try:
        data = pickle.dumps(program, protocol=5, buffer_callback=buffers.append)
    except Exception as e:  # noqa: BLE001 -- e.g. a backend's schedule that is a lambda
        log.warning("minidlc: not caching this compile: its program does not pickle (%s)", e)
        return
    arrays = [b.raw() for b in buffers]
    checked = [i for i, b in enumerate(buffers) if memoryview(b).format not in FLOAT_FORMATS]
    offsets, end = [], 0
    for a in arrays:
        start = _aligned(end)
        offsets.append(start)
        end = start + a.nbytes
    layout = {"pickle": len(data), "checked": checked, "crc32": _crc32(arrays[i] for i in checked),
              "arrays": [[o, a.nbytes] for o, a in zip(offsets, arrays)]}
    header = json.dumps({**layout, "sha256": _digest(layout, data)}).encode()
    top = len(MAGIC) + len(key) + 1 + len(header) + 1 + len(data)
    base = _aligned(top)  # where the arrays start: offsets count from here
    chunks, at = [MAGIC, key.encode(), b"\n", header, b"\n", data, bytes(base - top)], base
    for o, a in zip(offsets, arrays):
        chunks += [bytes(base + o - at), a]
        at = base + o + a.nbytes
    if at > cache.MAX_BYTES // 4:
        log.info("minidlc: not caching a %d MB program (the cache holds %d MB)", at >> 20, cache.MAX_BYTES >> 20)
        return
    cache.write_atomic(path, *chunks)
    cache.evict_if_due()


def load(key: str):
    """The program stored under `key`, or None (no entry, or an entry that is
    not ours, damaged or for another key: then it is compiled and stored again)."""
    path = _path(key)
    if path is None or not cache.trusted(path):
        return None
    try:
        with open(path, "rb") as f:
            memory = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):  # missing, or empty
        return None
    try:
        if memory.readline() != MAGIC or memory.readline() != key.encode() + b"\n":
            raise ValueError("another key")
        header = json.loads(memory.readline())
        start = memory.tell()
        expected = header.pop("sha256")
        data = memory[start:start + header["pickle"]]
        if _digest(header, data) != expected:  # (a truncated pickle fails it too)
            raise ValueError("the program's digest")
        base = _aligned(start + len(data))
        view = memoryview(memory)
        if base + max((o + n for o, n in header["arrays"]), default=0) > len(memory):
            raise ValueError("truncated")
        arrays = [view[base + o:base + o + n] for o, n in header["arrays"]]
        if _crc32(arrays[i] for i in header["checked"]) != header["crc32"]:
            raise ValueError("the arrays' checksum")
        program = pickle.loads(data, buffers=arrays)
    except Exception as e:  # noqa: BLE001 -- any damage is a miss, never a crash
        log.warning("minidlc: ignoring the damaged compile cache entry %s (%s; it will be rebuilt)", path, e)
        return None
    try:
        os.utime(path)  # most recently used
    except OSError:
        pass
    return program
