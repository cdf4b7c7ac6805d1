"""The compile cache (minidlc/compile_cache.py): a compile done before loads
its optimized graph and loop program instead of running the passes and
lowering; it is found only for the same graph, weights and options; and a
damaged or foreign entry is compiled again, never loaded."""
import logging
import pickle

import numpy as np
import pytest

import minidlc
from minidlc import compile_cache
from minidlc.backends import cache, get_backend
from minidlc.ir import Graph, TensorType
from minidlc.loops.lower import CpuChoices
from minidlc.passes.instruments import TimePasses


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setattr(cache, "CACHE_DIR", d)
    return d


def model(scale: float = 0.5, index: int = 2, alpha: float = 0.1) -> Graph:
    """Gemm + LeakyRelu, then a Gather on constant indices (an int array that
    kernels trust: no bounds check), then a concat."""
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", TensorType((4, 16)))
    w = g.constant((rng.standard_normal((16, 8)) * scale).astype(np.float32))
    y = g.add("LeakyRelu", [g.add("Gemm", [x, w]).output], {"alpha": alpha}).output
    picked = g.add("Gather", [y, g.constant(np.array([0, index, 5], np.int64))], {"axis": 1}).output
    g.outputs = [g.add("Concat", [picked, g.add("Exp", [picked]).output], {"axis": 1}).output]
    return g


def stages(m) -> list[str]:
    return list(m.compile_seconds)


def check(m, graph: Graph, x: dict) -> None:
    """`m` computes what the reference computes for `graph`."""
    (name,) = m.output_names
    expected = minidlc.compile(graph, target="reference").run(x)[name]
    np.testing.assert_allclose(m.run(x)[name], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", ["llvm", "numba"])
def test_a_second_compile_loads_the_program_and_runs_the_same(cache_dir, target):
    first = minidlc.compile(model(), target=target)
    assert stages(first) == ["cache", "passes", "lowering", "backend"]  # a miss: compiled, then stored
    again = minidlc.compile(model(), target=target)
    assert stages(again) == ["cache", "backend"]  # a hit: no passes, no lowering
    for stage in ("fused", "loops"):
        assert again.emit(stage) == first.emit(stage)
    x = {"x": np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)}
    check(first, model(), x)
    check(again, model(), x)


@pytest.mark.parametrize("change", [dict(scale=0.25), dict(index=3), dict(alpha=0.2)])
def test_another_weight_index_or_attribute_is_another_entry(cache_dir, change):
    minidlc.compile(model(), target="llvm")
    other = minidlc.compile(model(**change), target="llvm")
    assert "passes" in stages(other)
    check(other, model(**change), {"x": np.ones((4, 16), np.float32)})


def test_the_backends_lowering_choices_and_verify_each_are_part_of_the_key(cache_dir, monkeypatch):
    """A backend registered again under the same name with other lowering
    choices (an A/B in one process) does not get the other's program."""
    from dataclasses import replace

    from minidlc.backends import BACKENDS

    minidlc.compile(model(), target="llvm")
    monkeypatch.setitem(BACKENDS, "llvm", replace(BACKENDS["llvm"], cpu=CpuChoices(copy_padding=True)))
    assert "passes" in stages(minidlc.compile(model(), target="llvm"))
    assert "passes" in stages(minidlc.compile(model(), target="llvm", verify_each=False))


def test_a_program_that_does_not_pickle_is_not_stored_and_the_compile_goes_on(cache_dir, monkeypatch, caplog):
    from dataclasses import replace

    from minidlc.backends import BACKENDS
    from minidlc.loops.schedule import default_schedule

    local = lambda kernel: default_schedule(kernel)  # noqa: E731 -- a lambda does not pickle
    local.__module__ = "minidlc.loops.schedule"  # as if it were minidlc's: the key is made, the pickle fails
    monkeypatch.setitem(BACKENDS, "llvm", replace(BACKENDS["llvm"], schedule=local))
    with caplog.at_level(logging.WARNING, "minidlc"):
        m = minidlc.compile(model(), target="llvm")
    assert "does not pickle" in caplog.text and not list((cache_dir / "programs").glob("*.pkl"))
    check(m, model(), {"x": np.ones((4, 16), np.float32)})


def test_a_schedule_from_outside_minidlc_is_compiled_uncached(cache_dir, monkeypatch):
    from dataclasses import replace

    from minidlc.backends import BACKENDS
    from minidlc.loops.schedule import default_schedule

    def mine(kernel):
        return default_schedule(kernel)
    monkeypatch.setitem(BACKENDS, "llvm", replace(BACKENDS["llvm"], schedule=mine))
    minidlc.compile(model(), target="llvm")
    assert stages(minidlc.compile(model(), target="llvm")) == ["passes", "lowering", "backend"]


def test_options_names_and_tuned_tiles_are_part_of_the_key():
    from minidlc.loops.gpu_gemm import GpuTile

    g, llvm = model(), get_backend("llvm")
    base = dict(opt_level=2, passes=None, calibration=())
    keys = {compile_cache.key(g, llvm, base), compile_cache.key(g, llvm, {**base, "opt_level": 1}),
            compile_cache.key(g, get_backend("numba"), base), compile_cache.key(g, llvm, {**base, "passes": ["fold"]})}
    renamed = model()
    renamed.inputs[0].name = "input"
    keys.add(compile_cache.key(renamed, llvm, base))
    cuda, shape = get_backend("cuda"), "1x64x32x16/1 f32"  # (a GPU's tuning records: GemmShape.key -> tile)
    keys |= {compile_cache.key(g, cuda, base, {shape: GpuTile(32, 32, 16, 2, 2)}),
             compile_cache.key(g, cuda, base, {shape: GpuTile(32, 32, 16, 2, 2, splits=2)})}
    assert len(keys) == 7 and compile_cache.key(model(), llvm, base) in keys  # the same graph again: the same key
    assert compile_cache.key(g, get_backend("reference"), base) is None  # it lowers nothing


def test_a_compile_with_instruments_runs_its_passes_and_stores_nothing(cache_dir):
    minidlc.compile(model(), target="llvm")
    timed = minidlc.compile(model(), target="llvm", instruments=[TimePasses()])
    assert stages(timed) == ["passes", "lowering", "backend"]
    assert len(list((cache_dir / "programs").iterdir())) == 1


def test_an_attribute_without_a_fingerprint_is_compiled_uncached(cache_dir):
    with pytest.raises(compile_cache.Uncacheable):
        compile_cache.fingerprint(compile_cache.hashlib.sha256(), {"f": object()})
    assert compile_cache.key(model(), get_backend("llvm"), {"passes": [object()]}) is None


def entry(cache_dir):
    (path,) = (cache_dir / "programs").iterdir()
    return path


def damage(path, where: str) -> None:
    raw = bytearray(path.read_bytes())
    if where == "offset":  # where a float array lies, in the header
        raw = raw.replace(b'"arrays": [[0, ', b'"arrays": [[64, ', 1)
    elif where == "truncate":
        del raw[len(raw) - 8:]
    elif where == "other key":
        raw = raw.replace(path.stem.encode(), b"0" * len(path.stem), 1)
    else:  # one bit of the pickle, or of the Gather's indices
        raw[raw.index(np.array([0, 2, 5], np.int64).tobytes() if where == "int array" else b"LeakyRelu")] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where, reason", [("program", "the program's digest"), ("int array", "the arrays' checksum"),
                                           ("offset", "the program's digest"),
                                           ("truncate", "truncated"), ("other key", "another key")])
def test_a_damaged_entry_is_compiled_again_and_rewritten(cache_dir, caplog, where, reason):
    minidlc.compile(model(), target="llvm")
    damage(entry(cache_dir), where)
    with caplog.at_level(logging.WARNING, "minidlc"):
        again = minidlc.compile(model(), target="llvm")
    assert "passes" in stages(again) and "damaged compile cache entry" in caplog.text and reason in caplog.text
    check(again, model(), {"x": np.ones((4, 16), np.float32)})
    assert stages(minidlc.compile(model(), target="llvm")) == ["cache", "backend"]  # rewritten


def test_an_entry_others_may_write_is_not_loaded(cache_dir):
    minidlc.compile(model(), target="llvm")
    entry(cache_dir).chmod(0o666)
    assert "passes" in stages(minidlc.compile(model(), target="llvm"))


def test_weights_from_the_cache_are_views_of_the_file_not_copies(cache_dir):
    minidlc.compile(model(), target="llvm")
    program = compile_cache.load(entry(cache_dir).stem)  # (an entry is named by its key)
    weights = [n.attrs["value"] for n in program.graph.nodes if n.op == "Constant"]
    assert weights and all(not w.flags.owndata and w.flags.writeable for w in weights)


def test_a_graph_from_the_cache_names_new_values_as_the_original_would():
    g = model()
    g.fresh_name("v"), g.fresh_name("v")
    copy = pickle.loads(pickle.dumps(g))
    assert copy.fresh_name("v") == g.fresh_name("v") not in ("v", copy.fresh_name("v"))
