"""Loop IR: printer, verifier (static bounds), simplifier, and each schedule
primitive checked against the unscheduled kernel on random shapes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minidlc.backends.llvm import compile_kernel
from minidlc.loops import LoopIRError, verify_kernel
from minidlc.loops.ir import Binary, Const, For, Kernel, Load, Param, Store, Var, add, const, mul, seq
from minidlc.loops.printer import print_expr, print_kernel
from minidlc.loops.schedule import ScheduleError, fuse, parallel, reorder, split, unroll, vectorize
from minidlc.loops.simplify import simplify

i, j, k = Var("i"), Var("j"), Var("k")


def matmul_kernel(m: int, n: int, kk: int) -> Kernel:
    """C = A @ B the naive way: zero C, then for i, j, k: C[i,j] += A[i,k] * B[k,j]."""
    c_ij = add(mul(i, const(n)), j)
    i0, j0 = Var("i0"), Var("j0")
    zero = For(i0, const(m), For(j0, const(n), Store("C", add(mul(i0, const(n)), j0), Const(0.0, "f32"))))
    update = Store("C", c_ij, add(Load("C", c_ij, "f32"),
                                  mul(Load("A", add(mul(i, const(kk)), k), "f32"), Load("B", add(mul(k, const(n)), j), "f32"))))
    nest = For(i, const(m), For(j, const(n), For(k, const(kk), update)))
    params = (Param("A", "f32", m * kk), Param("B", "f32", kk * n), Param("C", "f32", m * n))
    return Kernel("matmul", params, seq(zero, nest))


def test_printer_reads_like_c():
    text = print_kernel(matmul_kernel(2, 3, 4))
    assert text == """\
kernel matmul(f32* A /*[8]*/, f32* B /*[12]*/, f32* C /*[6]*/) {
  for (i0 = 0; i0 < 2; i0++) {
    for (j0 = 0; j0 < 3; j0++) {
      C[i0 * 3 + j0] = 0.0f;
    }
  }
  for (i = 0; i < 2; i++) {
    for (j = 0; j < 3; j++) {
      for (k = 0; k < 4; k++) {
        C[i * 3 + j] = C[i * 3 + j] + A[i * 4 + k] * B[k * 3 + j];
      }
    }
  }
}"""


def test_verifier_rejects_out_of_bounds_access():
    bad = Kernel("bad", (Param("x", "f32", 10),), For(i, const(11), Store("x", i, Const(1.0, "f32"))))
    with pytest.raises(LoopIRError, match=r"kernel bad: store x\[i\] may be out of bounds: index range \[0, 10\]"):
        verify_kernel(bad)


def test_verifier_accepts_guarded_and_clamped_accesses():
    from minidlc.loops.ir import Compare, If

    guarded = For(i, const(16), If(Compare("<", i, const(10)), Store("x", i, Const(1.0, "f32"))))
    clamped = For(i, const(16), Store("y", i, Load("x", Binary("min", i, const(9)), "f32")))
    verify_kernel(Kernel("ok", (Param("x", "f32", 10), Param("y", "f32", 16)), seq(guarded, clamped)))


def test_verifier_rejects_unbound_variable_and_dtype_mismatch():
    with pytest.raises(LoopIRError, match="variable j is used outside its loop"):
        verify_kernel(Kernel("k", (Param("x", "f32", 4),), For(i, const(4), Store("x", j, Const(0.0, "f32")))))
    with pytest.raises(LoopIRError, match=r"store to x \(f32\) of a f64 value"):
        verify_kernel(Kernel("k", (Param("x", "f32", 4),), For(i, const(4), Store("x", i, Const(0.0, "f64")))))


def test_simplifier_folds_index_arithmetic():
    e = add(mul(add(mul(const(0), const(4)), i), const(1)), const(0))
    assert simplify(e) == i
    assert simplify(add(add(i, const(2)), const(3))) == add(i, const(5))
    assert simplify(mul(Var("x", "f32"), Const(0.0, "f32"))) == mul(Var("x", "f32"), Const(0.0, "f32"))  # not on floats


def _value(e, env: dict) -> int:
    """An integer index expression's value (C division: both sides are non-negative here)."""
    if isinstance(e, Const):
        return int(e.value)
    if isinstance(e, Var):
        return env[e]
    a, b = _value(e.a, env), _value(e.b, env)
    return {"+": int.__add__, "-": int.__sub__, "*": int.__mul__, "/": int.__floordiv__, "%": int.__mod__}[e.op](a, b)


def _linear_in_loop_vars(terms: list[tuple[int, int]], konst: int):
    """Loop variables v0, v1, ... (one per (extent, coefficient) term) and konst + sum of coefficient * v."""
    names = [Var(f"v{t}") for t in range(len(terms))]
    e = const(konst)
    for v, (_, k) in zip(names, terms):
        e = add(e, mul(v, const(k)))
    return names, e


def _simplified_in_loops(body, names: list, terms: list[tuple[int, int]]):
    """`body` simplified inside loops over `names` of the terms' extents: the innermost statement."""
    from minidlc.loops.ir import For

    from minidlc.loops.simplify import simplify_stmt

    for v, (extent, _) in zip(names, terms):
        body = For(v, const(extent), body)
    simplified = simplify_stmt(body)
    while isinstance(simplified, For):
        simplified = simplified.body
    return simplified


@settings(deadline=None, max_examples=60)
@given(st.lists(st.tuples(st.integers(1, 9), st.integers(0, 60)), min_size=1, max_size=3),
       st.integers(0, 20), st.sampled_from(["/", "%"]), st.integers(2, 200))
def test_division_by_the_loop_ranges_is_exact(terms, konst, op, d):
    """Within loops of known extents, simplify drops a division when the ranges
    allow it ((p * 49 + i * 7 + j) / 196 is p / 4 for i, j < 7); whatever it
    leaves must agree with the division on every point of the loops."""
    from itertools import product

    from minidlc.loops.ir import Store

    names, e = _linear_in_loop_vars(terms, konst)
    simplified = _simplified_in_loops(Store("y", Binary(op, e, const(d)), Const(0.0, "f32")), names, terms)
    for point in product(*(range(extent) for extent, _ in terms)):
        env = dict(zip(names, point))
        want = _value(e, env)
        assert _value(simplified.index, env) == (want // d if op == "/" else want % d), (simplified.index, env)
    if op == "/" and d == 196 and terms == [(64, 49), (7, 7), (7, 1)] and konst == 0:
        assert simplified.index == Binary("/", names[0], const(4))


def _test_value(e, env: dict):
    """The value of an integer expression with min/max, compares, and/or and selects."""
    from minidlc.loops.ir import Compare, Select

    if isinstance(e, Select):
        return _test_value(e.a if _test_value(e.cond, env) else e.b, env)
    if isinstance(e, Compare):
        a, b = _test_value(e.a, env), _test_value(e.b, env)
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[e.op]
    if isinstance(e, Binary) and e.op in ("min", "max", "and", "or"):
        a, b = _test_value(e.a, env), _test_value(e.b, env)
        return {"min": min, "max": max, "and": lambda x, y: x and y, "or": lambda x, y: x or y}[e.op](a, b)
    if isinstance(e, Const):
        return e.value
    return env[e] if isinstance(e, Var) else _value(e, env)


@settings(deadline=None, max_examples=80)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(-3, 3)), min_size=1, max_size=2), st.integers(-8, 8),
       st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), st.integers(-8, 12), st.sampled_from(["min", "max"]),
       st.integers(-6, 10), st.sampled_from(["and", "or"]))
def test_tests_that_the_loop_ranges_decide_fold_exactly(terms, konst, op, bound, clamp, limit, join):
    """Within loops of known extents, simplify folds a compare (a padded read's
    border test), a min or max, and an and/or with a folded side, when the
    ranges decide them; whatever it leaves agrees on every point of the loops."""
    from itertools import product

    from minidlc.loops.ir import Compare, Select
    from minidlc.loops.transform import walk_exprs

    names, e = _linear_in_loop_vars(terms, konst)
    index = Binary(clamp, e, const(limit))
    test = Binary(join, Compare(op, index, const(bound)), Compare(">=", names[0], const(0)))
    value = Select(test, Const(1.0, "f32"), Const(0.0, "f32"))
    simplified = _simplified_in_loops(Store("y", index, value), names, terms)
    for point in product(*(range(extent) for extent, _ in terms)):
        env = dict(zip(names, point))
        assert _test_value(simplified.value, env) == _test_value(value, env), (simplified.value, env)
        assert _test_value(simplified.index, env) == _test_value(index, env), (simplified.index, env)
    assert not any(isinstance(x, Compare) and x.a == names[0] for x in walk_exprs(simplified.value))  # v0 >= 0


def test_zero_and_negative_zero_are_different_constants():
    """Kernels equal up to names share code, and simplified bodies are
    remembered, by equality: max(x, 0.0) and max(x, -0.0) must not meet."""
    from minidlc.loops.lower import simplify_shared
    from minidlc.loops.transform import canonical_kernel

    assert Const(0.0, "f32") != Const(-0.0, "f32") and Const(0, "i64") == Const(0, "i64")
    assert hash(Const(1.5, "f32")) == hash(Const(1.5, "f32"))
    bodies = [For(i, const(4), Store("y", i, Binary("max", Load("x", i, "f32"), Const(z, "f32")))) for z in (0.0, -0.0)]
    kernels = [Kernel("k", (Param("x", "f32", 4), Param("y", "f32", 4)), b) for b in bodies]
    assert canonical_kernel(kernels[0]) != canonical_kernel(kernels[1])
    for z, body in zip((0.0, -0.0), bodies):
        assert str(simplify_shared(body).body.value.b.value) == str(z)


def test_division_by_the_loop_ranges_takes_a_channel_shuffle_apart():
    from minidlc.loops.ir import For, Store

    from minidlc.loops.simplify import simplify_stmt

    p, y, x = Var("p"), Var("y"), Var("x")
    flat = add(add(mul(p, const(49)), mul(y, const(7))), x)  # a (64, 7, 7) element
    body = For(p, const(64), For(y, const(7), For(x, const(7), Store("o", Binary("/", flat, const(196)), Const(0.0, "f32")))))
    assert simplify_stmt(body).body.body.body.index == Binary("/", p, const(4))


@pytest.mark.parametrize("index,extents,divided", [
    ("kt * 18 + r", (32, 18), "kt * 2 + r / 9"),    # a GPU conv's slab of two 3x3 windows
    ("kt * 18 + r + 100", (32, 18), "kt * 2 + (r + 1) / 9 + 11"),
    ("kt + 256", (128, 1), "(kt + 4) / 9 + 28"),    # what a constant adds leaves it too
])
def test_what_moves_with_a_loop_leaves_the_division(index, extents, divided):
    """(kt * 18 + r) / 9 with r < 18 is kt * 2 + r / 9 (and the remainder
    r % 9): the division no longer changes with kt. Exact at every point."""
    from minidlc.loops.ir import For, Store
    from minidlc.loops.simplify import simplify_stmt
    from minidlc.loops.transform import walk_stmts

    kt, r = Var("kt"), Var("r")
    e = eval(index, {"kt": _E(kt), "r": _E(r)}).e
    for op in ("/", "%"):
        body = For(kt, const(extents[0]), For(r, const(extents[1]), Store("o", Binary(op, e, const(9)), Const(0.0, "f32"))))
        got = next(x for x in walk_stmts(simplify_stmt(body)) if isinstance(x, Store)).index
        if op == "/":
            assert print_expr(got) == divided
        for point in np.ndindex(*extents):
            value = _value(e, dict(zip((kt, r), point)))
            assert _value(got, dict(zip((kt, r), point))) == (value // 9 if op == "/" else value % 9), (got, point)


class _E:
    """Index arithmetic with Python operators, building loop IR."""

    def __init__(self, e):
        self.e = e

    def __add__(self, o): return _E(Binary("+", self.e, o.e if isinstance(o, _E) else const(o)))
    def __mul__(self, o): return _E(Binary("*", self.e, o.e if isinstance(o, _E) else const(o)))


def _run(kernel: Kernel, m, n, kk, threads=1):
    rng = np.random.default_rng(m * 100 + n * 10 + kk)
    a = rng.standard_normal((m, kk)).astype(np.float32)
    b = rng.standard_normal((kk, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    compile_kernel(kernel, threads)([a, b, c])
    return c, a @ b


dims = st.integers(1, 37)


@settings(deadline=None, max_examples=5)
@given(dims, dims, dims, st.sampled_from([1, 2, 3, 4]), st.sampled_from([1, 2, 4, 8]))
def test_schedules_preserve_results(m, n, kk, fi, fj):
    """split + reorder + vectorize + unroll + parallel, applied one after the
    other: every intermediate kernel computes A @ B."""
    s = matmul_kernel(m, n, kk).body
    steps = [lambda s: split(s, "i", fi), lambda s: split(s, "j", fj)]
    if m % fi == 0 and n % fj == 0:  # no tail loops: the nest stays perfect
        steps += [lambda s: reorder(s, ["i_o", "j_o", "k", "i_i", "j_i"]), lambda s: vectorize(s, "j_i"),
                  lambda s: unroll(s, "i_i"), lambda s: parallel(s, "i_o")]
    for step in steps:
        s = step(s)
        kern = Kernel("matmul", matmul_kernel(m, n, kk).params, s)
        got, want = _run(kern, m, n, kk, threads=2)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@settings(deadline=None, max_examples=4)
@given(dims, dims, dims)
def test_fuse_preserves_results(m, n, kk):
    s = matmul_kernel(m, n, kk).body
    s = parallel(fuse(s, "i", "j"), "i_j")
    got, want = _run(Kernel("matmul", matmul_kernel(m, n, kk).params, s), m, n, kk, threads=2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_schedule_errors_name_the_loop():
    s = matmul_kernel(4, 4, 4).body
    with pytest.raises(ScheduleError, match="no loop over 'q'"):
        split(s, "q", 2)
    with pytest.raises(ScheduleError, match="loop i is not innermost"):
        vectorize(s, "i")
