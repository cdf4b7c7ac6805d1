"""The cache of compiled code: nothing is loaded unverified (a damaged or
foreign entry is rebuilt, never a crash), the directory is private, and it is
bounded, least recently used entries going first."""
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
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
    entry = first.executable.jit.cache_files[0]  # the kernel's module (the programs' is the last)
    raw = entry.read_bytes()
    if damage == "flip a byte":
        entry.write_bytes(raw[:-40] + bytes([raw[-40] ^ 0xFF]) + raw[-39:])
    elif damage == "truncate":
        entry.write_bytes(raw[: len(raw) // 2])
    elif damage == "other key":  # a valid entry, but made for another module
        other = minidlc.compile(small_graph(3.0), target="llvm").executable.jit.cache_files[0]
        entry.write_bytes(other.read_bytes())
    else:
        entry.write_bytes(b"\x7fELF" + os.urandom(2000))
    again = minidlc.compile(small_graph(), target="llvm")
    assert not again.executable.jit.cached  # rebuilt...
    check_runs(again)
    assert minidlc.compile(small_graph(), target="llvm").executable.jit.cached  # ...and overwritten


def two_layers(n: int) -> Graph:
    """Two matmuls (each a kernel of its own); only the second's depends on n."""
    rng = np.random.default_rng(n)
    g = Graph()
    x = g.add_input("x", TensorType((4, 8)))
    y = g.add("Relu", [g.add("MatMul", [x, g.constant(rng.standard_normal((8, 8)).astype(np.float32))]).output])
    g.outputs = [g.add("MatMul", [y.output, g.constant(rng.standard_normal((8, n)).astype(np.float32))]).output]
    return g


def test_llvm_kernels_are_cached_one_by_one_and_shared_between_models(cache_dir):
    """A model whose kernel another model compiled before loads that kernel's
    object code (the cache is keyed per kernel); only what is new is compiled."""
    a = minidlc.compile(two_layers(3), target="llvm").executable
    kernels = len(a.jit.units) - 1  # the last unit is the programs
    assert kernels >= 2 and a.jit.compiled == kernels + 1
    model_b = minidlc.compile(two_layers(5), target="llvm")
    b = model_b.executable  # its first kernel is a's
    assert b.jit.compiled == 2  # the changed kernel, and the programs (their table layout is a's, though)
    assert b.jit.cache_files[0] == a.jit.cache_files[0]
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(4, 8)
    want = minidlc.compile(two_layers(5), target="reference").run({"x": x})
    np.testing.assert_allclose(list(model_b.run({"x": x}).values())[0], list(want.values())[0], rtol=1e-6, atol=1e-6)


def test_parallel_compilation_makes_the_same_object_code(tmp_path, monkeypatch):
    """Kernels compiled in worker processes are the ones one process compiles."""
    from minidlc.backends.llvm import jit

    pools = []
    monkeypatch.setattr(jit, "PARALLEL_MIN_SOURCE", 0)  # fork workers even for this small model
    monkeypatch.setattr(jit, "ProcessPoolExecutor", lambda *a, **k: pools.append(a) or ProcessPoolExecutor(*a, **k))
    objects = {}
    for jobs in ("1", "2"):
        monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / jobs)
        monkeypatch.setenv("MINIDLC_COMPILE_JOBS", jobs)
        m = minidlc.compile(two_layers(3), target="llvm")
        assert m.executable.jit.compiled == len(m.executable.jit.units) == 3
        objects[jobs] = sorted(p.read_bytes() for p in (tmp_path / jobs).glob("*.o"))
        check = np.linspace(-1, 1, 32, dtype=np.float32).reshape(4, 8)
        want = minidlc.compile(two_layers(3), target="reference").run({"x": check})
        np.testing.assert_allclose(list(m.run({"x": check}).values())[0], list(want.values())[0], rtol=1e-6, atol=1e-6)
    assert pools == [(2,)]  # one pool, for jobs=2
    assert objects["1"] == objects["2"]


def test_threads_compiling_at_once_each_get_their_own_code(tmp_path, monkeypatch):
    """Two threads compiling with worker processes at once: each links the
    object code of its own kernels (the compiles take turns)."""
    import threading

    from minidlc.backends.llvm import jit

    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(jit, "PARALLEL_MIN_SOURCE", 0)
    monkeypatch.setenv("MINIDLC_COMPILE_JOBS", "2")
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(4, 8)
    results, errors = {}, []

    def compile_and_run(n: int) -> None:
        try:
            results[n] = list(minidlc.compile(two_layers(n), target="llvm").run({"x": x}).values())[0]
        except Exception as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=compile_and_run, args=(n,)) for n in (6, 7, 9, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for n, got in results.items():
        want = list(minidlc.compile(two_layers(n), target="reference").run({"x": x}).values())[0]
        np.testing.assert_allclose(got, want, rtol=1e-5)


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
    assert m.executable.jit.cache_files == [None, None] and "others may write it" in caplog.text
    check_runs(m)


def test_the_least_recently_used_entries_go_first_and_tuning_records_stay(cache_dir):
    cache_dir.mkdir(mode=0o700)
    (cache_dir / cache.TUNING).mkdir(mode=0o700)
    records = cache_dir / cache.TUNING / "cuda-NVIDIA-H200.json"  # measured on a GPU: not rebuilt from anything
    for i, p in enumerate([records] + [cache_dir / f"e{i}.o" for i in range(5)]):
        p.write_bytes(b"x" * 1000)
        os.utime(p, (1000 + i, 1000 + i))
    os.utime(cache_dir / "e0.o")  # used just now
    assert cache.evict(2500) == 3
    assert sorted(p.name for p in cache_dir.iterdir()) == ["e0.o", "e4.o", cache.TUNING]
    assert cache.evict(0) == 2 and records.exists()


def test_stores_walk_the_cache_for_its_size_at_most_every_few_minutes(cache_dir, monkeypatch):
    """Finding the cache's size walks every entry (seconds for a full cache), so
    stores do it only when the last walk, by any process, is EVICT_EVERY_S old."""
    walks = []
    monkeypatch.setattr(cache, "evict", lambda: walks.append(1) or 0)
    cache_dir.mkdir(mode=0o700)
    for i in range(3):
        cache.store(cache_dir / f"e{i}.o", f"k{i}", b"data")
    assert len(walks) == 1  # the first store (no walk yet), not the next two
    marker = cache_dir / ".last-eviction"
    os.utime(marker, (time.time() - cache.EVICT_EVERY_S - 1,) * 2)
    cache.store(cache_dir / "e3.o", "k3", b"data")
    assert len(walks) == 2 and len(cache.entries()) == 4  # the marker is not an entry


def test_cache_info_and_clear_on_the_command_line(cache_dir, capsys):
    minidlc.compile(small_graph(), target="llvm")
    assert main(["cache", "info"]) == 0
    # the kernel's object code, the programs' (llvm), the loop program (compile_cache)
    assert f"cache: {cache_dir}\n3 files" in capsys.readouterr().out
    records = cache.directory(cache.TUNING) / "cuda-NVIDIA-H200.json"
    records.write_text("{}")
    assert main(["cache", "info"]) == 0
    assert f"GPU tuning records in {records.parent} (kept" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out == f"removed 3 files from {cache_dir}\n"
    assert not list(cache_dir.rglob("*.o")) and not list(cache_dir.rglob("*.pkl")) and records.exists()
