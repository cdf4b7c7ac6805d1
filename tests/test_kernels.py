"""Every loop-IR construct on every CPU backend, against NumPy.

docs/LOOP_IR.md defines what each construct computes; these tests hold each
backend to it: C integer division, floor modulo, NaN-propagating min/max,
saturating float-to-int casts, bools stored as bytes, the calls, and the
f32 approximations of exp, tanh and erf (the same expressions on every
backend, within their stated error bounds).
"""
import sys

import numpy as np
import pytest

from minidlc.ir import DTYPES
from minidlc.loops.ir import (Allocate, Binary, Call, Cast, Compare, Const, For, If, Kernel, Load, LoopKind, Param,
                              Select, Store, Var, add, const, mul, seq)
from minidlc.loops.mathfns import erf_f32, exp_f32, tanh_f32

BACKENDS = ["llvm", "numba"]


def compile_kernel(backend: str, kernel: Kernel, threads: int = 1):
    if backend == "llvm":
        from minidlc.backends.llvm import compile_kernel as build
    else:
        from minidlc.backends.numba import compile_kernel as build
    return build(kernel, threads=threads)


def elementwise(backend: str, fn, inputs: list[np.ndarray], out_dtype: str,
                kind: LoopKind = LoopKind.SERIAL) -> np.ndarray:
    """out[i] = fn(in0[i], in1[i], ...) as one kernel, its loop of `kind`; returns out."""
    n = len(inputs[0])
    i = Var("i")
    names = {np.dtype(v): k for k, v in DTYPES.items()}
    params = [Param(f"a{j}", names[a.dtype], n) for j, a in enumerate(inputs)] + [Param("out", out_dtype, n)]
    body = For(i, const(n), Store("out", i, fn(*[Load(p.name, i, p.dtype) for p in params[:-1]])), kind)
    out = np.zeros(n, DTYPES[out_dtype])
    compile_kernel(backend, Kernel("k", tuple(params), body))([*inputs, out])
    return out


F32_EDGES = np.array([0.0, -0.0, 1.5, -1.5, 2.5, -2.5, 3e38, -3e38, 1e-40, np.inf, -np.inf, np.nan], np.float32)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


# ---- arithmetic ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("op,ref", [("+", np.add), ("-", np.subtract), ("*", np.multiply), ("/", np.divide),
                                    ("%", np.fmod), ("mod", np.mod)])
def test_float_arithmetic(backend, dtype, op, ref):
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.standard_normal(40) * 10, F32_EDGES]).astype(DTYPES[dtype])
    b = np.concatenate([rng.standard_normal(40) * 3, F32_EDGES[::-1]]).astype(DTYPES[dtype])
    b[b == 0] = 0.0  # (division by zero is in the edges once, and gives inf or nan as IEEE says)
    with np.errstate(all="ignore"):
        want = ref(a, b)
    got = elementwise(backend, lambda x, y: Binary(op, x, y), [a, b], dtype)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == "f32" else 1e-12, equal_nan=True)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_float_mod_of_a_multiple_is_a_zero_with_the_divisors_sign(backend, dtype):
    a = np.array([-4.0, 4.0, -4.0, 4.0, 0.0, -0.0], DTYPES[dtype])
    b = np.array([2.0, -2.0, -2.0, 2.0, -3.0, 3.0], DTYPES[dtype])
    got = elementwise(backend, lambda x, y: Binary("mod", x, y), [a, b], dtype)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(np.mod(a, b)))


@pytest.mark.parametrize("kind", [LoopKind.SERIAL, LoopKind.VECTORIZED])
@pytest.mark.parametrize("op,ref", [("min", np.minimum), ("max", np.maximum)])
def test_float_min_max_propagate_nan(backend, op, ref, kind):
    a = np.array([1, np.nan, 2, np.nan, -np.inf, 3, 0.0, -0.0], np.float32)
    b = np.array([np.nan, 1, 3, np.nan, 0, -np.inf, -0.0, 0.0], np.float32)
    got = elementwise(backend, lambda x, y: Binary(op, x, y), [a, b], "f32", kind)
    np.testing.assert_array_equal(got, ref(a, b))  # (which zero comes back is not asked)


@pytest.mark.parametrize("dtype", ["i8", "u8", "i16", "i32", "i64"])
@pytest.mark.parametrize("op,ref", [("+", np.add), ("-", np.subtract), ("*", np.multiply),
                                    ("min", np.minimum), ("max", np.maximum), ("and", np.bitwise_and),
                                    ("or", np.bitwise_or), ("xor", np.bitwise_xor)])
def test_integer_arithmetic_wraps(backend, dtype, op, ref):
    info = np.iinfo(DTYPES[dtype])
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.integers(info.min, info.max, 30, endpoint=True), [info.max, info.min, 0, -1 % (info.max + 1)]])
    b = np.concatenate([rng.integers(info.min, info.max, 30, endpoint=True), [1, -1 % (info.max + 1), info.max, 7]])
    a, b = a.astype(DTYPES[dtype]), b.astype(DTYPES[dtype])
    with np.errstate(all="ignore"):
        want = ref(a, b)
    np.testing.assert_array_equal(elementwise(backend, lambda x, y: Binary(op, x, y), [a, b], dtype), want)


@pytest.mark.parametrize("dtype", ["i8", "i32", "i64", "u8"])
@pytest.mark.parametrize("divisor", [2, 3, 7, -2, -9])
def test_integer_division_truncates_and_remainder_takes_the_dividends_sign(backend, dtype, divisor):
    if dtype == "u8" and divisor < 0:
        pytest.skip("unsigned")
    info = np.iinfo(DTYPES[dtype])
    a = np.array([7, -7, 0, 13, -1, 100, info.min, info.max], np.int64)
    a = a[(a >= info.min) & (a <= info.max)].astype(DTYPES[dtype])
    d = Const(divisor, dtype)
    quotient = [abs(v) // abs(divisor) * (1 if (v >= 0) == (divisor > 0) else -1) for v in a.tolist()]
    np.testing.assert_array_equal(elementwise(backend, lambda x: Binary("/", x, d), [a], dtype),
                                  np.array(quotient, DTYPES[dtype]))
    np.testing.assert_array_equal(elementwise(backend, lambda x: Binary("%", x, d), [a], dtype),
                                  np.fmod(a, np.array(divisor, DTYPES[dtype])))
    np.testing.assert_array_equal(elementwise(backend, lambda x: Binary("mod", x, d), [a], dtype),
                                  np.mod(a, np.array(divisor, DTYPES[dtype])))


def test_integer_division_by_a_value_that_may_be_zero_is_rejected(backend):
    from minidlc.loops.verify import LoopIRError

    a = np.arange(4, dtype=np.int32)
    with pytest.raises(LoopIRError, match="integer / by .* which may be 0 or -1"):
        elementwise(backend, lambda x, y: Binary("/", x, y), [a, a], "i32")


# ---- comparisons, select, bools -------------------------------------------------------
@pytest.mark.parametrize("op,ref", [("==", np.equal), ("!=", np.not_equal), ("<", np.less), ("<=", np.less_equal),
                                    (">", np.greater), (">=", np.greater_equal)])
@pytest.mark.parametrize("dtype", ["f32", "u8", "i32"])
def test_compares_store_bools_as_bytes(backend, op, ref, dtype):
    if dtype == "f32":
        a, b = F32_EDGES, F32_EDGES[[1, 0, 3, 2, 4, 5, 7, 6, 8, 11, 10, 9]]
    else:
        a = np.array([0, 1, 200, 5, 255, 3], DTYPES[dtype])
        b = np.array([0, 200, 1, 5, 3, 255], DTYPES[dtype])
    got = elementwise(backend, lambda x, y: Compare(op, x, y), [a, b], "bool")
    assert got.dtype == np.bool_ and set(got.view(np.uint8)) <= {0, 1}
    np.testing.assert_array_equal(got, ref(a, b))


def test_integer_constants_wrap_to_their_dtype(backend):
    """Sign on u8 compares with a u8 -1 (that is, 255), as the rule writes it."""
    x = np.array([0, 1, 200], np.uint8)
    got = elementwise(backend, lambda v: Select(Compare("<", v, Const(1, "u8")), v, Const(-1, "u8")), [x], "u8")
    np.testing.assert_array_equal(got, [0, 255, 255])


def test_names_that_clash_in_python_are_renamed(backend):
    """Buffers named like a loop variable, a keyword, a constant global or with
    non-ASCII letters: the generated source keeps them all apart."""
    i = Var("i0")
    params = (Param("i0", "f32", 3), Param("in", "f32", 3), Param("x²", "f32", 3), Param("F32_1p5", "f32", 3),
              Param("np", "f32", 3))
    value = add(add(Load("i0", i, "f32"), Load("x²", i, "f32")), mul(Load("F32_1p5", i, "f32"), Const(1.5, "f32")))
    kernel = Kernel("rt", params, For(i, const(3), seq(Store("in", i, value), Store("np", i, Load("in", i, "f32")))))
    a, b, c = (np.arange(3, dtype=np.float32) + k for k in (1, 10, 100))
    out, out2 = np.zeros(3, np.float32), np.zeros(3, np.float32)
    compile_kernel(backend, kernel)([a, out, b, c, out2])
    np.testing.assert_array_equal(out, a + b + c * 1.5)
    np.testing.assert_array_equal(out2, out)


def test_select_and_logic_on_bools(backend):
    c = np.array([True, False, True, False])
    d = np.array([True, True, False, False])
    a, b = np.arange(4, dtype=np.float32), -np.arange(4, dtype=np.float32)
    got = elementwise(backend, lambda p, q, x, y: Select(Binary("xor", p, q), x, y), [c, d, a, b], "f32")
    np.testing.assert_array_equal(got, np.where(c ^ d, a, b))


# ---- casts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("src", ["f32", "f64"])
@pytest.mark.parametrize("dst", ["i8", "u8", "i16", "i32", "i64"])
def test_float_to_int_casts_saturate(backend, src, dst):
    x = np.array([0.0, 1.9, -1.9, 127.5, -128.7, 255.9, 300.0, -300.0, 3e9, -3e9, 1e19, -1e19, 9.3e18,
                  np.inf, -np.inf, np.nan], DTYPES[src])
    info = np.iinfo(DTYPES[dst])
    want = [0 if np.isnan(v) else info.max if v >= info.max else info.min if v <= info.min else int(v) for v in x]
    np.testing.assert_array_equal(elementwise(backend, lambda v: Cast(v, dst), [x], dst), np.array(want, DTYPES[dst]))


@pytest.mark.parametrize("src,dst,values", [
    ("i64", "i32", [2**40 + 5, -(2**40) - 5, 7]),      # truncation wraps
    ("i8", "i32", [-128, 127, -1]),                      # sign extension
    ("u8", "i32", [255, 128, 0]),                        # zero extension
    ("i32", "f32", [16777217, -3, 0]),                   # rounds to nearest
    ("u8", "f32", [255, 0, 128]),
    ("bool", "f32", [True, False, True]),
    ("f32", "bool", [0.0, np.nan, -0.5]),               # nonzero (NaN too) is true
    ("i32", "bool", [0, 5, -1]),
    ("f64", "f32", [1e300, 1.0000001, -1e-50]),
])
def test_other_casts(backend, src, dst, values):
    x = np.array(values, DTYPES[src])
    with np.errstate(all="ignore"):
        want = x.astype(DTYPES[dst]) if dst != "bool" else x != 0
    np.testing.assert_array_equal(elementwise(backend, lambda v: Cast(v, dst), [x], dst), want)


# ---- calls -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("fn,ref", [("log", np.log), ("sqrt", np.sqrt), ("sin", np.sin), ("cos", np.cos),
                                    ("floor", np.floor), ("ceil", np.ceil), ("round", np.rint), ("abs", np.abs),
                                    ("neg", np.negative), ("exp", np.exp), ("tanh", np.tanh)])
def test_unary_calls(backend, dtype, fn, ref):
    x = np.concatenate([np.linspace(-9.5, 9.5, 39), F32_EDGES]).astype(DTYPES[dtype])
    with np.errstate(all="ignore"):
        want = ref(x)
    got = elementwise(backend, lambda v: Call(fn, (v,)), [x], dtype)
    np.testing.assert_allclose(got, want, rtol=2e-7 if dtype == "f32" else 1e-15, atol=0, equal_nan=True)


def test_erf_and_pow_f64(backend):
    from math import erf

    x = np.linspace(-5, 5, 41)
    np.testing.assert_allclose(elementwise(backend, lambda v: Call("erf", (v,)), [x], "f64"),
                               [erf(v) for v in x], rtol=1e-15, atol=1e-16)
    y = np.linspace(-2, 2, 41)
    with np.errstate(all="ignore"):
        want = np.power(np.abs(x), y)
    np.testing.assert_allclose(elementwise(backend, lambda a, b: Call("pow", (Call("abs", (a,)), b)), [x, y], "f64"),
                               want, rtol=1e-14)


@pytest.mark.parametrize("dtype", ["i8", "u8", "i32", "i64"])
def test_integer_abs_and_neg_wrap(backend, dtype):
    info = np.iinfo(DTYPES[dtype])
    x = np.array([0, 5, -5 % (info.max + 1) if dtype == "u8" else -5, info.max, info.min], DTYPES[dtype])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(elementwise(backend, lambda v: Call("abs", (v,)), [x], dtype), np.abs(x))
        np.testing.assert_array_equal(elementwise(backend, lambda v: Call("neg", (v,)), [x], dtype), -x)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_ldexp_is_exact(backend, dtype):
    y = np.array([1.0, 1.5, -1.75, 1.0, 1.2345, 0.75, 3.0, 1.0], DTYPES[dtype])
    n = np.array([0, 10, -20, -149 if dtype == "f32" else -1074, -140, 128, 127, 252 if dtype == "f64" else 127],
                 DTYPES[dtype])
    got = elementwise(backend, lambda a, b: Call("ldexp", (a, b)), [y, n], dtype)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, np.ldexp(y, n.astype(np.int32)))


# ---- the f32 approximations: same expressions everywhere, within their bounds ------------------
WIDE = np.concatenate([np.linspace(-110, 95, 40001), np.linspace(-1, 1, 4001), np.geomspace(1e-30, 1e-3, 200),
                       [np.nan, np.inf, -np.inf, 0.0, -0.0]]).astype(np.float32)


@pytest.mark.parametrize("name,expr,ref,bound", [
    ("exp", exp_f32, np.exp, "2 ulp"),
    ("tanh", tanh_f32, np.tanh, 2e-7),
    ("erf", erf_f32, None, 4e-7),
])
def test_f32_approximations_within_their_bounds_on_every_backend(name, expr, ref, bound):
    from math import erf

    results = {b: elementwise(b, expr, [WIDE], "f32") for b in BACKENDS}
    x64 = WIDE.astype(np.float64)
    with np.errstate(all="ignore"):
        want = ref(x64) if ref is not None else np.array([erf(v) if np.isfinite(v) else np.sign(v) if not np.isnan(v)
                                                          else np.nan for v in x64])
        want[np.abs(want) > np.finfo(np.float32).max] = np.inf  # beyond f32: inf
    for b, got in results.items():
        finite = np.isfinite(want)
        if bound == "2 ulp":  # relative where the result is normal, absolute below
            ulp = np.spacing(np.abs(want[finite]).astype(np.float32)).astype(np.float64)
            assert np.all(np.abs(got[finite] - want[finite]) <= 2 * np.maximum(ulp, 1e-45)), b
        else:
            assert np.max(np.abs(got[finite] - want[finite])) <= bound, b
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)].astype(np.float32))
    a, b = results["llvm"], results["numba"]  # one expression, so the backends agree to the last bit or nearly
    np.testing.assert_array_max_ulp(a[np.isfinite(a)], b[np.isfinite(a)], maxulp=1)


# ---- statements ------------------------------------------------------------------------------
def reduction_kernel(kind: LoopKind, n: int, m: int) -> Kernel:
    """out[r] = sum_c x[r, c], with a local accumulator; the row loop is of `kind`."""
    r, c = Var("r"), Var("c")
    acc = Load("acc", const(0), "f32")
    body = Allocate("acc", "f32", 1, seq(
        Store("acc", const(0), Const(0.0, "f32")),
        For(c, const(m), Store("acc", const(0), add(acc, Load("x", add(mul(r, const(m)), c), "f32")))),
        If(Compare(">", acc, Const(0.0, "f32")), Store("out", r, acc), Store("out", r, Const(-1.0, "f32")))))
    return Kernel("rows", (Param("x", "f32", n * m), Param("out", "f32", n)), For(r, const(n), body, kind))


@pytest.mark.parametrize("kind,threads", [(LoopKind.SERIAL, 1), (LoopKind.PARALLEL, 2), (LoopKind.UNROLLED, 1),
                                          (LoopKind.VECTORIZED, 1), (LoopKind.ROLLED, 1)])
def test_loops_allocate_and_if(backend, kind, threads):
    n, m = 13 if kind != LoopKind.UNROLLED else 4, 37
    x = np.random.default_rng(5).standard_normal(n * m).astype(np.float32)
    out = np.zeros(n, np.float32)
    compile_kernel(backend, reduction_kernel(kind, n, m), threads)([x, out])
    sums = x.reshape(n, m).sum(1, dtype=np.float64)
    np.testing.assert_allclose(out, np.where(sums > 0, sums, -1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", [LoopKind.SERIAL, LoopKind.VECTORIZED])
@pytest.mark.parametrize("fn,parts", [("dot4", 4), ("dot2", 2)])
def test_word_dot_products(backend, fn, parts, kind):
    """dot4 (u8 bytes by i8 bytes) and dot2 (i16 halves by i16 halves) on i32
    words, exact at the extremes (255 x -128 in every byte; -32768 squared in
    every half wraps the i32 sum, as defined), over 37 lanes: the vector
    pieces of every width and a scalar remainder."""
    rng = np.random.default_rng(11)
    n = 37
    if parts == 4:
        a_parts = np.concatenate([np.full((4, 4), 255), rng.integers(0, 256, (n - 4, 4))]).astype(np.uint8)
        b_parts = np.concatenate([np.full((4, 4), -128), rng.integers(-128, 128, (n - 4, 4))]).astype(np.int8)
    else:
        a_parts = np.concatenate([np.full((4, 2), -32768), rng.integers(-32768, 32768, (n - 4, 2))]).astype(np.int16)
        b_parts = np.concatenate([np.full((4, 2), -32768), rng.integers(-32768, 32768, (n - 4, 2))]).astype(np.int16)
    a, b = a_parts.view(np.int32).ravel(), b_parts.view(np.int32).ravel()
    acc = rng.integers(-1000, 1000, n).astype(np.int32)
    got = elementwise(backend, lambda x, y, z: Call(fn, (x, y, z)), [acc, a, b], "i32", kind)
    want = acc.astype(np.int64) + (a_parts.astype(np.int64) * b_parts.astype(np.int64)).sum(1)
    np.testing.assert_array_equal(got, want.astype(np.int32))  # (wrapped: numpy's cast of int64 to int32)


@pytest.mark.parametrize("kind", [LoopKind.SERIAL, LoopKind.ROLLED])
def test_llvm_keeps_a_rolled_loop_a_loop(kind):
    """A ROLLED loop's back edge asks LLVM not to unroll it: after O3 the loop
    of four steps is still there (a phi), where a serial one is unrolled
    away. The steps depend on each other (no reassociation), so the loop
    vectorizer leaves both alone."""
    i = Var("i")
    acc = Load("acc", const(0), "f32")
    body = Allocate("acc", "f32", 1, seq(
        Store("acc", const(0), Const(1.0, "f32")),
        For(i, const(4), Store("acc", const(0), add(mul(acc, Load("x", i, "f32")), Const(1.0, "f32"))), kind),
        Store("out", const(0), acc)))
    run = compile_kernel("llvm", Kernel("k", (Param("x", "f32", 4), Param("out", "f32", 1)), body))
    x, out = np.array([2, 3, 5, 7], np.float32), np.zeros(1, np.float32)
    run([x, out])
    assert out[0] == ((((1 * 2 + 1) * 3 + 1) * 5 + 1) * 7 + 1)
    stage = run.jit.optimized()[0]
    assert (" phi " in stage) == (kind == LoopKind.ROLLED)
    assert ('!"llvm.loop.unroll.disable"' in stage) == (kind == LoopKind.ROLLED)


def test_a_kernel_rejects_arrays_that_do_not_fit(backend):
    run = compile_kernel(backend, reduction_kernel(LoopKind.SERIAL, 4, 3))
    with pytest.raises(ValueError, match="parameter x wants 12 contiguous f32 elements, got float64"):
        run([np.zeros(12), np.zeros(4, np.float32)])


def test_a_kernel_takes_contiguous_arrays_of_any_shape(backend):
    x = np.random.default_rng(6).standard_normal((4, 3)).astype(np.float32)
    out = np.zeros((4, 1), np.float32)
    compile_kernel(backend, reduction_kernel(LoopKind.SERIAL, 4, 3))([x, out])  # indexed flat, as the kernel says
    np.testing.assert_allclose(out[:, 0], np.where(x.sum(1) > 0, x.sum(1), -1), rtol=1e-6)


@pytest.mark.parametrize("lanes", [2, 7, 16, 27])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_vectorized_loads_at_a_stride_read_their_elements(backend, lanes, stride):
    """out[v] = x[stride * v + 1] + x[stride * v + 2], the loop vectorized, with x
    ending at the last lane's element: on llvm in pieces of a register's lanes
    (the last one overlapping the one before), where a stride of 1 or 2 is whole
    vector loads (for 2: the two reads, one element apart, share two loads, and
    take a shuffle each), a larger one element by element."""
    v = Var("v")
    size = stride * (lanes - 1) + 3
    x = np.random.default_rng(lanes).standard_normal(size).astype(np.float32)
    at = [Load("x", add(mul(v, const(stride)), const(k)), "f32") for k in (1, 2)]
    kernel = Kernel("strided", (Param("x", "f32", size), Param("out", "f32", lanes)),
                    For(v, const(lanes), Store("out", v, Binary("+", *at)), LoopKind.VECTORIZED))
    out = np.zeros(lanes, np.float32)
    compile_kernel(backend, kernel)([x, out])
    np.testing.assert_array_equal(out, x[1::stride][:lanes] + x[2::stride][:lanes])
    if backend == "llvm":
        import llvmlite.ir as ir

        from minidlc.backends.llvm.codegen import KernelCodegen, vector_bits
        module = ir.Module()
        KernelCodegen(module, kernel).emit()
        text = str(module)
        width = min(lanes, vector_bits() // 32)
        pieces = -(-lanes // width)
        assert text.count(f"load <{width} x float>") == pieces * (2 if stride in (1, 2) else 0)
        assert text.count("shufflevector") == (2 * pieces if stride == 2 else 0)
        assert ("insertelement" in text) == (stride > 2)


@pytest.mark.parametrize("lanes", [17, 27, 40])
def test_a_vectorized_update_in_place_stores_each_lane_once(backend, lanes):
    """y[v] = 2 * y[v] + x[v]: llvm's vector pieces must not overlap here (a lane
    stored twice would be doubled twice); without the read of y they may."""
    v = Var("v")
    x, y = (np.random.default_rng(lanes + k).standard_normal(lanes).astype(np.float32) for k in (0, 1))
    value = Binary("+", Binary("*", Const(2.0, "f32"), Load("y", v, "f32")), Load("x", v, "f32"))
    kernel = Kernel("update", (Param("x", "f32", lanes), Param("y", "f32", lanes)),
                    For(v, const(lanes), Store("y", v, value), LoopKind.VECTORIZED))
    want = 2 * y + x
    compile_kernel(backend, kernel)([x, y])
    np.testing.assert_array_equal(y, want)


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through libc")
@pytest.mark.parametrize("dtype", ["f32", "i8", "f16"])
@pytest.mark.parametrize("lanes", [2, 17, 27, 64])
@pytest.mark.parametrize("stride,taps", [(1, 1), (2, 1), (2, 2)])
def test_vectorized_loads_read_nothing_past_their_buffer(dtype, lanes, stride, taps):
    """llvm's vector loads of x[stride * v] (and x[2v + 1], for two taps:
    the pair shares its loads) (whole vectors, overlapping pieces) with x right
    before, then right after, a page that may not be read: a load past either
    end of x would fault."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    size, item = stride * (lanes - 1) + taps, np.dtype(DTYPES[dtype]).itemsize
    v = Var("v")
    reads = [Load("x", add(mul(v, const(stride)), const(t)), dtype) for t in range(taps)]
    value = reads[0] if taps == 1 else Binary("max", *reads)
    run = compile_kernel("llvm", Kernel("strided", (Param("x", dtype, size), Param("out", dtype, lanes)),
                                        For(v, const(lanes), Store("out", v, value), LoopKind.VECTORIZED)))
    for guard_after in (True, False):
        pages = mmap.mmap(-1, 3 * mmap.PAGESIZE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(pages))
        guard = base + (2 if guard_after else 0) * mmap.PAGESIZE
        assert libc.mprotect(guard, mmap.PAGESIZE, 0) == 0  # PROT_NONE
        try:
            start = 2 * mmap.PAGESIZE - size * item if guard_after else mmap.PAGESIZE
            x = np.frombuffer(pages, DTYPES[dtype], size, start)
            x[:] = np.arange(size) % 100
            out = np.zeros(lanes, DTYPES[dtype])
            run([x, out])
            want = x[::stride][:lanes] if taps == 1 else np.maximum(x[::2][:lanes], x[1::2][:lanes])
            np.testing.assert_array_equal(out, want)
            del x
        finally:
            libc.mprotect(guard, mmap.PAGESIZE, 3)  # read and write again, before the map goes


# ---- a local tile read by columns ----------------------------------------------------
@pytest.mark.parametrize("rows,cols,dtype", [(8, 16, "f32"), (8, 32, "f32"), (6, 32, "f32"), (6, 16, "f32"), (4, 16, "i32"), (8, 8, "f64"),
                                             (3, 16, "f32")])
@pytest.mark.parametrize("fill", ["in order", "through an index"])
def test_a_local_tile_stored_by_columns_is_transposed(backend, rows, cols, dtype, fill):
    """A direct conv's accumulator block, rows x cols in a local array, stored
    one column at a time (a vector down the rows): every column right, rows
    that are no power of two included (padded), as on the GEMM's edge blocks.
    Filled through an index read at run time, the tile stays in memory (no
    register holds it), where its rows are only element-aligned; and a store
    to it between two columns is seen by the second. On llvm the columns come
    from one transposition of the rows, shuffles only: no element is inserted
    lane by lane (VectorCodegen._tile_column)."""
    n = rows * cols
    r, c, i = Var("r"), Var("c"), Var("i")
    at = i if fill == "in order" else Binary("min", Binary("max", Load("at", i, "i64"), const(0)), const(n - 1))

    def columns(first: int, count: int):
        return For(c, const(count), For(r, const(rows), Store("out", add(mul(add(c, const(first)), const(rows)), r),
                                                              Load("tile", add(mul(r, const(cols)), add(c, const(first))),
                                                                   dtype)),
                                        LoopKind.VECTORIZED), LoopKind.UNROLLED)
    body = Allocate("tile", dtype, n, seq(
        For(i, const(n), Store("tile", at, Load("a", i, dtype)), LoopKind.SERIAL),
        columns(0, cols // 2),
        Store("tile", const(cols - 1), Const(-7, dtype)),  # row 0 of the last column, read after this
        columns(cols // 2, cols - cols // 2)))
    kernel = Kernel("k", (Param("a", dtype, n), Param("at", "i64", n), Param("out", dtype, n)), body)
    a = np.arange(n).astype(DTYPES[dtype])
    out = np.zeros(n, DTYPES[dtype])
    run = compile_kernel(backend, kernel)
    run([a, np.arange(n, dtype=np.int64), out])
    want = a.reshape(rows, cols).copy()
    want[0, -1] = -7
    np.testing.assert_array_equal(out.reshape(cols, rows), want.T)
    if backend == "llvm":  # the IR as emitted: columns by shuffles, not lane by lane
        import llvmlite.ir as ir

        from minidlc.backends.llvm.codegen import KernelCodegen

        module = ir.Module()
        KernelCodegen(module, kernel).emit()
        assert "insertelement" not in str(module)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_vectorized_lane_variable_that_cancels_out(backend):
    """An expression that names the vectorized loop's variable only where it
    cancels, x[(v - v) mod 16], is the same in every lane: it is computed once
    (llvm emits it with the variable at lane 0) and broadcast, and a
    condition of the same kind selects alike in every lane."""
    v, n = Var("v"), 16
    zero = Binary("mod", Binary("-", v, v), const(16))
    values = [Load("x", zero, "f32"),
              add(Load("x", Binary("mod", add(zero, const(3)), const(16)), "f32"), Load("x", v, "f32")),
              Select(Compare("<", zero, const(1)), Load("x", v, "f32"), Const(0.0, "f32"))]
    x = np.arange(n, dtype=np.float32) + 1
    for value, want in zip(values, [np.full(n, 1.0), x[3] + x, x]):
        out = np.zeros(n, np.float32)
        body = For(v, const(n), Store("out", v, value), LoopKind.VECTORIZED)
        compile_kernel(backend, Kernel("k", (Param("x", "f32", n), Param("out", "f32", n)), body))([x, out])
        np.testing.assert_array_equal(out, want)
