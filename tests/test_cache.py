"""The cache of compiled code: nothing is loaded unverified (a damaged or
foreign entry is rebuilt, never a crash), the directory is private, and it is
bounded, least recently used entries going first."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minidlc
from minidlc.backends import cache
from minidlc.cli import main
from minidlc.ir import Graph, TensorType

ROOT = Path(__file__).parents[1]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setattr(cache, "CACHE_DIR", d)
    return d


def small_graph(scale: float = 2.0) -> Graph:
    g = Graph()
    x = g.add_input("x", TensorType((4, 8)))
    g.outputs = [g.add("Relu", [g.add("Mul", [x, g.constant(np.float32(scale))]).output]).output]
    return g


def check_runs(m) -> None:
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(4, 8)
    np.testing.assert_array_equal(list(m.run({"x": x}).values())[0], np.maximum(x * 2, 0))


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "other key", "garbage"])
def test_a_damaged_llvm_entry_is_rebuilt_not_loaded(cache_dir, damage):
    first = minidlc.compile(small_graph(), target="llvm")
    entry = first.executable.jit.cache_file
    raw = entry.read_bytes()
    if damage == "flip a byte":
        entry.write_bytes(raw[:-40] + bytes([raw[-40] ^ 0xFF]) + raw[-39:])
    elif damage == "truncate":
        entry.write_bytes(raw[: len(raw) // 2])
    elif damage == "other key":  # a valid entry, but made for another module
        other = minidlc.compile(small_graph(3.0), target="llvm").executable.jit.cache_file
        entry.write_bytes(other.read_bytes())
    else:
        entry.write_bytes(b"\x7fELF" + os.urandom(2000))
    again = minidlc.compile(small_graph(), target="llvm")
    assert not again.executable.jit.cached  # rebuilt...
    check_runs(again)
    assert minidlc.compile(small_graph(), target="llvm").executable.jit.cached  # ...and overwritten


def test_damaged_numba_cache_files_are_dropped_and_rebuilt(tmp_path):
    """Numba's own cache files (pickled object code) are loaded only when they
    match the digests recorded after they were made."""
    script = ("import minidlc, numpy as np, sys; sys.path.insert(0, 'tests'); from test_cache import small_graph; "
              "m = minidlc.compile(small_graph(), target='numba'); "
              "x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(4, 8); "
              "assert (list(m.run({'x': x}).values())[0] == np.maximum(x * 2, 0)).all(); "
              "print(sum(m.executable.calls[0].fn.stats.cache_hits.values()))")
    env = {**os.environ, "MINIDLC_CACHE": str(tmp_path)}

    def run() -> str:
        r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout.strip()
    assert run() == "0"
    data = [p for p in (tmp_path / "numba" / "__pycache__").iterdir() if p.suffix == ".nbc"]
    assert data
    for p in data:
        raw = p.read_bytes()
        p.write_bytes(raw[:100] + os.urandom(len(raw) - 100))
    assert run() == "0"  # not loaded: compiled afresh
    assert run() == "1"  # and cached again


def test_the_cache_is_private_and_one_others_may_write_is_not_used(cache_dir, caplog):
    minidlc.compile(small_graph(), target="llvm")
    assert cache_dir.stat().st_mode & 0o777 == 0o700
    entry = next(cache_dir.glob("*.o"))
    assert entry.stat().st_mode & 0o077 == 0
    entry.chmod(0o666)  # an entry others may write is not loaded
    assert not minidlc.compile(small_graph(), target="llvm").executable.jit.cached
    cache_dir.chmod(0o777)  # nor is a directory others may write used at all
    m = minidlc.compile(small_graph(), target="llvm")
    assert m.executable.jit.cache_file is None and "others may write it" in caplog.text
    check_runs(m)


def test_the_least_recently_used_entries_go_first(cache_dir):
    cache_dir.mkdir(mode=0o700)
    for i in range(5):
        p = cache_dir / f"e{i}.o"
        p.write_bytes(b"x" * 1000)
        os.utime(p, (1000 + i, 1000 + i))
    os.utime(cache_dir / "e0.o")  # used just now
    assert cache.evict(2500) == 3
    assert sorted(p.name for p in cache_dir.iterdir()) == ["e0.o", "e4.o"]


def test_cache_info_and_clear_on_the_command_line(cache_dir, capsys):
    minidlc.compile(small_graph(), target="llvm")
    assert main(["cache", "info"]) == 0
    assert f"cache: {cache_dir}\n1 files" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out == f"removed 1 files from {cache_dir}\n"
    assert not list(cache_dir.rglob("*.o"))
