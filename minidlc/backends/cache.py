"""The on-disk cache of compiled code, shared by the CPU backends.

An entry's key is a hash of what it was made from (the loop IR, or the
source generated from it), the host CPU's name and features (code for
AVX-512 must not load on an AVX2 machine), and the version of the code
generator (a hash of its source files), so a stale entry is never found.
`MINIDLC_CACHE` moves the cache; the default is ~/.cache/minidlc.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

CACHE_DIR = Path(os.environ.get("MINIDLC_CACHE", Path.home() / ".cache" / "minidlc"))


def host_cpu() -> str:
    """The CPU name and feature string that code generation targets."""
    import llvmlite.binding as llvm

    return f"{llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()}"


def source_version(folder: Path, helpers: Path | None = None, helper_files: tuple[str, ...] = ()) -> str:
    """A hash of the Python files of a code generator (and of the named helper
    files it uses): compiled code is stale when any of them changes."""
    files = sorted(Path(folder).glob("*.py")) + [Path(helpers) / f for f in helper_files]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def cache_key(*parts: str) -> str:
    return hashlib.sha256("\n".join([*parts, host_cpu()]).encode()).hexdigest()


def write_atomic(path: Path, data: bytes) -> bool:
    """Write `path` so that a concurrent reader sees all of it or nothing; False
    when the cache cannot be written (a read-only home: run uncached)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")  # unique per writer
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return True
    except OSError:
        return False
