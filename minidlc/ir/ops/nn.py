"""Neural-network ops: MatMul, Gemm, Einsum, Softmax, LogSoftmax; and, in
the modules imported at the bottom, convolutions, pools, normalizations and
Resize.

Fusion kinds: MatMul and Gemm are OUT_FUSABLE (a bias or activation can be
fused into their epilogue); Softmax and LogSoftmax reduce one axis
(REDUCTION); Einsum is OPAQUE because its equation can mean a matmul, a
transpose or a reduction.
"""
from __future__ import annotations

import re

import numpy as np

from ..registry import Attr, Kind, fail, register
from ..types import FLOAT_DTYPES, NUMERIC_DTYPES, TensorType
from .common import like, norm_axis, same_dtype


# ---- MatMul, Gemm -------------------------------------------------------------
def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """numpy.matmul's output shape: 1-D operands get a dimension that is
    dropped again, leading (batch) dimensions broadcast."""
    if not a or not b:
        fail("MatMul operands must have at least one dimension")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        fail(f"inner dimensions differ: {list(a)} @ {list(b)}")
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        fail(f"batch dimensions of {list(a)} and {list(b)} do not broadcast")
    rows = (a2[-2],) if len(a) > 1 else ()
    cols = (b2[-1],) if len(b) > 1 else ()
    return tuple(batch) + rows + cols


def _matmul_infer(a, b):
    dt = same_dtype(a, b, allowed=NUMERIC_DTYPES)
    return TensorType(matmul_shape(a.shape, b.shape), dt)


register("MatMul", Kind.OUT_FUSABLE, _matmul_infer, lambda a, b: np.matmul(a, b), inputs=(2, 2),
         doc="numpy.matmul: batch broadcasting, 1-D operands")


def _gemm_infer(a, b, c=None, *, alpha, beta, transA, transB):
    dt = same_dtype(a, b, c, allowed=NUMERIC_DTYPES)
    if a.rank != 2 or b.rank != 2:
        fail(f"A {list(a.shape)} and B {list(b.shape)} must be matrices")
    m, k = a.shape[::-1] if transA else a.shape
    k2, n = b.shape[::-1] if transB else b.shape
    if k != k2:
        fail(f"inner dimensions differ: A' is [{m}, {k}], B' is [{k2}, {n}] (transA={transA}, transB={transB})")
    if c is not None and np.broadcast_shapes(c.shape, (m, n)) != (m, n):
        fail(f"C {list(c.shape)} does not broadcast to [{m}, {n}]")
    return TensorType((m, n), dt)


def _gemm(a, b, c=None, *, alpha, beta, transA, transB):
    y = (a.T if transA else a) @ (b.T if transB else b)
    if alpha != 1:
        y = alpha * y
    if c is not None and beta != 0:
        y = y + (beta * c if beta != 1 else c)
    return y.astype(a.dtype)


register("Gemm", Kind.OUT_FUSABLE, _gemm_infer, _gemm, inputs=(2, 3),
         attrs={"alpha": Attr("float", 1.0), "beta": Attr("float", 1.0),
                "transA": Attr("int", 0, choices=(0, 1)), "transB": Attr("int", 0, choices=(0, 1))},
         doc="alpha * A' @ B' + beta * C, C broadcast to the result (A' = A.T if transA)")


# ---- Softmax, LogSoftmax ------------------------------------------------------
def _softmax_infer(x, *, axis):
    same_dtype(x, allowed=FLOAT_DTYPES)
    norm_axis(axis, x.rank)
    return like(x)


def _log_softmax(x, *, axis):
    x64 = x.astype(np.float64)
    shifted = x64 - x64.max(axis=axis, keepdims=True, initial=-np.inf)  # initial: an empty x has no max
    with np.errstate(divide="ignore"):  # log(0): the sum over an empty axis
        return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


register("Softmax", Kind.REDUCTION, _softmax_infer,
         lambda x, axis: np.exp(_log_softmax(x, axis=axis)).astype(x.dtype),
         attrs={"axis": Attr("int", -1)}, doc="softmax along one axis (ONNX opset 13 semantics)")
register("LogSoftmax", Kind.REDUCTION, _softmax_infer,
         lambda x, axis: _log_softmax(x, axis=axis).astype(x.dtype),
         attrs={"axis": Attr("int", -1)}, doc="log of softmax along one axis, computed stably")


# ---- Einsum -------------------------------------------------------------------
_TERM = re.compile(r"[A-Za-z]*(\.\.\.)?[A-Za-z]*\Z")


def einsum_terms(equation: str, n_inputs: int) -> tuple[list[str], str]:
    """The input terms and the output term of an equation, the implicit
    output (`ij,jk`) made explicit as NumPy does: the broadcast '...' first,
    then the letters used exactly once, in alphabetical order."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != n_inputs:
        fail(f"equation {equation!r} has {len(terms)} input terms for {n_inputs} inputs")
    for t in terms + ([rhs] if arrow else []):
        if not _TERM.match(t):
            fail(f"bad term {t!r} in equation {equation!r}")
    if not arrow:
        letters = "".join(terms).replace(".", "")
        rhs = ("..." if any("..." in t for t in terms) else "") + \
            "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    return terms, rhs


def _einsum_infer(*xs, equation):
    dt = same_dtype(*xs, allowed=NUMERIC_DTYPES)
    terms, rhs = einsum_terms(equation, len(xs))
    sizes: dict[str, int] = {}
    ellipses = []
    for t, x in zip(terms, xs):
        letters = t.replace("...", "")
        n_ell = x.rank - len(letters)
        if n_ell < 0 or (n_ell and "..." not in t):
            fail(f"term {t!r} does not fit input of shape {list(x.shape)}")
        head, _, tail = t.partition("...")
        dims = x.shape[:len(head)] + x.shape[len(head) + n_ell:] if "..." in t else x.shape
        ellipses.append(x.shape[len(head):len(head) + n_ell] if "..." in t else ())
        for c, d in zip(head + tail, dims):
            if sizes.setdefault(c, d) != d:
                fail(f"index {c!r} has sizes {sizes[c]} and {d} in {equation!r}")
    for c in rhs.replace("...", ""):
        if c not in sizes:
            fail(f"output index {c!r} appears in no input of {equation!r}")
    try:
        ell = tuple(np.broadcast_shapes(*ellipses))
    except ValueError:
        fail(f"the '...' dimensions {[list(e) for e in ellipses]} do not broadcast")
    head, _, tail = rhs.partition("...")
    shape = [sizes[c] for c in head] + (list(ell) if "..." in rhs else []) + [sizes[c] for c in tail]
    return TensorType(tuple(shape), dt)


def _einsum(*xs, equation):
    terms, rhs = einsum_terms(equation, len(xs))
    return np.asarray(np.einsum(",".join(terms) + "->" + rhs, *xs, optimize=len(xs) > 1)).astype(xs[0].dtype)


register("Einsum", Kind.OPAQUE, _einsum_infer, _einsum, inputs=(1, None),
         attrs={"equation": Attr("str")}, doc="Einstein summation, as numpy.einsum")


from . import conv, norm, pool, resize  # noqa: E402,F401  (register the rest of the family)
