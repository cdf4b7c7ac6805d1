"""Elementwise and broadcasting ops: math, activations, comparisons, logic, casts.

Unary ops keep their input's type. Binary and variadic ops broadcast their
inputs NumPy-style (ONNX's multidirectional broadcasting) and require one
dtype. Reference implementations compute in the input dtype, as ONNX does.
"""
from __future__ import annotations

import math

import numpy as np

from ..registry import Attr, Kind, fail, register
from ..types import DTYPES, FLOAT_DTYPES, NUMERIC_DTYPES, TensorType
from .common import broadcast, float_only, like, same_dtype

_erf = np.vectorize(math.erf, otypes=[np.float64])

SIGNED = FLOAT_DTYPES + ("i8", "i16", "i32", "i64")


def _unary(name, fn, dtypes=FLOAT_DTYPES, attrs=None, doc=""):
    def infer(x, **_):
        same_dtype(x, allowed=dtypes)
        return x.type

    def impl(x, **a):
        return np.asarray(fn(x, **a)).astype(x.dtype, copy=False)

    register(name, Kind.ELEMENTWISE, infer, impl, attrs=attrs, doc=doc)


def _binary(name, fn, dtypes=NUMERIC_DTYPES, out_dtype=None, attrs=None, inputs=(2, 2), doc=""):
    """A broadcasting op; out_dtype 'bool' for comparisons, else the input dtype."""

    def infer(*xs, **_):
        dt = same_dtype(*xs, allowed=dtypes)
        return TensorType(broadcast(*xs), out_dtype or dt)

    def impl(*xs, **a):
        out = fn(*xs, **a)
        return np.asarray(out).astype(out_dtype and DTYPES[out_dtype] or xs[0].dtype, copy=False)

    register(name, Kind.BROADCAST, infer, impl, attrs=attrs, inputs=inputs, doc=doc)


def _int_div(a, b):
    """Div: on integers C's truncating division, exact (not through floats,
    which lose int64's low bits), with what the kernels give where ONNX
    leaves it undefined: 0 for a zero divisor, the wrapped negation for -1."""
    if a.dtype.kind not in "iu":
        return a / b
    with np.errstate(all="ignore"):  # (a zero divisor, MIN / -1: replaced below)
        safe = np.where(b == 0, 1, b).astype(b.dtype)
        q = (a - np.fmod(a, safe)) // safe  # a multiple of the divisor: floor and truncation agree
        if a.dtype.kind == "i":
            q = np.where(b == -1, -a, q).astype(q.dtype)
        return np.where(b == 0, 0, q).astype(q.dtype)


def _mod(a, b, fmod):
    """Mod: fmod=1 takes the dividend's sign, fmod=0 the divisor's. An integer
    x % 0 is 0 (as the kernels give), a float one NaN: no warning for either."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.fmod(a, b) if fmod else np.mod(a, b)


# ---- arithmetic ---------------------------------------------------------
_binary("Add", np.add)
_binary("Sub", np.subtract)
_binary("Mul", np.multiply)
_binary("Div", _int_div)
_binary("Mod", _mod, attrs={"fmod": Attr("int", 0)})
_binary("Max", lambda *xs: np.maximum.reduce(np.broadcast_arrays(*xs)), inputs=(1, None))
_binary("Min", lambda *xs: np.minimum.reduce(np.broadcast_arrays(*xs)), inputs=(1, None))
_binary("Sum", lambda *xs: sum(xs[1:], xs[0]), inputs=(1, None))
_binary("Mean", lambda *xs: sum(xs[1:], xs[0]) / len(xs), dtypes=FLOAT_DTYPES, inputs=(1, None))


def _pow_infer(x, y):
    same_dtype(x, allowed=NUMERIC_DTYPES)
    same_dtype(y, allowed=NUMERIC_DTYPES)
    return TensorType(broadcast(x, y), x.dtype)


register("Pow", Kind.BROADCAST, _pow_infer,
         lambda x, y: np.power(x.astype(np.float64), y).astype(x.dtype), inputs=(2, 2),
         doc="x ** y; the exponent may have another dtype, the result has x's")

_unary("Neg", np.negative, SIGNED)
_unary("Abs", np.abs, NUMERIC_DTYPES)
_unary("Sign", np.sign, NUMERIC_DTYPES)
_unary("Sqrt", np.sqrt)
_unary("Exp", np.exp)
_unary("Log", np.log)
_unary("Erf", _erf)
_unary("Reciprocal", np.reciprocal)
_unary("Floor", np.floor)
_unary("Ceil", np.ceil)
_unary("Round", np.round)
_unary("Sin", np.sin)
_unary("Cos", np.cos)
_unary("Tanh", np.tanh)
_unary("Identity", lambda x: x.copy(), tuple(DTYPES))

# ---- activations ----------------------------------------------------------
_unary("Sigmoid", lambda x: 1 / (1 + np.exp(-x.astype(np.float64))))
_unary("Relu", lambda x: np.maximum(x, 0), SIGNED)
_unary("LeakyRelu", lambda x, alpha: np.where(x < 0, alpha * x, x), attrs={"alpha": Attr("float", 0.01)})
_unary("Elu", lambda x, alpha: np.where(x < 0, alpha * (np.exp(x) - 1), x), attrs={"alpha": Attr("float", 1.0)})
_unary("Selu", lambda x, alpha, gamma: gamma * np.where(x <= 0, alpha * (np.exp(x) - 1), x),
       attrs={"alpha": Attr("float", 1.67326319217681884765625), "gamma": Attr("float", 1.05070102214813232421875)})
_unary("HardSigmoid", lambda x, alpha, beta: np.clip(alpha * x + beta, 0, 1),
       attrs={"alpha": Attr("float", 0.2), "beta": Attr("float", 0.5)})
_unary("HardSwish", lambda x: x * np.clip(x / 6 + 0.5, 0, 1))
_unary("Softplus", lambda x: np.logaddexp(0, x.astype(np.float64)))
_unary("Softsign", lambda x: x / (1 + np.abs(x)))


def _gelu(x, approximate):
    x64 = x.astype(np.float64)
    if approximate == "tanh":
        return 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    return 0.5 * x64 * (1 + _erf(x64 / math.sqrt(2)))


_unary("Gelu", _gelu, attrs={"approximate": Attr("str", "none", choices=("none", "tanh"))})
_binary("PRelu", lambda x, slope: np.where(x < 0, slope * x, x), dtypes=SIGNED)
_unary("Shrink", lambda x, bias, lambd: np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0)),
       NUMERIC_DTYPES, attrs={"bias": Attr("float", 0.0), "lambd": Attr("float", 0.5)},
       doc="x + bias below -lambd, x - bias above lambd, 0 between")


def _clip_infer(x, lo=None, hi=None):
    same_dtype(x, allowed=NUMERIC_DTYPES)
    for b in (lo, hi):
        if b is not None and (b.dtype != x.dtype or b.type.numel != 1):
            fail(f"Clip bounds must be scalars of dtype {x.dtype}, got {b.type}")
    return x.type


def _clip(x, lo=None, hi=None):
    if lo is not None:
        x = np.maximum(x, lo.reshape(()))
    if hi is not None:
        x = np.minimum(x, hi.reshape(()))
    return x


register("Clip", Kind.ELEMENTWISE, _clip_infer, _clip, inputs=(1, 3),
         doc="clamp to [min, max]; the bounds are optional scalar inputs")

# ---- comparisons and logic --------------------------------------------------
_binary("Equal", np.equal, NUMERIC_DTYPES + ("bool",), out_dtype="bool")
_binary("Less", np.less, out_dtype="bool")
_binary("LessOrEqual", np.less_equal, out_dtype="bool")
_binary("Greater", np.greater, out_dtype="bool")
_binary("GreaterOrEqual", np.greater_equal, out_dtype="bool")
_binary("And", np.logical_and, ("bool",))
_binary("Or", np.logical_or, ("bool",))
_binary("Xor", np.logical_xor, ("bool",))
_unary("Not", np.logical_not, ("bool",))


def _where_infer(cond, x, y):
    same_dtype(cond, allowed=("bool",))
    dt = same_dtype(x, y)
    return TensorType(broadcast(cond, x, y), dt)


register("Where", Kind.BROADCAST, _where_infer, lambda c, x, y: np.where(c, x, y), inputs=(3, 3))

# ---- casts ------------------------------------------------------------------
register("Cast", Kind.ELEMENTWISE, lambda x, to: like(x, dtype=to),
         lambda x, to: x.astype(DTYPES[to]), attrs={"to": Attr("dtype", choices=tuple(DTYPES))},
         doc="convert to dtype `to` (C semantics: float to int truncates)")


def _dropout_infer(x, ratio=None, training=None):
    float_only(x)
    if training is not None and (training.value is None or bool(np.asarray(training.value).item())):
        fail("Dropout in training mode is not supported (inference only)")
    return [x.type, like(x, dtype="bool")]


register("Dropout", Kind.ELEMENTWISE, _dropout_infer,
         lambda x, ratio=None, training=None: (x.copy(), np.ones(x.shape, np.bool_)), inputs=(1, 3),
         doc="inference-mode dropout: the identity (the optional mask output is all true)")
