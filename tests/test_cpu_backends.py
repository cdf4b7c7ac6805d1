"""The CPU backends (llvm and numba, built from one loop program) against the
reference interpreter: fused elementwise groups, GEMM with epilogues on odd
shapes, reductions, the demo models, the emitted stages, threads, the disk
cache and input validation. Each test runs on both, unless it says why not."""
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidlc
from graph_strategies import elementwise_graphs, random_feeds
from minidlc import cpu as target_cpu  # (`cpu` is this module's fixture of CPU backends)
from minidlc.backends import get_backend
from minidlc.backends.llvm.team import JOB_SLEEPERS, SPIN_LIMIT, futex_syscall
from minidlc.ir import DTYPES, Graph, TensorType
from minidlc.ir.types import dtype_name
from minidlc.ir.registry import IRError
from minidlc.ir.ops.windows import Window
from minidlc.loops.gemm import ROW_BLOCKS_MIN_WIDTH
from minidlc.loops.ir import MAX_VECTOR
from minidlc.loops.lower import window_interior

CPU = ["llvm", "numba"]
DTYPES_NP = {"f32": np.float32, "f64": np.float64}


@pytest.fixture(params=CPU)
def cpu(request):
    return request.param


def check(g: Graph, target: str, seed: int = 0, **options):
    m = minidlc.compile(g, target=target, **options)
    ref = minidlc.compile(g, target="reference")
    feeds = m.random_inputs(seed)
    got, want = m.run(feeds), ref.run(feeds)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
    return m


def matmul_graph(batch, m, k, n, const_b=True, epilogue=True):
    rng = np.random.default_rng(m * 7 + k * 3 + n)
    g = Graph()
    x = g.add_input("x", TensorType(batch + (m, k)))
    w = g.constant(rng.standard_normal((k, n)).astype(np.float32), "w") if const_b else \
        g.add_input("w", TensorType(batch + (k, n)))
    y = g.add("MatMul", [x, w]).output
    if epilogue:
        y = g.add("Add", [y, g.constant(rng.standard_normal(n).astype(np.float32), "bias")]).output
        y = g.add("Relu", [y]).output
    g.outputs = [y]
    return g


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (7, 13, 17), (6, 16, 16), (31, 5, 33), (2, 64, 47)])
def test_gemm_odd_shapes_with_epilogue(cpu, m, k, n):
    m_ = check(matmul_graph((), m, k, n), cpu)
    loops = m_.emit("loops")
    assert "w_packed" in loops  # the weight was packed at compile time
    assert loops.count("kernel ") == 1 and "max(" in loops  # bias and relu ran in the GEMM's epilogue


@pytest.mark.parametrize("batch", [(1,), (2, 3)])
def test_batched_matmul_with_runtime_b(cpu, batch):
    check(matmul_graph(batch, 5, 7, 19, const_b=False, epilogue=False), cpu)


@pytest.mark.parametrize("trans_a,trans_b,beta", [(0, 0, 1.0), (1, 0, 0.5), (0, 1, 2.0), (1, 1, 0.0)])
def test_gemm_attributes(cpu, trans_a, trans_b, beta):
    rng = np.random.default_rng(1)
    g = Graph()
    a = g.add_input("a", TensorType((13, 7) if trans_a else (7, 13)))
    b = g.constant(rng.standard_normal((19, 13) if trans_b else (13, 19)).astype(np.float32))
    c = g.constant(rng.standard_normal((1, 19)).astype(np.float32))
    g.outputs = [g.add("Gemm", [a, b, c], {"alpha": 0.5, "beta": beta, "transA": trans_a, "transB": trans_b}).output]
    check(g, cpu)


def test_fused_elementwise_broadcast_and_reductions(cpu):
    g = Graph()
    x = g.add_input("x", TensorType((3, 5, 17)))
    y = g.add_input("y", TensorType((5, 1)))
    t = g.add("Tanh", [g.add("Mul", [x, y]).output]).output
    s = g.add("Softmax", [t], {"axis": -1}).output
    r = g.add("ReduceSum", [s], {"axes": [1], "keepdims": 0}).output
    scale = g.constant(np.linspace(0.5, 1.5, 17).astype(np.float32))
    bias = g.constant(np.linspace(-1, 1, 17).astype(np.float32))
    ln = g.add("LayerNormalization", [x, scale, bias], {"axis": -1}).outputs[0]
    g.outputs = [r, ln, g.add("Sigmoid", [ln]).output]
    check(g, cpu)


@pytest.mark.parametrize("target", [*CPU, "cuda"])  # (cuda: on the simulator)
@pytest.mark.parametrize("a_shape,b_shape", [((5,), (5,)), ((5,), (5, 7)), ((5,), (2, 3, 5, 7)), ((4, 5), (5,)),
                                             ((2, 3, 4, 5), (5,))])
@pytest.mark.parametrize("const_b", [True, False])
def test_matmul_with_a_vector_operand_is_native(target, a_shape, b_shape, const_b):
    """NumPy's rule: a 1-D A is a row, a 1-D B a column, and the output has no
    axis for either. Native on every target, B a weight or computed."""
    rng = np.random.default_rng(len(a_shape) * 10 + len(b_shape))
    g = Graph()
    a = g.add_input("a", TensorType(a_shape))
    b = g.constant(rng.standard_normal(b_shape).astype(np.float32), "w") if const_b else \
        g.add_input("b", TensorType(b_shape))
    g.outputs = [g.add("Relu", [g.add("MatMul", [a, b]).output]).output]
    m = check(g, target)
    assert "runs on NumPy" not in m.emit("loops")
    assert m.run(m.random_inputs(0))["relu"].shape == np.matmul(np.ones(a_shape), np.ones(b_shape)).shape


@pytest.mark.parametrize("target", [*CPU, "cuda"])  # (cuda: on the simulator)
def test_integer_division_by_computed_divisors_compiles_and_never_traps(target):
    """Divisors that interval arithmetic bounds: a u8 widened (it is never -1,
    so the simplifier drops that test: the verifier still accepts what is
    left), and one whose i64 arithmetic wraps to 0 at b = 255 (bounds past
    the dtype's range are no bounds, so its zero test stays). A quotient as a
    Gather index: its bounds are unknown, so the clamp makes them."""
    g = Graph()
    a, b = g.add_input("a", TensorType((4,), "i64")), g.add_input("b", TensorType((4,), "u8"))
    wide = g.add("Cast", [b], {"to": "i64"}).output
    big = g.constant(np.array(2 ** 56, np.int64))
    wraps = g.add("Add", [g.add("Mul", [wide, big]).output, big]).output  # 256 * 2^56 wraps to 0
    index = g.add("Div", [a, g.add("Add", [wide, g.constant(np.array(1, np.int64))]).output]).output
    g.outputs = [g.add("Div", [a, wide]).output, g.add("Mod", [a, wide]).output, g.add("Div", [a, wraps]).output,
                 g.add("Gather", [g.constant(np.arange(5, dtype=np.float32) * 10), index], {"axis": 0}).output]
    m = minidlc.compile(g, target=target)
    assert "runs on NumPy" not in m.emit("loops")
    feeds = {"a": np.array([7, -3, 3, 4], np.int64), "b": np.array([2, 0, 255, 1], np.uint8)}
    got = [out.tolist() for out in m.run(feeds).values()]
    assert got == [[3, 0, 0, 4], [1, 0, 3, 0], [0, 0, 0, 0], [20.0, 20.0, 0.0, 20.0]]
    assert got == [out.tolist() for out in minidlc.compile(g, target="reference").run(feeds).values()]


@pytest.mark.parametrize("target", [*CPU, "cuda"])  # (cuda: on the simulator)
def test_boolean_max_and_min_reductions_are_any_and_all(target):
    """ReduceMax over bools is `any`, ReduceMin `all`, natively (on the GPU a
    row of 200 is block-wide: `or` and `and` have identities for its tree)."""
    x = np.random.default_rng(0).random((3, 200)) < 0.01
    x[2] = True
    for op, want in (("ReduceMax", np.any), ("ReduceMin", np.all)):
        for axis in (0, 1):
            g = Graph()
            inp = g.add_input("x", TensorType(x.shape, "bool"))
            g.outputs = [g.add(op, [inp], {"axes": [axis], "keepdims": 0}).output]
            m = minidlc.compile(g, target=target)
            assert "runs on NumPy" not in m.emit("loops")
            np.testing.assert_array_equal(m.run({"x": x})[g.outputs[0].name], want(x, axis=axis))
            if target == "cuda" and axis == 1:
                assert "__syncthreads" in m.emit("loops")


@pytest.mark.parametrize("target", [*CPU, "cuda"])  # (cuda: on the simulator)
def test_softmax_over_a_recomputed_producer_never_overflows(target):
    """Softmax reads its input in three passes and recomputes the producers
    fused into it in each (here an Exp). Two passes may compute exp(81) =
    1.5e35 an ulp apart (an FMA in one, not the other), and exp() of an ulp
    over the row's max is inf: x - max is held at 0 or below."""
    feeds = {"x": np.array([[81, 0, 81] + [1] * 13, [81] * 16], np.float32)}
    columns = [[0.5, 0.5], [1 / 16, 1 / 16]]  # columns 0 and 2: the two maxima, and a row of 16
    want = {"Softmax": columns, "LogSoftmax": np.log(columns)}
    for op in want:  # (one graph each: in one, the two Exps would be one, computed once)
        g = Graph()
        g.outputs = [g.add(op, [g.add("Exp", [g.add_input("x", TensorType((2, 16)))]).output], {"axis": -1}).output]
        got = minidlc.compile(g, target=target).run(feeds)[g.outputs[0].name]
        np.testing.assert_allclose(got[:, [0, 2]], want[op], rtol=1e-6, err_msg=op)


@pytest.mark.parametrize("target", [*CPU, "cuda"])  # (cuda: on the simulator)
@pytest.mark.parametrize("base,exponent", [("i32", "i32"), ("i64", "i64"), ("i64", "f32"), ("f16", "i32"), ("f16", "f32"),
                                           ("f16", "f16")])
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 3^19 is inf in f16
def test_powers_compute_in_f64_as_the_reference_does(target, base, exponent):
    """Pow of integers (and of f16) runs natively, computed in f64 and
    converted once, as minidlc's reference computes it: exact on integer
    powers up to 2^53 (3^33 in i64), a negative exponent truncates towards 0,
    a float exponent's power is truncated, f16 (widened through f32) is
    rounded once from f64."""
    g = Graph()
    a, b = g.add_input("a", TensorType((8,), base)), g.add_input("b", TensorType((8,), exponent))
    g.outputs = [g.add("Pow", [a, b]).output]
    m = minidlc.compile(g, target=target)
    assert "NumPy" not in m.emit("loops")
    fractional = exponent.startswith("f")
    feeds = {"a": np.array([7, -7, 9, 1, 3, 2, 4, 5], DTYPES[base]),
             "b": np.array([2, 3, 0, 5, 33 if base == "i64" else 19, -1, 0.5 if fractional else 4,
                            1.5 if fractional else 7], DTYPES[exponent])}
    want = minidlc.compile(g, target="reference").run(feeds)["pow"]
    got = m.run(feeds)["pow"]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    if base == "i64" and exponent == "i64":
        assert got[4] == 3 ** 33 and got[5] == 0


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64])
@pytest.mark.parametrize("target", [*CPU, "cuda"])  # (cuda: on the simulator, which conftest.py sets)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the simulator's NumPy scalars wrap, warning
def test_integer_division_is_native_and_never_traps(target, dtype):
    """Div and Mod on integers run in kernels. x86 faults on a zero divisor and
    on the most negative value over -1: those give 0 (ONNX leaves x / 0
    undefined; NumPy gives 0 too) and the wrapped negation, or remainder 0,
    with no trap. Div truncates; Mod floors (fmod=0) or takes the dividend's
    sign (fmod=1). The reference interpreter agrees."""
    info = np.iinfo(dtype)
    pairs = [(7, 2), (info.max, 3), (5, 0), (0, 7), (info.max, info.max)]
    if info.min < 0:
        pairs += [(-7, 2), (7, -2), (-7, -2), (info.min, -1), (info.max, -1), (info.min, 0), (info.min, 3)]
    a, b = (np.array(column, dtype) for column in zip(*pairs))
    g = Graph()
    x = g.add_input("a", TensorType(a.shape, dtype_name(a.dtype)))
    y = g.add_input("b", x.type)
    g.outputs = [g.add("Div", [x, y]).output, g.add("Mod", [x, y]).output, g.add("Mod", [x, y], {"fmod": 1}).output]
    m = minidlc.compile(g, target=target)
    assert "runs on NumPy" not in m.emit("loops")
    got = [out.tolist() for out in m.run({"a": a, "b": b}).values()]

    def wrapped(v: int) -> int:
        return (v - info.min) % (info.max - info.min + 1) + info.min

    def want(p: int, q: int) -> tuple[int, int, int]:  # in Python's integers: Div, Mod, Mod with fmod
        if q == 0:
            return 0, 0, 0
        quotient = abs(p) // abs(q) * (1 if (p < 0) == (q < 0) else -1)
        return wrapped(quotient), p % q, p - q * quotient
    assert got == [list(column) for column in zip(*(want(p, q) for p, q in pairs))]
    assert got == [out.tolist() for out in minidlc.compile(g, target="reference").run({"a": a, "b": b}).values()]


@pytest.mark.parametrize("target,stages", [
    ("llvm", {"llvm": "define void @", "asm": "fma"}),
    ("numba", {"numba": "prange("}),
])
def test_emit_stages_and_threads_agree(target, stages):
    g = matmul_graph((), 256, 256, 160)  # big enough to run in parallel
    m1 = minidlc.compile(g, target=target, threads=1)
    m2 = minidlc.compile(g, target=target, threads=2)
    feeds = m1.random_inputs()
    np.testing.assert_array_equal(m1.run(feeds)["relu"], m2.run(feeds)["relu"])
    for stage, text in stages.items():
        assert text in m1.emit(stage).lower()
    assert "// parallel" in m1.emit("loops")
    with pytest.raises(ValueError, match=f"cannot emit 'ptx'; it emits graph, fused, loops, dot, svg, onnx, {', '.join(stages)}"):
        m1.emit("ptx")


def test_llvm_code_is_cached_on_disk(tmp_path, monkeypatch):
    from minidlc.backends import cache

    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    g = matmul_graph((), 3, 4, 5)
    first = minidlc.compile(g, target="llvm")
    assert not first.executable.jit.cached and list(tmp_path.glob("*.o"))
    second = minidlc.compile(g, target="llvm")
    assert second.executable.jit.cached
    assert second.executable.jit._texts is None  # a cache hit generates no LLVM IR at all...
    feeds = first.random_inputs()
    np.testing.assert_array_equal(first.run(feeds)["relu"], second.run(feeds)["relu"])
    assert second.emit("llvm") == first.emit("llvm")  # ...until asked to show it: the same optimized IR


def test_numba_code_is_cached_on_disk(tmp_path):
    """A second process compiling the same model loads Numba's cached code
    (the module is written under a hash of its text, `cache=True` does the rest)."""
    import subprocess

    script = ("import minidlc, sys; sys.path.insert(0, 'tests'); from test_cpu_backends import matmul_graph; "
              "m = minidlc.compile(matmul_graph((), 3, 4, 5), target='numba'); "
              "print(sum(m.executable.calls[0].fn.stats.cache_hits.values()))")
    env = {**__import__("os").environ, "MINIDLC_CACHE": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                           cwd=Path(__file__).parents[1]) for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["0", "1"], [r.stderr[-2000:] for r in runs]
    assert len(list((tmp_path / "numba").glob("m_*.py"))) == 1


def test_bad_input_is_a_python_error_before_native_code(cpu):
    m = minidlc.compile(matmul_graph((), 3, 4, 5), target=cpu)
    with pytest.raises(minidlc.InputError, match=r"input 'x' has shape \[4, 4\], expected \[3, 4\]"):
        m.run({"x": np.zeros((4, 4), np.float32)})


@pytest.mark.parametrize("form", ["transposed view", "broadcast row", "subclass", "mapping"])
def test_feeds_in_any_array_form_give_the_same_outputs(cpu, form):
    """run() takes the feeds as they are when each is a C-contiguous array of
    the input's dtype (its quick path); anything else is converted first."""
    from types import MappingProxyType

    m = minidlc.compile(matmul_graph((), 3, 4, 5), target=cpu)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    x[1:] = x[0] if form == "broadcast row" else x[1:]
    want = m.run({"x": x})
    given = {"transposed view": np.ascontiguousarray(x.T).T, "broadcast row": np.broadcast_to(x[0], x.shape),
             "subclass": x.view(type("Tagged", (np.ndarray,), {}))}.get(form, x)
    feeds = MappingProxyType({"x": given}) if form == "mapping" else {"x": given}
    assert m._as_given(feeds) is None  # (the conversion is what this tests)
    for got, ref in zip(m.run(feeds).values(), want.values()):
        np.testing.assert_array_equal(got, ref)


def test_memory_plan_reuses_the_arena():
    g = Graph()
    v = g.add_input("x", TensorType((64, 64)))
    for _ in range(6):  # a chain of unfusable reductions: only neighbours are live together
        v = g.add("Softmax", [v], {"axis": 0}).output
    g.outputs = [v]
    m = check(g, "llvm", opt_level=0)  # the plan is the loop program's: the same for every backend
    plan = m.program.plan
    assert plan.size < sum(s.size for s in plan.slots.values()) / 2


@pytest.mark.parametrize("target,threads,programs", [("llvm", 3, ("llvm", "define void @program")),
                                                     ("numba", 2, ("numba", "def program"))])
def test_native_programs_around_a_numpy_fallback_on_many_threads(target, threads, programs):
    """Native steps before and after a fallback form two programs; 3 threads on
    any machine exercise uneven shares and the stages' order (Numba's pool has
    as many threads as cores). The MatMul is big enough to run in parallel."""
    g = Graph()
    x = g.add_input("x", TensorType((250, 200)))
    y = g.add("Relu", [g.add("MatMul", [x, g.constant(np.ones((200, 64), np.float32), "w")]).output]).output
    q = g.add("Cast", [g.add("ReduceMean", [g.add("Cast", [y], {"to": "i32"}).output],  # of integers: on NumPy
                             {"axes": [1], "keepdims": 1}).output], {"to": "f32"}).output
    g.outputs = [g.add("Softmax", [g.add("Add", [q, y]).output], {"axis": 1}).output]
    m = minidlc.compile(g, target=target, threads=threads, opt_level=0)  # unfused: the Div is a step of its own
    feeds = {"x": np.random.default_rng(0).integers(-5, 6, (250, 200)).astype(np.float32)}  # exact sums
    np.testing.assert_allclose(m.run(feeds)["softmax"], minidlc.compile(g).run(feeds)["softmax"], rtol=1e-5)
    assert m.emit("loops").count("runs on NumPy") == 1
    assert m.emit(programs[0]).count(programs[1]) == 2
    if target == "llvm":
        assert m.executable.team.threads == threads


@pytest.mark.parametrize("name", ["mlp", "tfblock", "convnet"])
def test_memory_plan_near_its_lower_bound_and_weights_packed_once(name):
    from minidlc.demo_models import build_model

    m = minidlc.compile(build_model(name), target="llvm")
    plan = m.program.plan
    assert plan.size <= 1.25 * plan.lower_bound()
    from minidlc.passes.options import constant_bytes

    assert m.program.weight_bytes() <= 1.05 * constant_bytes(m.source)  # packed copies replace, not join, the originals
    assert "a perfect plan needs" in m.emit("loops")


@pytest.mark.parametrize("target,name,threads", [
    ("llvm", "mlp", 1), ("llvm", "tfblock", 2), ("llvm", "convnet", 3), ("numba", "mlp", 1), ("numba", "tfblock", 2),
    pytest.param("numba", "convnet", 2, marks=pytest.mark.slow),  # a minute of cold Numba compile
])
def test_demo_models_match_reference(target, name, threads):
    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    from models import build_model

    model = build_model(name)
    m = minidlc.compile(model, target=target, threads=threads)
    ref = minidlc.compile(model, target="reference")
    feeds = m.random_inputs(3)
    got, want = m.run(feeds), ref.run(feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,wshape,attrs,kind", [
    ((1, 3, 7, 5), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}, "im2col"),
    ((2, 4, 9, 11), (6, 2, 3, 2), {"group": 2, "strides": [2, 1], "dilations": [1, 2], "pads": [0, 1, 2, 0]}, "im2col"),
    ((1, 6, 5, 5), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1]}, "stencil"),  # depthwise
    ((2, 3, 9, 8), (6, 1, 3, 3), {"group": 3, "strides": [2, 2], "pads": [1, 0, 1, 2]}, "stencil"),  # multiplier 2
    ((1, 4, 21), (4, 1, 5), {"group": 4, "dilations": [2], "pads": [4, 4]}, "stencil"),  # 1-D, dilated
    ((3, 2, 13), (5, 2, 4), {"strides": [3], "pads": [2, 1]}, "im2col"),         # 1-D
    ((2, 5, 9, 7), (11, 5, 3, 3), {"pads": [1, 2, 0, 1], "dilations": [2, 1]}, "direct"),  # pixels x channels
    ((1, 4, 6, 13), (18, 2, 1, 3), {"group": 2, "strides": [1, 2]}, "direct"),  # grouped, no padding
    ((2, 8, 5, 16), (16, 8, 3, 3), {"pads": [1, 1, 1, 1]}, "direct"),  # k = 72: long enough to transpose blocks
    # panels of 16 pixels in one output row, stride 1 along it: the pixels are read in place
    ((2, 3, 5, 32), (16, 3, 3, 3), {"pads": [1, 1, 1, 1]}, "in place"),  # a stem: k = 27
    ((1, 4, 7, 18), (4, 1, 3, 3), {"group": 4, "strides": [2, 1], "pads": [0, 0, 1, 0]}, "stencil"),  # depthwise
    ((1, 2, 4, 18), (9, 2, 2, 2), {"dilations": [1, 2]}, "in place"),  # no padding: x itself
    # pointwise (1x1, stride 1, no padding), 48 pixels: panels of 16 read in place across rows
    ((2, 8, 4, 12), (16, 8, 1, 1), {}, "in place"),
    # one full panel and an edge one, rows of 30: the parallel loop shares out the rows too
    ((1, 4, 6, 30), (20, 4, 3, 3), {"pads": [1, 1, 1, 1]}, "direct"),
    ((1, 16, 20, 40), (20, 16, 3, 3), {"pads": [1, 1, 1, 1]}, "direct"),  # enough work for two threads
])
def test_conv_as_gemm_with_bias_and_relu(cpu, shape, wshape, attrs, kind):
    rng = np.random.default_rng(2)
    g = Graph()
    x = g.add_input("x", TensorType(shape))
    w = g.constant(rng.standard_normal(wshape).astype(np.float32), "w")
    b = g.constant(rng.standard_normal(wshape[0]).astype(np.float32), "b")
    y = g.add("Conv", [x, w, b], attrs).output
    g.outputs = [g.add("Relu", [y]).output]
    m = check(g, cpu)
    loops = m.emit("loops")
    packed = {"x_im2col_packed": "im2col", "w_packed": "direct"}
    assert [packed[name] for name in packed if name in loops] == ([] if kind in ("in place", "stencil") else [kind])
    assert ("acc[" not in loops) == (kind == "stencil")  # a stencil sums in registers, a GEMM in a block
    assert "NumPy" not in loops
    # on llvm the direct form (on output rows at least ROW_BLOCKS_MIN_WIDTH wide) and the stencil read x
    # where it lies, testing reads at the borders; the im2col forms, narrow direct convs and numba copy x
    # padded once
    wide = m.graph.outputs[0].type.shape[-1] >= ROW_BLOCKS_MIN_WIDTH
    tested = not get_backend(cpu).cpu.copy_padding and (kind == "stencil" or kind == "direct" and wide)
    assert ("x_padded" in loops) == (not tested and any(attrs.get("pads", [0])))


@pytest.mark.parametrize("shape,wshape,attrs,wide", [
    ((1, 8, 9, 7), (48, 8, 3, 3), {"pads": [1, 1, 1, 1]}, False),  # direct on a narrow map, k of 72: CONFIG's block
    ((1, 32, 14, 14), (64, 32, 3, 3), {"pads": [1, 1, 1, 1]}, "7"),  # ... k of 288: wide, 7 rows (196 pixels)
    ((1, 256, 7, 7), (40, 256, 1, 1), {}, "7"),                   # 49 pixels, 40 channels: an edge panel of 8
    ((1, 256, 6, 6), (32, 256, 1, 1), {}, True),                  # 36 pixels: 8 rows and an edge of 4
    ((1, 8, 5, 24), (48, 8, 3, 3), {"pads": [1, 1, 1, 1]}, True),  # on row blocks, 48 channels: an edge of 16
    ((1, 8, 6, 30), (40, 8, 3, 3), {"pads": [1, 1, 1, 1]}, True),  # direct on row blocks, an edge of 8
    ((1, 8, 6, 30), (16, 8, 3, 3), {"pads": [1, 1, 1, 1]}, False),  # direct, 16 channels: half a panel
    ((2, 8, 4, 16), (12, 8, 1, 1), {}, True),                     # pointwise, 64 pixels: read in place
    ((2, 8, 4, 12), (12, 8, 1, 1), {}, True),                     # 48 pixels: a panel and an edge of 16
    ((1, 3, 9, 64), (20, 3, 3, 3), {"pads": [1, 1, 1, 1]}, True),  # rows of 64 read in place
    ((1, 3, 9, 48), (20, 3, 3, 3), {"pads": [1, 1, 1, 1]}, False),  # rows of 48: in place in panels of 16 only
    ((1, 3, 9, 9), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}, True),   # packed im2col (4 channels), 81 pixels
    ((1, 8, 5, 24), (48, 8, 3, 3), {"pads": [1, 1, 1, 1], "f64": True}, False),  # f64: 16 accumulators of 8 lanes
])
def test_conv_takes_the_wide_block_where_its_columns_fill_it(shape, wshape, attrs, wide):
    """An f32 Conv takes WIDE_CONFIG (8 x 32 with AVX-512) where its columns,
    output channels in the direct form (on row blocks, or on a narrow map
    with a long k loop) and pixels in the im2col form, fill panels that
    wide, and the panels read in place where CONFIG's would (a
    pointwise conv's pixels in panels of 32 and an edge one of 16); else
    CONFIG. On a narrow map whose pixels 7 rows divide and 8 do not
    (`wide` "7"), the block is a row shorter. Exact against the reference
    either way."""
    from minidlc.loops.gemm import CONFIG, WIDE_CONFIG, GemmConfig

    rng = np.random.default_rng(3)
    attrs = dict(attrs)
    dtype = "f64" if attrs.pop("f64", False) else "f32"
    g = Graph()
    x = g.add_input("x", TensorType(shape, dtype))
    w, b = (g.constant(rng.standard_normal(s).astype(DTYPES[dtype]), n) for n, s in (("w", wshape), ("b", wshape[:1])))
    g.outputs = [g.add("Relu", [g.add("Conv", [x, w, b], attrs).output]).output]
    loops = check(g, "llvm").emit("loops")
    block, other = (WIDE_CONFIG, CONFIG) if wide else (CONFIG, WIDE_CONFIG)
    if wide == "7" and WIDE_CONFIG.mr == 8:
        block = GemmConfig(7, WIDE_CONFIG.nr)
    assert f"{dtype} acc[{block.mr * block.nr}];" in loops
    assert block == other or f"{dtype} acc[{other.mr * other.nr}];" not in loops


@pytest.mark.parametrize("rolled", [True, False])
@pytest.mark.parametrize("shape,wshape,attrs,window", [
    ((1, 16, 12, 12), (16, 16, 3, 3), {"pads": [1, 1, 1, 1]}, 2),  # direct: k loops over channels, rows, columns
    ((1, 16, 9), (24, 16, 3), {"pads": [1, 1]}, 1),                # 1-D
    ((1, 32, 6, 6), (16, 32, 1, 1), {}, 0),                        # pointwise: channels only
])
def test_a_full_register_block_keeps_a_convs_window_loops_rolled(cpu, shape, wshape, attrs, window, rolled,
                                                                 monkeypatch):
    """With a block that fills the registers (`rolled_window`, AVX2's 6 x 16),
    a direct conv's loops over channels and kernel window are ROLLED; a
    pointwise conv's lone channel loop (nothing shared between steps) and
    any conv under a block with registers to spare stay serial. Exact
    against the reference either way, on both CPU backends."""
    import minidlc.compile_cache
    from minidlc.loops import gemm

    block = gemm.GemmConfig(6, 16, rolled_window=rolled)
    monkeypatch.setattr(gemm, "CONFIG", block)
    monkeypatch.setattr(gemm, "WIDE_CONFIG", block)
    monkeypatch.setattr(minidlc.compile_cache, "key", lambda *a, **k: None)  # (a cached program has the other)
    rng = np.random.default_rng(7)
    g = Graph()
    x = g.add_input("x", TensorType(shape))
    w = g.constant(rng.standard_normal(wshape).astype(np.float32), "w")
    g.outputs = [g.add("Relu", [g.add("Conv", [x, w], attrs).output]).output]
    loops = check(g, cpu).emit("loops")
    k_loops = [line for line in loops.splitlines() if re.search(r"for \(k\d+ = ", line)]
    assert len(k_loops) >= window + 1
    assert all(line.endswith("// rolled") == (rolled and window > 0) for line in k_loops), k_loops


@pytest.mark.parametrize("shape,wshape,attrs", [
    ((1, 8, 3), (16, 8, 1), {}),                                   # one block of 3 rows
    ((1, 160, 5), (32, 160, 2), {"strides": [2], "dilations": [2], "pads": [1, 1]}),
    ((1, 96, 15, 10), (48, 96, 1, 3), {"pads": [2, 1, 0, 2]}),  # 17 x 10 pixels: an edge block of 2
])
def test_a_short_tile_stored_transposed_compiles(shape, wshape, attrs):
    """A direct conv's edge block of fewer rows than a vector's lanes is
    transposed in a tile padded to a power of two: padded with undef rows,
    LLVM's X86 instruction selection aborted the process ("Cannot select:
    zero_extend_vector_inreg") when an Add read the columns; zeros compile."""
    rng = np.random.default_rng(5)
    g = Graph()
    x = g.add_input("x", TensorType(shape))
    w = g.constant(rng.standard_normal(wshape).astype(np.float32), "w")
    y = g.add("Conv", [x, w], attrs).output
    g.outputs = [g.add("Add", [y, g.add_input("r", TensorType(y.type.shape))]).output]
    check(g, "llvm")


@pytest.mark.parametrize("shape,wshape,attrs,form", [
    ((1, 8, 8, 64), (16, 8, 1, 1), {"strides": [2, 2]}, "in place"),  # 4 x 32 pixels: whole panels
    ((2, 6, 7, 9), (10, 6, 1, 1), {"strides": [2, 3]}, "direct"),  # 4 x 3, the last read at the edge
    ((1, 4, 5, 33), (8, 2, 1, 1), {"group": 2, "strides": [1, 2]}, "im2col"),  # grouped, 4 channels a group
    ((1, 4, 21), (8, 4, 1), {"strides": [3]}, "direct"),  # 1-D
])
def test_a_strided_pointwise_conv_reads_a_compact_copy_of_its_pixels(cpu, shape, wshape, attrs, form):
    """A 1x1 conv with strides and no padding (ResNet's projections) copies the
    pixels it reads into a compact buffer, then is a conv of stride 1 over it,
    in whichever form suits that: whole panels of pixels are read in place."""
    rng = np.random.default_rng(4)
    g = Graph()
    x = g.add("Relu", [g.add_input("x", TensorType(shape))]).output  # computed in the group: read through Relu
    w = g.constant(rng.standard_normal(wshape).astype(np.float32), "w")
    g.outputs = [g.add("Conv", [x, w, g.constant(rng.standard_normal(wshape[0]).astype(np.float32), "b")],
                       attrs).output]
    loops = check(g, cpu).emit("loops")
    assert "_strided[" in loops and "NumPy" not in loops
    packed = {"w_packed": "direct", "_im2col_packed": "im2col"}
    assert [kind for name, kind in packed.items() if name in loops] == ([] if form == "in place" else [form])


@pytest.mark.parametrize("target", [*CPU, "cuda"])  # (cuda: on the simulator)
@pytest.mark.parametrize("shape,wshape,attrs", [
    ((2, 3, 6, 7), (8, 3, 3, 3), {"pads": [1, 1, 1, 1]}),                  # im2col, the weight as A
    ((1, 4, 5, 20), (16, 4, 3, 3), {"pads": [1, 0, 1, 2], "strides": [1, 2]}),  # would be direct with a stored weight
    ((1, 4, 6, 6), (6, 2, 1, 1), {"group": 2, "strides": [2, 2]}),         # grouped, strided 1x1: the compact copy
    ((1, 5, 7, 9), (5, 1, 3, 3), {"group": 5, "pads": [1, 1, 1, 1]}),      # depthwise: the stencil reads it
    ((2, 3, 11), (4, 3, 2), {"dilations": [2]}),                            # 1-D
])
def test_a_conv_with_a_weight_computed_at_run_time_runs_natively(target, shape, wshape, attrs):
    """The weight is a graph input, scaled in the graph (computed in the
    group): the im2col form reads it as A where it lies, the depthwise stencil
    tap by tap; nothing is packed at compile time and nothing falls back."""
    g = Graph()
    x = g.add_input("x", TensorType(shape))
    w = g.add("Mul", [g.add_input("w", TensorType(wshape)), g.constant(np.float32(0.5), "half")]).output
    g.outputs = [g.add("Conv", [x, w], attrs).output]
    loops = check(g, target).emit("loops")
    assert "NumPy" not in loops and f"{w.name}_packed" not in loops


@pytest.mark.parametrize("target", [*CPU, "cuda"])  # (cuda: on the simulator)
@pytest.mark.parametrize("w_kind,x_dtype,w_dtype,w_zero,x_zero,attrs", [
    ("input", "u8", "u8", "input", "input", {"pads": [1, 1, 1, 1]}),           # all at run time
    ("input", "i8", "i8", "per channel", "input", {"group": 2, "strides": [2, 1]}),
    ("input", "u8", "i8", "stored", None, {"pads": [0, 1, 2, 0]}),
    ("input", "i8", "u8", None, "stored", {}),
    ("stored", "u8", "u8", "input", None, {"pads": [1, 1, 1, 1]}),   # a stored weight, its zero point an input
    ("stored", "u8", "i8", None, "input", {"pads": [1, 1, 1, 1]}),   # int8 weight, x's zero point an input: no dot4
])
def test_integer_convs_with_run_time_weights_centre_each_weight_as_they_read_it(target, w_kind, x_dtype, w_dtype,
                                                                                w_zero, x_zero, attrs):
    """ConvInteger (QLinearConv's core) with its weight, or its weight's zero
    point, computed at run time: the im2col form reads each weight as A and
    subtracts its zero point there (stored, per output channel, or itself an
    input); x's zero point is a stored one or an input, and padding reads as
    it (an int8 weight with x's zero point an input takes the direct form,
    centring each x as it reads it). Exact against NumPy."""
    rng = np.random.default_rng(8)
    shape, wshape = (1, 4, 6, 7), (8, 4 // attrs.get("group", 1), 3, 3)
    lows = {"u8": 0, "i8": -128}
    g = Graph()
    x = g.add_input("x", TensorType(shape, x_dtype))
    weight = rng.integers(lows[w_dtype], lows[w_dtype] + 256, wshape).astype(DTYPES[w_dtype])
    w = g.add_input("w", TensorType(wshape, w_dtype)) if w_kind == "input" else g.constant(weight, "w")
    feeds = {"x": rng.integers(lows[x_dtype], lows[x_dtype] + 256, shape).astype(DTYPES[x_dtype])}
    if w_kind == "input":
        feeds["w"] = weight
    zero_points = []
    for name, kind, dtype, n in (("x_zero", x_zero, x_dtype, 1), ("w_zero", w_zero, w_dtype, wshape[0])):
        value = rng.integers(lows[dtype], lows[dtype] + 256, n if kind == "per channel" else ()).astype(DTYPES[dtype])
        if kind == "input":
            zero_points.append(g.add_input(name, TensorType((), dtype)))
            feeds[name] = value
        else:
            zero_points.append(None if kind is None else g.constant(value, name))
    if zero_points[1] is None:
        zero_points.pop()
    g.outputs = [g.add("ConvInteger", [x, w, *zero_points], attrs).output]
    m = minidlc.compile(g, target=target)
    assert "NumPy" not in m.emit("loops")
    np.testing.assert_array_equal(m.run(feeds)["convinteger"], minidlc.compile(g, target="reference").run(feeds)["convinteger"])


@pytest.mark.parametrize("shape,wshape,attrs", [
    ((1, 8, 5, 26), (16, 8, 3, 3), {"pads": [1, 1, 1, 1]}),  # peeled ends: one full block inside each row
    ((1, 8, 9, 50), (16, 8, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),  # stride 2
    ((1, 8, 2, 30), (16, 8, 5, 5), {"pads": [2, 2, 2, 2]}),  # fewer rows than the window: no row inside
    ((1, 8, 12, 30), (16, 8, 5, 5), {"pads": [2, 0, 1, 3], "dilations": [1, 2]}),  # uneven pads, dilated
    ((1, 8, 26), (16, 8, 3), {"pads": [1, 1]}),  # 1-D
    ((1, 4, 5, 6, 30), (8, 4, 3, 3, 3), {"pads": [1, 1, 1, 1, 1, 1]}),  # 3-D
    ((1, 8, 3, 40), (8, 1, 3, 3), {"group": 8, "pads": [2, 2, 2, 2], "dilations": [2, 2]}),  # depthwise
    ((1, 8, 9, 5, 6), (8, 1, 3, 3, 3), {"group": 8, "pads": [1, 0, 2, 1, 2, 0]}),  # depthwise, 3-D
])
def test_padded_convs_test_their_reads_at_the_borders_instead_of_copying(shape, wshape, attrs):
    """The direct conv (on wide output rows) and the depthwise stencil on llvm,
    across the shapes that exercise the interior/border split: numerics
    against the reference (all of them pass their borders), and no padded copy."""
    rng = np.random.default_rng(5)
    g = Graph()
    x = g.add_input("x", TensorType(shape))
    w = g.constant(rng.standard_normal(wshape).astype(np.float32), "w")
    y = g.add("Conv", [x, w, g.constant(rng.standard_normal(wshape[0]).astype(np.float32), "b")], attrs).output
    g.outputs = [g.add("Relu", [y]).output]
    loops = check(g, "llvm").emit("loops")
    assert "x_padded" not in loops and "NumPy" not in loops


@pytest.mark.parametrize("in_width", [2, 7, 13, 14, 27, 28, 33, 55, 64, 65, 129, 130])
@pytest.mark.parametrize("op,dtype,attrs", [
    ("MaxPool", "f32", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("MaxPool", "f32", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", "i8", {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [1, 0, 1, 1], "dilations": [1, 2]}),
    ("Conv", "f32", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("Conv", "f32", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("Conv", "f32", {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2], "dilations": [2, 1]}),
])
def test_stencil_rows_read_their_padding_by_masked_vector_loads(in_width, op, dtype, attrs):
    """A max pool's or depthwise conv's output row up to MAX_VECTOR wide is
    one vectorized stretch on llvm: its reads off the row's ends are masked
    vector loads (llvm.masked.load) that read nothing there, where they were
    peeled into scalar code. Exact against the reference, with NaN, inf and
    i8's greatest value in the first and last columns (a lane that read the
    next row's first column instead of the padding would show), and odd
    input widths (a stride-2 window then reaches past the row's end)."""
    rng = np.random.default_rng(in_width)
    shape = (1, 3, 12, in_width)
    if dtype == "i8":
        x = rng.integers(-128, 128, shape).astype(np.int8)
        x[..., 0], x[..., -1] = 127, 126
    else:
        x = rng.standard_normal(shape).astype(np.float32)
        x[0, 0, :, 0], x[0, 1, :, -1], x[0, 2, 0, :], x[0, 2, 1:, 0] = np.nan, np.inf, -np.inf, 9.0
    g = Graph()
    xv = g.add_input("x", TensorType(shape, dtype))
    if op == "Conv":
        w = rng.standard_normal((3, 1, *attrs["kernel_shape"])).astype(np.float32)
        w[1, 0, 0, 0] = np.nan
        attrs = {**{k: v for k, v in attrs.items() if k != "kernel_shape"}, "group": 3}
        y = g.add("Conv", [xv, g.constant(w, "w"), g.constant(rng.standard_normal(3).astype(np.float32), "b")],
                  attrs).output
    else:
        y = g.add("MaxPool", [xv], attrs).outputs[0]
    g.outputs = [y]
    width = y.type.shape[-1]
    m = minidlc.compile(g, target="llvm")
    want = minidlc.compile(g, target="reference").run({"x": x})[y.name]
    got = m.run({"x": x})[y.name]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    win = Window.of(attrs.get("kernel_shape") or list(w.shape[2:]), attrs.get("strides", [1, 1]),
                    attrs.get("dilations", [1, 1]), attrs["pads"])
    lo, hi = window_interior(win, shape[2:], y.type.shape[2:])[-1]
    reads_padding = lo > 0 or hi < width  # (some rows' ends read past the row)
    one_stretch = width <= MAX_VECTOR and target_cpu.masked_loads(8 * x.itemsize)  # (not i8 on AVX2)
    middle = [line for line in m.emit("loops").splitlines() if f"{y.name}[" in line and "=" in line]
    # one stretch, and the rows at the top and bottom (the same, split, where the row ends need no test)
    assert (len(middle) == 2) == (one_stretch or not reads_padding or width == 1)
    # (rows of 2: the simplifier, knowing the lanes' range, leaves each read at a constant place, tested)
    assert ("llvm.masked.load" in m.emit("llvm")) == (one_stretch and 2 < width and reads_padding)


def test_depthwise_conv_reads_a_planes_weights_once():
    """A depthwise conv's rows (interior and border stretches alike) take the
    plane's weights and bias from a local array filled once a plane: LLVM keeps
    it in registers, where loads from the weights' buffer it reloaded for
    every vector, not knowing that the output's stores leave them alone."""
    from minidlc.loops.ir import Load
    from minidlc.loops.transform import stmt_exprs, walk_exprs, walk_stmts

    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 9, 20)))
    rng = np.random.default_rng(0)
    w, b = g.constant(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"), g.constant(np.ones(4, np.float32), "b")
    g.outputs = [g.add("Conv", [x, w, b], {"group": 4, "pads": [1, 1, 1, 1]}).output]
    m = check(g, "llvm")
    kernel = next(s.lowered.kernel for s in m.program.steps if s.lowered is not None)
    loads = [e.buf for s in walk_stmts(kernel.body) for top in stmt_exprs(s) for e in walk_exprs(top)
             if isinstance(e, Load)]
    size = {p.name: p.size for p in kernel.params}
    assert sorted(size[buf] for buf in loads if buf in size and size[buf] in (4, 36)) == [4] + [36] * 9


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_a_max_of_several_is_nan_wherever_one_is(op):
    """A max (or min) of several values in vector code is one tree of
    compare-and-selects and one unordered compare per pair for NaN
    (VectorCodegen._min_max_of): NaN in any position, alone or with infinities,
    must come out NaN, as NumPy's maximum does."""
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal((5, 24)).astype(np.float32) for _ in range(5)]
    for i, x in enumerate(xs):
        x[i, :i + 3] = np.nan  # row i: NaN in input i only, at different columns
        x[(i + 1) % 5, -2:] = np.inf if op == "Max" else -np.inf
    g = Graph()
    ins = [g.add_input(f"x{i}", TensorType(x.shape)) for i, x in enumerate(xs)]
    g.outputs = [g.add(op, ins).output]
    got = minidlc.compile(g, target="llvm").run({f"x{i}": x for i, x in enumerate(xs)})[g.outputs[0].name]
    np.testing.assert_array_equal(got, (np.maximum if op == "Max" else np.minimum).reduce(xs))


@pytest.mark.parametrize("depth", [64, 34])
def test_a_strided_read_selected_lane_by_lane_takes_the_other_value_per_lane(depth):
    """A Concat of two step-2 Slices along the last axis (de-interleaving, as
    an interleaved rotary embedding does) is `i < n ? x[min(i, n-1) * 2] :
    x[max(i - n, 0) * 2 + 1]` per lane: the first read becomes masked stride-2
    loads, and a masked-off lane must take the second read's value for its
    own lane, not for the element the load had there."""
    g = Graph()
    x = g.add_input("x", TensorType((2, 4, depth), "f32"))
    halves = [g.add("Slice", [x], {"starts": [s], "ends": [depth], "axes": [2], "steps": [2]}).output for s in (0, 1)]
    g.outputs = [g.add("Concat", halves, {"axis": 2}).output]
    xs = np.arange(2 * 4 * depth, dtype=np.float32).reshape(2, 4, depth)
    m = minidlc.compile(g, target="llvm")
    assert "llvm.masked.load" in m.emit("llvm")
    np.testing.assert_array_equal(m.run({"x": xs})[g.outputs[0].name],
                                  np.concatenate([xs[..., ::2], xs[..., 1::2]], axis=-1))


def test_masked_loads_drop_only_the_clamps_their_test_proves_idle():
    """_unclamped drops max(i, lo) and min(i, hi) over the lane variable only
    where the comparisons of the select's test prove i within [lo, hi]; if one
    is not proved (a missing bound, a test under `or`), the read is not masked."""
    from minidlc.backends.llvm.codegen import _facts, _unclamped
    from minidlc.loops.ir import Binary, Compare, Var, const

    o = Var("o")
    at = Binary("-", Binary("*", o, const(2)), const(1))  # a stride-2 window's first cell, pad 1
    clamped = Binary("min", Binary("max", at, const(0)), const(27))
    inside = Binary("and", Compare(">=", Binary("*", o, const(2)), const(1)),
                    Compare("<", Binary("*", o, const(2)), const(29)))
    assert _unclamped(clamped, o, _facts(inside)) == at
    assert _unclamped(Binary("+", clamped, Var("row")), o, _facts(inside)) == Binary("+", at, Var("row"))
    assert _unclamped(clamped, o, _facts(Compare(">=", Binary("*", o, const(2)), const(1)))) is None  # no upper bound
    assert _unclamped(clamped, o, _facts(Binary("or", inside.a, inside.b))) is None
    assert _unclamped(Binary("min", Binary("max", at, const(1)), const(27)), o, _facts(inside)) is None  # lo too high
    assert _unclamped(Binary("max", Var("row"), const(0)), o, []) == Binary("max", Var("row"), const(0))  # no lane


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [2, 3], "dilations": [2, 1], "ceil_mode": 1, "strides": [2, 2]}),
    ("MaxPool", {"kernel_shape": [7, 10], "pads": [0, 1, 0, 1]}),  # 70 cells: a loop over the window
    ("AveragePool", {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ("GlobalAveragePool", {}),
    ("GlobalMaxPool", {}),
])
def test_pooling_runs_natively(cpu, op, attrs):
    g = Graph()
    g.outputs = [g.add(op, [g.add_input("x", TensorType((2, 3, 7, 11)))], attrs).outputs[0]]
    m = check(g, cpu)
    loops = m.emit("loops")
    assert "NumPy" not in loops
    if op == "MaxPool":  # small windows are one max expression over a -inf-padded input, no accumulator
        stencil = np.prod(attrs["kernel_shape"]) <= 64
        assert ("acc[" not in loops) == stencil
        if stencil and any(attrs.get("pads", [0])):  # it reads the padding in place on llvm, copies it on numba
            assert ("x_padded" in loops) == get_backend(cpu).cpu.copy_padding


@pytest.mark.parametrize("target", [*CPU, "cuda"])  # (cuda: on the simulator)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("kernel", [[3, 3], [7, 10]])  # a stencil; 70 cells, a loop over the window
def test_max_pooling_of_bytes_pads_with_the_least_value(target, dtype, kernel):
    """MaxPool on i8 and u8 is native too: its padding is the dtype's least
    value (-inf's place), so a window of all-negative i8 cells at a border
    does not come out 0."""
    info = np.iinfo(dtype)
    x = np.random.default_rng(0).integers(info.min, info.max, (1, 2, 7, 11), endpoint=True).astype(dtype)
    x[0, 0, :3, :3] = info.min  # a corner of the least values, under the padding
    g = Graph()
    attrs = {"kernel_shape": kernel, "pads": [1, 1, 1, 1]}
    g.outputs = [g.add("MaxPool", [g.add_input("x", TensorType(x.shape, dtype_name(x.dtype)))], attrs).outputs[0]]
    m = minidlc.compile(g, target=target)
    assert "NumPy" not in m.emit("loops")
    got = m.run({"x": x})[g.outputs[0].name]
    np.testing.assert_array_equal(got, minidlc.compile(g, target="reference").run({"x": x})[g.outputs[0].name])
    if kernel == [3, 3]:
        assert got[0, 0, 0, 0] == info.min


@pytest.mark.parametrize("target", [*CPU, "cuda"])  # (cuda: on the simulator)
@pytest.mark.parametrize("dtype,attrs", [
    ("f32", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("f32", {"kernel_shape": [2, 3], "dilations": [2, 1], "ceil_mode": 1, "strides": [2, 2], "storage_order": 1}),
    ("f64", {"kernel_shape": [3], "pads": [2, 0]}),                                # 1-D
    ("u8", {"kernel_shape": [2, 2], "strides": [1, 2], "pads": [0, 1, 1, 0], "storage_order": 1}),
])
def test_max_pooling_with_its_indices_runs_natively(target, dtype, attrs):
    """MaxPool's Indices output: the flat input index of each window's maximum
    (row-major, or column-major over the spatial axes), the first of ties and
    the first NaN winning, padding never, exactly as the reference."""
    shape = (2, 3, 7) if len(attrs["kernel_shape"]) == 1 else (2, 3, 7, 9)
    rng = np.random.default_rng(6)
    if dtype == "u8":
        x = rng.integers(0, 4, shape).astype(np.uint8)  # many ties
    else:
        x = rng.integers(-3, 3, shape).astype(DTYPES_NP[dtype])
        x.flat[[5, 17, 40]] = np.nan
    g = Graph()
    pool = g.add("MaxPool", [g.add_input("x", TensorType(shape, dtype))], attrs)
    g.outputs = list(pool.outputs)
    m = minidlc.compile(g, target=target)
    assert "NumPy" not in m.emit("loops")
    got, want = m.run({"x": x}), minidlc.compile(g, target="reference").run({"x": x})
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_f32_exp_is_accurate_over_its_range(cpu):
    """exp on f32 is emitted as a polynomial (it vectorizes); check it to 1e-6
    relative, and its overflow, underflow and NaN behaviour."""
    g = Graph()
    g.outputs = [g.add("Exp", [g.add_input("x", TensorType((20006,)))]).output]
    xs = np.concatenate([np.linspace(-87, 88.7, 20000), [np.nan, np.inf, -np.inf, 89.0, -120.0, 0.0]]).astype(np.float32)
    got = minidlc.compile(g, target=cpu).run({"x": xs})["exp"]
    np.testing.assert_allclose(got[:20000], np.exp(xs[:20000].astype(np.float64)), rtol=1e-6)
    np.testing.assert_array_equal(got[20000:], [np.nan, np.inf, 0.0, np.inf, 0.0, 1.0])


LIBM_CALLS = {"llvm": ("@tanhf", "@erff", "@llvm.exp.f64", "@exp("), "numba": ("np.tanh", "math.erf", "np.exp")}


@pytest.mark.parametrize("op,attrs", [("Tanh", {}), ("Sigmoid", {}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"})])
def test_f32_activations_are_inline_and_accurate(cpu, op, attrs):
    """tanh, sigmoid and gelu on f32 are plain arithmetic (no libm call per
    element, so they vectorize), within a few ulp of the f64 reference."""
    xs = np.concatenate([np.linspace(-30, 30, 20001), np.linspace(-1e-3, 1e-3, 999), [0.6249, 0.6251, -0.6251],
                         [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30]]).astype(np.float32)
    g = Graph()
    g.outputs = [g.add(op, [g.add_input("x", TensorType(xs.shape))], attrs).output]
    m = minidlc.compile(g, target=cpu)
    assert not any(f in m.emit(cpu) for f in LIBM_CALLS[cpu])
    got = m.run({"x": xs})[g.outputs[0].name]
    with np.errstate(invalid="ignore"):
        want = minidlc.compile(g).run({"x": xs})[g.outputs[0].name]
    # atol: erf's polynomial is good to 4e-7 absolute, which gelu's 0.5 * x scales up in the tails
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6, equal_nan=True)


@settings(deadline=None, max_examples=10)
@given(elementwise_graphs(max_nodes=6), st.sampled_from([0, 2]))
def test_random_elementwise_graphs_match_reference(g, opt_level):
    """Random fused (and unfused) elementwise/broadcast graphs: inlining,
    broadcasting and multi-output groups against the interpreter, on both backends."""
    feeds = random_feeds(g)
    want = minidlc.compile(g, target="reference", opt_level=0).executable.run(feeds)
    for target in CPU:
        got = minidlc.compile(g, target=target, opt_level=opt_level).executable.run(feeds)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=target)


def test_split_and_concat_are_index_remaps(cpu):
    g = Graph()
    x = g.add_input("x", TensorType((3, 10, 4)))
    parts = g.add("Split", [x], {"axis": 1, "split": [2, 5, 3]}).outputs
    y = g.add("Concat", [g.add("Tanh", [parts[2]]).output, parts[0]], {"axis": 1}).output
    g.outputs = [y, parts[1]]
    m = check(g, cpu, opt_level=0)
    assert "NumPy" not in m.emit("loops")


def dense_chain(batch: int, reuse: bool = False) -> Graph:
    """DenseNet's growing feature map: each layer's output is concatenated onto
    the map before it along the channels."""
    g = Graph()
    x = g.add_input("x", TensorType((batch, 2, 3, 3)))
    h = g.add("Relu", [x]).output
    for i in range(3):
        new = g.add("Tanh", [g.add("Mul", [h, g.constant(np.float32(0.5 + i))]).output]).output
        h = g.add("Concat", [h, new], {"axis": 1}).output
    outputs = [g.add("Sigmoid", [h]).output]
    if reuse:  # the last layer's input in a second concat too: only one of the two can hold it
        outputs.append(g.add("Concat", [new, g.add("Neg", [new]).output], {"axis": 0}).output)
    g.outputs = outputs
    return g


@pytest.mark.parametrize("batch,reuse,in_place", [(1, False, 3), (1, True, 3), (2, False, 0)])
def test_concats_write_their_inputs_in_place(cpu, batch, reuse, in_place):
    """At batch 1 each layer's output is computed straight into the last
    concat's buffer (the plan nests the three), and no concat copies; at batch
    2 the inputs are not contiguous stretches of the output, so they copy."""
    m = check(dense_chain(batch, reuse), cpu, opt_level=0)
    text = m.emit("loops")
    assert text.count("its inputs are written into it in place, no copy") == in_place
    if in_place:
        plan, concats = m.program.plan, [n for n in m.program.graph.nodes if n.op == "Concat" and n.attrs["axis"] == 1]
        last = concats[-1].output
        for c in concats:
            first, new = c.inputs
            assert plan.offset(first) == plan.offset(last)  # each map a prefix of the last
            assert plan.offset(new) == plan.offset(last) + first.type.nbytes


def test_batchnorm_is_elementwise_per_channel(cpu):
    rng = np.random.default_rng(4)
    g = Graph()
    x = g.add_input("x", TensorType((2, 5, 3, 7)))
    params = [g.constant(rng.uniform(0.5, 2, 5).astype(np.float32)) for _ in range(4)]
    g.outputs = [g.add("BatchNormalization", [x, *params], {"epsilon": 1e-3}).output]
    assert "NumPy" not in check(g, cpu, opt_level=0).emit("loops")


@pytest.mark.parametrize("starts,ends,axes,view", [([2], [5], [0], True),          # rows 2..4: contiguous
                                                    ([0, 1], [1, 3], [0, 1], True),  # part of one row
                                                    ([1], [3], [1], False)])        # a column band: a copy
def test_contiguous_slices_are_views(cpu, starts, ends, axes, view):
    g = Graph()
    x = g.add_input("x", TensorType((8, 4)))
    y = g.add("Exp", [x]).output  # the slice reads an arena tensor, not the input copy
    s = g.add("Slice", [y], {"starts": starts, "ends": ends, "axes": axes}).output
    g.outputs = [g.add("Softmax", [s], {"axis": -1}).output]
    m = check(g, cpu, opt_level=0)
    assert ("Slice node %slice: a view of %exp, no copy" in m.emit("loops")) == view


def test_runs_from_several_python_threads_take_turns(cpu):
    from concurrent.futures import ThreadPoolExecutor

    g = matmul_graph((), 64, 70, 33)
    m = minidlc.compile(g, target=cpu, threads=2)
    feeds = [m.random_inputs(seed) for seed in range(8)]
    want = [m.run(f)["relu"] for f in feeds]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda f: m.run(f)["relu"], feeds * 10))
    for i, a in enumerate(got):
        np.testing.assert_array_equal(a, want[i % 8])


def test_a_failing_numpy_fallback_names_the_node(cpu, monkeypatch):
    from minidlc.ir import IRError
    from minidlc.ir.registry import OPS

    def refuse(*args, **attrs):  # a host step whose NumPy code fails at run time
        raise ValueError("the mean is too large")
    g = Graph()
    x = g.add_input("x", TensorType((4, 3), "i32"))
    mean = g.add("ReduceMean", [g.add("Abs", [x]).output], {"axes": [1]}).output  # of integers: a host step
    g.outputs = [g.add("Neg", [mean]).output]
    m = minidlc.compile(g, target=cpu, opt_level=0)
    assert "ReduceMean node %reducemean: runs on NumPy" in m.emit("loops")
    monkeypatch.setattr(OPS["ReduceMean"], "impl", refuse)
    with pytest.raises(IRError, match=r"ReduceMean node %reducemean failed in its NumPy implementation: "
                                      r"ValueError: the mean"):
        m.run({"x": np.arange(12, dtype=np.int32).reshape(4, 3)})


def test_only_programs_with_parallel_loops_wake_threads(cpu):
    tiny = Graph()
    tiny.outputs = [tiny.add("Relu", [tiny.add_input("x", TensorType((2, 3)))]).output]
    big = matmul_graph((), 256, 256, 160)
    for g, threads in ((tiny, 1), (big, 2)):
        m = minidlc.compile(g, target=cpu, threads=2)
        # llvm: the threads a program runs on; numba: the thread count it sets (None: no prange, none set)
        used = ([p.threads for p in m.executable.programs] if cpu == "llvm" else
                [c.threads or 1 for c in m.executable.calls])
        assert used == [threads]


def test_llvm_team_spins_for_a_time_not_a_count(monkeypatch):
    """A waiting thread spins SPIN_MICROSECONDS before it sleeps: the rounds
    that take are timed once per process (a round's time differs tenfold
    between CPUs), and a team's limit scales with the time asked for."""
    from minidlc.backends.llvm import team as team_module

    m = minidlc.compile(matmul_graph((), 256, 256, 256), target="llvm", threads=2)  # (parallel: a team)
    limit = int(m.executable.team.state[SPIN_LIMIT])
    rate = team_module._ROUNDS_PER_MICROSECOND[0]
    assert rate > 0 and limit == int(team_module.SPIN_MICROSECONDS * rate)
    monkeypatch.setattr(team_module, "SPIN_MICROSECONDS", 4 * team_module.SPIN_MICROSECONDS)
    longer = minidlc.compile(matmul_graph((), 256, 256, 256), target="llvm", threads=2)
    assert int(longer.executable.team.state[SPIN_LIMIT]) == int(team_module.SPIN_MICROSECONDS * rate)


@pytest.mark.skipif(futex_syscall() is None, reason="waiting threads sleep on a futex only on Linux (x86_64, aarch64)")
def test_llvm_team_with_more_threads_than_cores_sleeps_and_stays_right():
    """With three times as many threads as cores, some thread is always off its
    core: the others take its shares or go to sleep (giving their cores back)
    instead of spinning. Two native programs around a NumPy step alternate, so
    a worker that wakes up late finds a newer run (and must claim nothing of
    the old one). Every run gives the same result."""
    g = Graph()
    x = g.add_input("x", TensorType((256, 200)))  # big enough for parallel loops
    y = g.add("Relu", [g.add("MatMul", [x, g.constant(np.ones((200, 64), np.float32), "w")]).output]).output
    q = g.add("Cast", [g.add("ReduceMean", [g.add("Cast", [y], {"to": "i32"}).output],  # of integers: on NumPy
                             {"axes": [1], "keepdims": 1}).output], {"to": "f32"}).output
    g.outputs = [g.add("Softmax", [g.add("Add", [q, y]).output], {"axis": 1}).output]
    m = minidlc.compile(g, target="llvm", threads=3 * (os.cpu_count() or 1), opt_level=0)
    feeds = [{"x": np.random.default_rng(seed).integers(-5, 6, (256, 200)).astype(np.float32)} for seed in range(3)]
    want = [minidlc.compile(g).run(f)["softmax"] for f in feeds]
    team = m.executable.team
    for i in range(60):
        np.testing.assert_allclose(m.run(feeds[i % 3])["softmax"], want[i % 3], rtol=1e-5)
    assert m.emit("llvm").count("define void @program") == 2
    time.sleep(0.2)  # no run: after their spins, all workers sleep
    assert team.state[JOB_SLEEPERS] == team.threads - 1
    team.state[SPIN_LIMIT] = 0  # every wait sleeps at once: the futex paths, every time
    before = m.executable.sleeps()
    for i in range(30):
        np.testing.assert_allclose(m.run(feeds[i % 3])["softmax"], want[i % 3], rtol=1e-5)
    assert m.executable.sleeps() > before


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
@pytest.mark.parametrize("dtype", ["f32", "i32", "u8"])
def test_argmax_argmin_native_with_ties_and_nans(cpu, op, last, dtype):
    """Ties go to the first index (the last with select_last_index); a NaN wins, as in NumPy."""
    g = Graph()
    x = g.add_input("x", TensorType((4, 7, 5), dtype))
    g.outputs = [g.add(op, [x], {"axis": 1, "keepdims": 0, "select_last_index": last}).output]
    a = np.random.default_rng(0).integers(0, 3, (4, 7, 5)).astype(TensorType((1,), dtype).np_dtype)  # many ties
    if dtype == "f32":
        a[0, 3, 0] = a[0, 5, 0] = np.nan
        a[1, :, 1] = -np.inf
    m = minidlc.compile(g, target=cpu)
    assert "NumPy" not in m.emit("loops")
    want = minidlc.compile(g, target="reference").run({"x": a})
    for k, v in m.run({"x": a}).items():
        np.testing.assert_array_equal(v, want[k])


def test_tile_is_an_index_map(cpu):
    """Tile is inlined as an index map (modulo the input's shape): no copy kernel of its own."""
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 4)))
    g.outputs = [g.add("Relu", [g.add("Tile", [x], {"repeats": [3, 1, 2]}).output]).output]
    a = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    m = minidlc.compile(g, target=cpu)
    assert "NumPy" not in m.emit("loops") and m.emit("loops").count("kernel ") == 1
    np.testing.assert_array_equal(list(m.run({"x": a}).values())[0], np.maximum(np.tile(a, (3, 1, 2)), 0))


@pytest.mark.parametrize("index_dtype", ["i64", "i32"])
def test_gather_with_run_time_indices_checks_them(cpu, index_dtype):
    """Gather runs natively (fused into its reader); an index out of range is an
    IndexError naming the node, reported after the run by the kernel's check
    flag (the read itself is clamped, so it never leaves the data), and the
    next run is clean again."""
    g = Graph()
    data = g.add_input("data", TensorType((5, 4, 3)))
    idx = g.add_input("idx", TensorType((2, 3), index_dtype))
    g.outputs = [g.add("Relu", [g.add("Gather", [data, idx], {"axis": 1}).output]).output]
    m = minidlc.compile(g, target=cpu)
    assert "NumPy" not in m.emit("loops") and "invalid[0] = 1;" in m.emit("loops")
    ref = minidlc.compile(g, target="reference")
    d = np.random.default_rng(0).standard_normal((5, 4, 3)).astype(np.float32)
    good = np.array([[0, -1, 3], [2, -4, 1]], np.dtype(index_dtype.replace("i", "int")))
    np.testing.assert_array_equal(m.run({"data": d, "idx": good})["relu"], ref.run({"data": d, "idx": good})["relu"])
    for bad in (4, -5, 2**31 - 1):
        with pytest.raises(IndexError, match=r"Fused node %relu: Gather %gather: an index is out of range "
                                             r"for an axis of 4 \(valid: -4 to 3\)"):
            m.run({"data": d, "idx": np.where(good == 3, bad, good)})
    np.testing.assert_array_equal(m.run({"data": d, "idx": good})["relu"], ref.run({"data": d, "idx": good})["relu"])


def test_a_failing_run_leaves_no_stale_check_flag():
    """A run that fails part way (a host step raising) clears the check flags,
    so that the next run, on valid indices, does not raise for the last one."""
    g = Graph()
    data = g.add_input("data", TensorType((5, 4)))
    idx = g.add_input("idx", TensorType((2,), "i64"))
    g.outputs = [g.add("Gather", [data, idx], {"axis": 0}).output]
    m = minidlc.compile(g, target="llvm")
    arena = m.executable.arena
    (flag, _, _), = arena.flags
    flag[0] = 1  # as a kernel would have set it, before a later step failed

    def fail():
        raise RuntimeError("a host step failed")
    with pytest.raises(RuntimeError, match="a host step failed"):
        arena.checked([fail])
    assert flag[0] == 0
    m.run({"data": np.ones((5, 4), np.float32), "idx": np.array([0, 4])})


def test_a_model_of_views_only_prints_its_llvm():
    g = Graph()
    g.outputs = [g.add("Reshape", [g.add_input("x", TensorType((2, 3))), g.constant(np.array([3, 2]))]).output]
    assert "target triple" in minidlc.compile(g, target="llvm").emit("llvm")  # no programs: an empty module


@pytest.mark.parametrize("indices,checked", [([1, -5], False), ([1, 7], True)])
def test_gather_with_constant_indices_is_checked_only_when_invalid(indices, checked):
    """Valid constant indices need no check; invalid ones fail every run, as the reference does."""
    g = Graph()
    data = g.add_input("data", TensorType((5, 4)))
    g.outputs = [g.add("Gather", [data, g.constant(np.array(indices))], {"axis": 0}).output]
    for target in ("llvm", "reference"):
        m = minidlc.compile(g, target=target, opt_level=0)
        if target == "llvm":
            assert ("invalid[0] = 1;" in m.emit("loops")) == checked
        if checked:
            with pytest.raises(IndexError if target == "llvm" else IRError, match="Gather"):
                m.run(m.random_inputs())
        else:
            m.run(m.random_inputs())


AVX2_CHECK = """
import sys, numpy as np, minidlc
from minidlc import cpu
from minidlc.demo_models import build_model, example_inputs
assert cpu.has("avx2") and not cpu.has("avx512f"), cpu.describe()
for name in sys.argv[1:]:
    model = build_model(name)
    feeds = example_inputs(model)
    m = minidlc.compile(model, target="llvm")
    got, want = m.run(feeds), minidlc.compile(model, target="reference").run(feeds)
    for out in want:
        np.testing.assert_allclose(got[out], want[out], rtol=1e-4, atol=1e-4, err_msg=name)
    assert "zmm" not in m.emit("asm") and "6 x 16 f32" in m.emit("loops"), name
"""


def test_code_for_an_avx2_cpu_runs_and_agrees(tmp_path):
    """The CI machine's CPU changes between runs (an AVX2 Zen 1, an AVX-512 Zen 4):
    MINIDLC_CPU_LEVEL=x86-64-v3 makes this host generate the code an AVX2 CPU gets
    (6 x 16 blocks, 256-bit vectors, vmaskmovps for masked loads, no zmm), and it
    must agree with the reference. (In a fresh process: the CPU is read once.)"""
    import subprocess

    if not target_cpu.has("avx2"):
        pytest.skip("this host cannot run AVX2 code")
    env = {**os.environ, "MINIDLC_CPU_LEVEL": "x86-64-v3", "MINIDLC_CACHE": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", AVX2_CHECK, "mlp", "tfblock", "convnet", "mobilenet", "squeezenet"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]


def test_an_unknown_cpu_level_is_a_one_line_error(monkeypatch, capsys):
    from minidlc.cli import main

    monkeypatch.setenv("MINIDLC_CPU_LEVEL", "x86-64-v9")
    target_cpu.features.cache_clear()
    try:
        assert main(["ops", "nothing.onnx"]) == 2
    finally:
        monkeypatch.delenv("MINIDLC_CPU_LEVEL")
        target_cpu.features.cache_clear()
    assert capsys.readouterr().err == ("minidlc: error: MINIDLC_CPU_LEVEL='x86-64-v9': expected one of x86-64-v2, "
                                       "x86-64-v3 (or unset: the host's CPU)\n")


def test_the_gemm_register_block_comes_from_the_host_features():
    """8 x 16 with AVX-512 (one register per row), 6 x 16 otherwise (two per
    row); a product whose columns fill panels of 32 8 x 32 with AVX-512; and
    --emit loops says which block the kernels use."""
    from minidlc.loops.gemm import CONFIG, GemmConfig, host_gemm_config, host_wide_config

    assert host_gemm_config({"avx512f": True, "avx2": True}) == GemmConfig(mr=8, nr=16)
    assert host_gemm_config({"avx512f": False, "avx2": True}) == GemmConfig(mr=6, nr=16, rolled_window=True)
    assert host_gemm_config({"neon": True}) == GemmConfig(mr=6, nr=16, rolled_window=True)
    assert host_wide_config({"avx512f": True, "avx2": True}) == GemmConfig(mr=8, nr=32)
    assert host_wide_config({"avx512f": False, "avx2": True}) == GemmConfig(mr=6, nr=16, rolled_window=True)
    loops = minidlc.compile(matmul_graph((), 64, 32, 16), target="llvm").emit("loops")
    assert f"// GEMM register block: {CONFIG.mr} x {CONFIG.nr} f32" in loops
    assert f"f32 acc[{CONFIG.mr * CONFIG.nr}];" in loops


@pytest.mark.parametrize("const_b", [True, False])
@pytest.mark.parametrize("n", [32, 300])
def test_a_product_with_many_columns_takes_the_wide_block(cpu, const_b, n, monkeypatch):
    """n >= the wide block's NR, on llvm: B's panels are that wide (a weight
    packed at compile time, a run-time B by the kernel), the last one partly
    past column n, and the rows leave an edge block. On a host without
    AVX-512 (whose wide block is its usual one) with AVX-512's 8 x 32. Numba,
    which runs wide blocks slower, keeps the usual one."""
    import minidlc.compile_cache
    from minidlc.loops import gemm
    from minidlc.loops.gemm import CONFIG, GemmConfig

    if gemm.WIDE_CONFIG == CONFIG:
        monkeypatch.setattr(gemm, "WIDE_CONFIG", GemmConfig(mr=8, nr=32))
        monkeypatch.setattr(minidlc.compile_cache, "key", lambda *a, **k: None)  # (a cached program has the other)
    WIDE_CONFIG = gemm.WIDE_CONFIG
    loops = check(matmul_graph((), 2 * WIDE_CONFIG.mr + 1, 37, n, const_b=const_b), cpu).emit("loops")
    assert (f"f32 acc[{WIDE_CONFIG.mr * WIDE_CONFIG.nr}];" in loops) == get_backend(cpu).cpu.wide_blocks
    narrow = check(matmul_graph((), 9, 37, WIDE_CONFIG.nr - 1), cpu).emit("loops")
    assert f"f32 acc[{CONFIG.mr * CONFIG.nr}];" in narrow
    assert f"f32 acc[{WIDE_CONFIG.mr * WIDE_CONFIG.nr}];" not in narrow


@pytest.mark.parametrize("batch,m,k,n,const_b,chunks", [
    ((), 19, 2 * 196, 40, True, 2),      # 392 = 2 x 196; an edge row block, and an edge panel (its own loop)
    ((), 17, 3 * 256, 40, False, 3),     # B computed at run time (packed by the kernel)
    ((2,), 17, 4 * 250, 33, True, 4),    # batched, 1000 = 4 x 250
    ((), 12, 512, 20, True, 2),          # one full row block and an edge one
    ((), 17, 521, 20, True, 1),          # 521 is prime: no chunk size divides it, one chunk
    ((), 5, 600, 20, True, 1),           # one row block: nothing to share a chunk with
    ((), 300, 512, 20, True, 1),         # 300 rows: A's chunk, 300 KiB, would not stay in L2
])
def test_a_long_k_loop_runs_in_chunks_over_every_row_block(cpu, batch, m, k, n, const_b, chunks, tmp_path,
                                                           monkeypatch):
    """k > K_CHUNK: each chunk of k runs over every row block before the next
    (the kb loop), a block resuming from the partial sums the chunk before
    left in C and applying the epilogue (bias, Relu) after the last only: the
    same sums in the same order as in one chunk, so the same bits. And Gemm's
    alpha, beta and C, applied once, on a chunked product."""
    import minidlc.compile_cache
    from minidlc.backends import cache
    from minidlc.loops import gemm

    assert k > gemm.K_CHUNK
    g = matmul_graph(batch, m, k, n, const_b=const_b)
    m_ = check(g, cpu)
    assert re.findall(r"for \(kb\d+ = 0; kb\d+ < (\d+);", m_.emit("loops")) == ([str(chunks)] * 2 if chunks > 1 else [])
    if chunks > 1:
        feeds = m_.random_inputs()
        monkeypatch.setattr(gemm, "K_CHUNK", 1 << 30)
        monkeypatch.setattr(minidlc.compile_cache, "key", lambda *a, **kw: None)  # (the cached program is chunked)
        monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
        whole = minidlc.compile(g, target=cpu)
        assert "kb" not in whole.emit("loops")
        np.testing.assert_array_equal(m_.run(feeds)["relu"], whole.run(feeds)["relu"])
        monkeypatch.undo()
    a = Graph()
    x, b = a.add_input("a", TensorType((m, k))), a.add_input("b", TensorType((n, k)))
    a.outputs = [a.add("Gemm", [x, b, a.constant(np.linspace(-1, 1, n, dtype=np.float32), "c")],
                       {"alpha": 0.5, "beta": 2.0, "transB": 1}).output]
    assert ("if (kb" in check(a, cpu).emit("loops")) == (chunks > 1)


@pytest.mark.parametrize("op,exps", [("Softmax", 1), ("LogSoftmax", 1)])
def test_softmax_computes_exp_once_an_element(op, exps):
    """Softmax stores the exponentials into its output, sums them and scales the
    output in place; LogSoftmax needs exp in its sum only. (exp is expanded in
    the loop IR as ldexp of a polynomial, once per place it is computed.)"""
    g = Graph()
    g.outputs = [g.add(op, [g.add_input("x", TensorType((3, 40)))], {"axis": -1}).output]
    loops = check(g, "llvm").emit("loops")
    assert loops.count("ldexp(") == exps
    assert ("* (1.0f / acc_1[0]);" in loops) == (op == "Softmax")


@pytest.mark.parametrize("target", [*CPU, "cuda"])  # (cuda: on the simulator)
def test_elementwise_ops_on_f16_compute_in_f32_and_round_each_result(target):
    """As NumPy's float16 ufuncs: (a + b) - a with a = 2048, b = 1 is 0 (2049
    rounds to 2048 in f16; in f32 throughout it would be 1). Division, fmod,
    max and a compare are exact against NumPy in f16; exp within an f16 ulp
    (exp itself is the f32 approximation); Casts from f16 to f64 and i32, and
    from i32 to f16, go through f32 exactly."""
    import minidlc

    g = Graph()
    a, b, c = (g.add_input(n, TensorType((2, 8), "f16")) for n in "abc")
    n = g.add_input("n", TensorType((2, 8), "i32"))
    outs = [g.add("Sub", [g.add("Add", [a, b]).output, a]).output,
            g.add("Max", [g.add("Div", [a, c]).output, b]).output,
            g.add("Mod", [a, c], {"fmod": 1}).output,
            g.add("Less", [a, b]).output,
            g.add("Exp", [g.add("Mul", [b, g.constant(np.float16(0.1), "tenth")]).output]).output,
            g.add("Cast", [a], {"to": "f64"}).output,
            g.add("Cast", [b], {"to": "i32"}).output,
            g.add("Cast", [n], {"to": "f16"}).output]
    g.outputs = outs
    rng = np.random.default_rng(3)
    feeds = {k: (rng.standard_normal((2, 8)) * 40).astype(np.float16) for k in "abc"}
    feeds["a"][0, 0], feeds["b"][0, 0] = 2048, 1
    feeds["n"] = rng.integers(-70000, 70000, (2, 8)).astype(np.int32)
    m = minidlc.compile(g, target=target)
    assert "NumPy" not in m.emit("loops")
    got = list(m.run(feeds).values())
    a_, b_, c_ = feeds["a"], feeds["b"], feeds["c"]
    assert got[0][0, 0] == 0
    for out, want in zip(got[:4] + got[5:], [a_ + b_ - a_, np.maximum(a_ / c_, b_), np.fmod(a_, c_), a_ < b_,
                                             a_.astype(np.float64), b_.astype(np.int32), feeds["n"].astype(np.float16)]):
        assert out.dtype == want.dtype
        np.testing.assert_array_equal(out, want)
    np.testing.assert_allclose(got[4], np.exp(b_ * np.float16(0.1)), rtol=2 ** -10)


@pytest.mark.parametrize("target", [*CPU, "cuda"])  # (cuda: on the simulator)
@pytest.mark.parametrize("const_b", [False, True])
def test_products_of_f16_sum_in_f32_and_round_once(target, const_b):
    """As NumPy's matmul on float16: 2048 + 1 + ... + 1 (200 ones) is 2248, as
    summed in f32 and rounded once (summed in f16 it would stay 2048). A
    MatMul with an epilogue, and a Gemm's alpha, beta and C, round each
    result to f16 as NumPy's float16 ops do: exact against NumPy."""
    import minidlc

    rng = np.random.default_rng(5)
    a_np = (rng.standard_normal((5, 201)) * 4).astype(np.float16)
    a_np[0] = [2048] + [1] * 200
    b_np = np.ones((201, 19), np.float16)
    b_np[:, 1:] = rng.standard_normal((201, 18)).astype(np.float16)
    c_np = rng.standard_normal(19).astype(np.float16)
    g = Graph()
    a = g.add_input("a", TensorType((5, 201), "f16"))
    b = g.constant(b_np, "b") if const_b else g.add_input("b", TensorType((201, 19), "f16"))
    bias = g.constant(c_np, "c")
    g.outputs = [g.add("Relu", [g.add("Add", [g.add("MatMul", [a, b]).output, bias]).output]).output,
                 g.add("Gemm", [a, b, bias], {"alpha": 0.5, "beta": 3.0}).output]
    m = minidlc.compile(g, target=target)
    assert "NumPy" not in m.emit("loops")
    got = list(m.run({"a": a_np} if const_b else {"a": a_np, "b": b_np}).values())
    product = (a_np.astype(np.float32) @ b_np.astype(np.float32)).astype(np.float16)
    np.testing.assert_array_equal(product, a_np @ b_np)  # (NumPy's own f16 matmul)
    assert got[0][0, 0] == 2248
    np.testing.assert_array_equal(got[0], np.maximum(product + c_np, np.float16(0)))
    np.testing.assert_array_equal(got[1], np.float16(0.5) * product + np.float16(3.0) * c_np)
    assert got[0].dtype == got[1].dtype == np.float16


@pytest.mark.parametrize("target", [*CPU, "cuda"])  # (cuda: on the simulator)
def test_f64_to_f16_rounds_once(target):
    """Cast from f64 to f16 is exact against NumPy's (round to nearest, ties to
    even) on f16 values, the ties between them and the f64s either side of
    each tie (where rounding through f32 would first round to the tie), at
    every exponent, subnormal and overflowing, with signs, zeros, inf and NaN."""
    import minidlc

    bits = np.arange(0, 0x7BFF, 37, dtype=np.uint16)  # every 37th finite f16, and the one after each
    values, after = (b.view(np.float16).astype(np.float64) for b in (bits, bits + 1))
    ties = (values + after) / 2
    near = np.concatenate([values, ties, np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf),
                           [65504, 65519.99, 65520, 65536, 1e300, np.inf, np.nan, 0.0, 2.0**-25, 1.5 * 2.0**-24, 5e-324]])
    xs = np.concatenate([near, -near])
    g = Graph()
    g.outputs = [g.add("Cast", [g.add_input("x", TensorType(xs.shape, "f64"))], {"to": "f16"}).output]
    m = minidlc.compile(g, target=target)
    assert "NumPy" not in m.emit("loops")
    with np.errstate(over="ignore"):
        want = xs.astype(np.float16)
    got = m.run({"x": xs})["cast"]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
