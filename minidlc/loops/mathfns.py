"""f32 exp, tanh and erf as loop IR, so that every backend computes the same numbers.

A libm call is one scalar call per element, which keeps a loop from
vectorizing, and each backend's libm rounds differently. So lowering
replaces f32 `exp`, `tanh` and `erf` calls by the expressions below (see
`expand_math`); backends only see + - * / min max select, and `ldexp`,
which is exact. f64 calls stay calls: each backend uses its libm (correctly
rounded or within 1 ulp).

Error bounds, measured against the f64 functions over all of f32 (tests/test_kernels.py):
    exp   Cephes' expf: range reduction by ln 2 in two parts, degree-6
          polynomial; within 2 ulp (subnormal results within 1e-45 absolute);
          overflow gives inf, x < -103.97 gives 0
    tanh  Cephes' tanhf: odd polynomial below 0.625, else 1 - 2 / (exp(2|x|) + 1);
          within 2e-7 absolute
    erf   x * P(x^2) / Q(x^2) on [-4, 4] (Eigen's and TensorFlow's float erf);
          within 4e-7 absolute
"""
from __future__ import annotations

from .ir import Binary, Call, Compare, Const, Expr, Select, Stmt, add, mul
from .transform import map_stmt


def _c(x: float, like: Expr) -> Const:
    return Const(x, like.dtype)


def horner(coeffs, z: Expr, like: Expr) -> Expr:
    """coeffs[0] * z^(n-1) + ... + coeffs[-1]."""
    acc = _c(coeffs[0], like)
    for c in coeffs[1:]:
        acc = add(mul(acc, z), _c(c, like))
    return acc


_EXP_MAX, _EXP_MIN = 88.72283935546875, -103.97  # beyond: inf, and 0 (below the smallest subnormal)
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)


def exp_f32(x: Expr) -> Expr:
    """exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 in two
    parts, so r is exact), exp(r) by a degree-6 polynomial."""
    clamped = Binary("min", Binary("max", x, _c(_EXP_MIN, x)), _c(_EXP_MAX, x))
    n = Call("floor", (add(mul(clamped, _c(1.44269504088896341, x)), _c(0.5, x)),))
    r = Binary("-", Binary("-", clamped, mul(n, _c(0.693359375, x))), mul(n, _c(-2.12194440e-4, x)))
    y = add(add(mul(horner(_EXP_P, r, x), mul(r, r)), r), _c(1.0, x))
    y = Call("ldexp", (y, n))
    y = Select(Compare(">", x, _c(_EXP_MAX, x)), _c(float("inf"), x), y)
    y = Select(Compare("<", x, _c(_EXP_MIN, x)), _c(0.0, x), y)
    return Select(Compare("!=", x, x), x, y)  # NaN in, NaN out


_TANH_P = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1)


def tanh_f32(x: Expr) -> Expr:
    """Near 0 an odd polynomial (the other form would cancel); elsewhere
    1 - 2 / (exp(2|x|) + 1), with x's sign. inf gives 1, NaN stays NaN."""
    a = Call("abs", (x,))
    far = Binary("-", _c(1.0, x), Binary("/", _c(2.0, x), add(exp_f32(mul(_c(2.0, x), a)), _c(1.0, x))))
    z = mul(x, x)
    near = add(mul(mul(horner(_TANH_P, z, x), z), x), x)
    return Select(Compare("<", a, _c(0.625, x)), near, Select(Compare("<", x, _c(0.0, x)), Call("neg", (far,)), far))


_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)


def erf_f32(x: Expr) -> Expr:
    x = Binary("min", Binary("max", x, _c(-4.0, x)), _c(4.0, x))
    x2 = mul(x, x)
    return Binary("/", mul(x, horner(_ERF_P, x2, x)), horner(_ERF_Q, x2, x))


F32_EXPANSIONS = {"exp": exp_f32, "tanh": tanh_f32, "erf": erf_f32}


def expand_math(body: Stmt) -> Stmt:
    """Replace every f32 exp, tanh and erf call by its loop-IR expression."""
    def expand(e: Expr):
        if isinstance(e, Call) and e.dtype == "f32" and e.fn in F32_EXPANSIONS:
            return F32_EXPANSIONS[e.fn](e.args[0])
        return None
    return map_stmt(body, expand)
