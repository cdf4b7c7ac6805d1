"""The on-disk cache of compiled code, shared by the CPU backends.

An entry's key is a hash of what it was made from (the loop IR, or the
source generated from it), the target CPU's name and features
(`minidlc.cpu`: code for AVX-512 must not load on an AVX2 machine), and the version of the code
generator (a hash of its source files), so a stale entry is never found.
`MINIDLC_CACHE` moves the cache; the default is ~/.cache/minidlc.

Native code from disk is loaded into the process, so nothing is loaded
unverified: an entry starts with a header holding its key and a SHA-256 of
its contents (`store`, `load`); a truncated, corrupted or foreign entry is a
miss, rebuilt and overwritten, never a crash. The directory is created
private (0700); a directory or entry that someone else owns, or that others
may write, is not used. Entries are evicted least recently used first once
the cache passes `MINIDLC_CACHE_MB` (default 1024 MiB). Finding the size takes
a walk over every entry (a full cache holds some 100,000 kernels' object
code: seconds), so a store looks at most once every `EVICT_EVERY_S` seconds
across all processes (the time of the last walk is the mtime of a marker
file); in between the cache may pass its bound by what was stored meanwhile.
"""
from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import time
from pathlib import Path

from .. import cpu

CACHE_DIR = Path(os.environ.get("MINIDLC_CACHE", Path.home() / ".cache" / "minidlc"))
MAX_BYTES = int(os.environ.get("MINIDLC_CACHE_MB", "1024")) * 2**20
MAGIC = b"minidlc-cache-1\n"
TUNING = "tuning"  # the sub-folder of tuning records (backends/cuda/tuning.py): measured, not rebuilt, so never evicted
log = logging.getLogger(__name__)


def source_version(folder: Path, helpers: Path | None = None, helper_files: tuple[str, ...] = ()) -> str:
    """A hash of the Python files of a code generator (and of the named helper
    files it uses): compiled code is stale when any of them changes."""
    return files_version(sorted(Path(folder).glob("*.py")) + [Path(helpers) / f for f in helper_files])


def files_version(files: list[Path]) -> str:
    """A hash of `files`, in order: each one's path below their common folder
    (a module moved is a change too), then its contents."""
    root = Path(os.path.commonpath(files))
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(root)}\n".encode() + p.read_bytes())
    return h.hexdigest()


def cache_key(*parts: str) -> str:
    return hashlib.sha256("\n".join([*parts, cpu.describe()]).encode()).hexdigest()


def trusted(path: Path) -> bool:
    """Whether `path` is ours and nobody else may write it."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def directory(sub: str = "") -> Path | None:
    """The cache directory (or a sub-folder), created private; None when it
    cannot be made or cannot be trusted: then the caller compiles uncached."""
    path = CACHE_DIR / sub if sub else CACHE_DIR
    try:
        CACHE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return None
    if not (trusted(CACHE_DIR) and trusted(path)):
        log.warning("minidlc: not using the cache %s: it is not yours, or others may write it", path)
        return None
    return path


def write_atomic(path: Path, *chunks) -> bool:
    """Write `chunks` (bytes-like) one after another to `path` (mode 0600) so
    that a concurrent reader sees all of it or nothing; False when the cache
    cannot be written (a read-only home)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")  # unique per writer, mode 0600
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, path)
        return True
    except OSError:
        return False


EVICT_EVERY_S = 300
_MARKER = ".last-eviction"


def store(path: Path, key: str, data: bytes) -> None:
    """Save `data` as the entry for `key`, with a header that `load` verifies."""
    write_atomic(path, MAGIC + key.encode() + b"\n" + hashlib.sha256(data).hexdigest().encode() + b"\n", data)
    evict_if_due()


def evict_if_due() -> None:
    """After a store: walk the cache for eviction, unless some process did
    within the last EVICT_EVERY_S seconds."""
    marker = CACHE_DIR / _MARKER
    try:
        due = time.time() - marker.stat().st_mtime > EVICT_EVERY_S
    except OSError:
        due = True  # never walked (or the marker is gone)
    if due:
        try:
            marker.touch()  # first, so that other processes do not walk at the same time
        except OSError:
            return
        evict()


def load(path: Path, key: str) -> bytes | None:
    """The verified contents of the entry for `key`, or None (missing, not
    ours, written by others, truncated, corrupted, or for another key)."""
    if not trusted(path):
        return None
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    header = MAGIC + key.encode() + b"\n"
    digest, data = raw[len(header):len(header) + 65], raw[len(header) + 65:]
    if not raw.startswith(header) or digest != hashlib.sha256(data).hexdigest().encode() + b"\n":
        log.warning("minidlc: ignoring the damaged cache entry %s (it will be rebuilt)", path)
        return None
    os.utime(path)  # most recently used
    return data


def entries() -> list[Path]:
    """The cache's files that eviction may delete (all but the marker and the tuning records)."""
    return [p for p in CACHE_DIR.rglob("*") if p.is_file() and p.name != _MARKER and p.parent.name != TUNING] \
        if CACHE_DIR.is_dir() else []


def evict(max_bytes: int | None = None) -> int:
    """Delete least recently used entries until the cache holds at most
    `max_bytes` (default MAX_BYTES); returns how many were deleted. Other
    processes and threads may be writing meanwhile: an entry that is gone
    by the time it is looked at is skipped."""
    limit = MAX_BYTES if max_bytes is None else max_bytes
    files = sorted((st.st_mtime, st.st_size, p) for p in entries() if (st := _stat(p)) is not None)
    total, removed = sum(size for _, size, _ in files), 0
    for _, size, p in files:
        if total <= limit:
            break
        try:
            p.unlink()
            total, removed = total - size, removed + 1
        except OSError:
            pass
    return removed


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def info() -> str:
    files = entries()
    size = sum(st.st_size for p in files if (st := _stat(p)) is not None)
    return (f"cache: {CACHE_DIR}\n{len(files)} files, {size / 2**20:.1f} MiB "
            f"(bound {MAX_BYTES / 2**20:.0f} MiB, MINIDLC_CACHE_MB; least recently used go first)"
            + ("" if not any((CACHE_DIR / TUNING).glob("*.json")) else
               f"\nGPU tuning records in {CACHE_DIR / TUNING} (kept: remove the folder to forget them)"))


def clear() -> int:
    """Delete every entry (not the tuning records: see `entries`); returns how many."""
    return evict(0)
