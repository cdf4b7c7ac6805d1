"""Compute rules: each op's output element as an expression over its inputs.

`RULES[op](node, idx, read)` returns the expression of the output element
at multi-index `idx` (one i64 expression per output axis); `read(i, idx_i)`
gives input i's element at its own multi-index. Because a rule only asks for
input elements, a producer's rule can be substituted for `read` and the
whole chain becomes one expression: elementwise producers inline into their
consumers with no intermediate buffer.

A rule raises `Unsupported` for a case it does not handle (integer division,
say); the group that holds the node then runs on the NumPy reference.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..ir.ops.shape import VIEW_OPS, slice_ranges
from .ir import INDEX, LOWEST, Binary, Call, Cast, Compare, Const, Expr, Select, add, cast, const, mul, \
    nontrapping_divisor, row_major


class Unsupported(Exception):
    """This node (or this use of it) has no native lowering yet."""


RULES: dict[str, Callable] = {}
# Ops with several outputs: MULTI_RULES[op](node, k, idx, read) is output k's element.
MULTI_RULES: dict[str, Callable] = {}
FLOATS = ("f32", "f64")
# Kernels load, store and convert these, never compute in them (lower.py checks):
# f16 and bf16 hold weights (mixed precision); x86 converts f16 with F16C, bf16
# by shifting its bits (it is an f32's top half), and computes in f32.
STORAGE_DTYPES = ("f16", "bf16")
WIDENED = ("f16",)  # elementwise ops on it compute in f32 and round to it after each (lower.widen_f16)
ELEMENTWISE_FLOATS = FLOATS + WIDENED  # the float dtypes of elementwise ops
INTS = ("i8", "u8", "i16", "i32", "i64")
NATIVE_DTYPES = FLOATS + STORAGE_DTYPES + INTS + ("bool",)


def rule(*names):
    def deco(fn):
        for n in names:
            RULES[n] = fn
        return fn
    return deco


def clamp_index(i: Expr, size: int, start: int = 0) -> Expr:
    """i clamped into [start, start + size): a read there is provably in bounds
    (for an i known to lie there, or where the value read is discarded)."""
    return Binary("min", Binary("max", i, const(start)), const(start + size - 1))


def in_range(i: Expr, start: int, size: int) -> Expr:
    """Whether start <= i < start + size."""
    return Binary("and", Compare(">=", i, const(start)), Compare("<", i, const(start + size)))


def broadcast_index(idx: list[Expr], in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[Expr]:
    """The input index that NumPy broadcasting reads for output index `idx`."""
    lead = len(out_shape) - len(in_shape)
    return [const(0) if d == 1 and out_shape[lead + a] != 1 else idx[lead + a] for a, d in enumerate(in_shape)]


def unravel(flat: Expr, shape: tuple[int, ...]) -> list[Expr]:
    """The multi-index of a flat row-major offset."""
    out, stride = [], 1
    for d in reversed(shape):
        out.append(Binary("%", Binary("/", flat, const(stride)), const(d)) if d != 1 else const(0))
        stride *= d
    return out[::-1]


def _c(x: float, like: Expr) -> Const:
    return Const(x, like.dtype)


def _float(node) -> str:
    """The float dtype of an elementwise op's output: f32, f64, or f16 (widened)."""
    dt = node.outputs[0].type.dtype
    if dt not in ELEMENTWISE_FLOATS:
        raise Unsupported(f"{node.op} on {dt}")
    return dt


def _inputs(node, idx, read) -> list[Expr]:
    """Every input read at the broadcast of `idx` (for elementwise/broadcast ops)."""
    out_shape = node.outputs[0].type.shape
    return [read(i, broadcast_index(idx, v.type.shape, out_shape)) for i, v in enumerate(node.inputs)]


def _unary(fn):
    """A float unary rule from a function of one expression."""
    def r(node, idx, read):
        _float(node)
        (x,) = _inputs(node, idx, read)
        return fn(x, **node.attrs)
    return r


def _in_f64(fn):
    """Compute in f64, as the reference does, then cast back (keeps accuracy)."""
    def wrapped(x, **attrs):
        return Cast(fn(Cast(x, "f64"), **attrs), x.dtype)
    return wrapped


def _sigmoid(x):
    return Binary("/", _c(1.0, x), Binary("+", _c(1.0, x), Call("exp", (Call("neg", (x,)),))))


def _softplus(x):
    # max(x, 0) + log(1 + exp(-|x|)): no overflow for large |x|
    return Binary("+", Binary("max", x, _c(0.0, x)),
                  Call("log", (Binary("+", _c(1.0, x), Call("exp", (Call("neg", (Call("abs", (x,)),)),))),)))


def _gelu(x, approximate):
    if approximate == "tanh":
        inner = mul(_c(math.sqrt(2 / math.pi), x), add(x, mul(_c(0.044715, x), mul(x, mul(x, x)))))
        t = Call("tanh", (inner,))
    else:
        t = Call("erf", (mul(x, _c(1 / math.sqrt(2), x)),))
    return mul(mul(_c(0.5, x), x), add(_c(1.0, x), t))


def _f32_here(fn):
    """`fn` in f32 arithmetic for f32 (its exp, erf and tanh become loop-IR
    polynomials that vectorize, see mathfns.py); other dtypes compute in f64,
    as the reference does."""
    def wrapped(x, **attrs):
        return fn(x, **attrs) if x.dtype == "f32" else _in_f64(fn)(x, **attrs)
    return wrapped


def _where_neg(x, neg):
    return Select(Compare("<", x, _c(0.0, x)), neg, x)


_FLOAT_UNARY = {
    "Sqrt": lambda x: Call("sqrt", (x,)),
    "Exp": lambda x: Call("exp", (x,)),
    "Log": lambda x: Call("log", (x,)),
    "Erf": lambda x: Call("erf", (x,)),
    "Tanh": lambda x: Call("tanh", (x,)),
    "Sin": lambda x: Call("sin", (x,)),
    "Cos": lambda x: Call("cos", (x,)),
    "Floor": lambda x: Call("floor", (x,)),
    "Ceil": lambda x: Call("ceil", (x,)),
    "Round": lambda x: Call("round", (x,)),
    "Reciprocal": lambda x: Binary("/", _c(1.0, x), x),
    "Sigmoid": _f32_here(_sigmoid),
    "Softplus": _in_f64(_softplus),
    "Gelu": _f32_here(_gelu),
    "LeakyRelu": lambda x, alpha: _where_neg(x, mul(_c(alpha, x), x)),
    "Elu": lambda x, alpha: _where_neg(x, mul(_c(alpha, x), Binary("-", Call("exp", (x,)), _c(1.0, x)))),
    "Selu": lambda x, alpha, gamma: mul(_c(gamma, x), Select(Compare("<=", x, _c(0.0, x)),
                                                            mul(_c(alpha, x), Binary("-", Call("exp", (x,)), _c(1.0, x))), x)),
    "HardSigmoid": lambda x, alpha, beta: Binary("min", Binary("max", add(mul(_c(alpha, x), x), _c(beta, x)), _c(0.0, x)), _c(1.0, x)),
    "HardSwish": lambda x: mul(x, Binary("min", Binary("max", add(Binary("/", x, _c(6.0, x)), _c(0.5, x)), _c(0.0, x)), _c(1.0, x))),
    "Softsign": lambda x: Binary("/", x, add(_c(1.0, x), Call("abs", (x,)))),
}
for _name, _fn in _FLOAT_UNARY.items():
    RULES[_name] = _unary(_fn)


def _numeric_unary(fn):
    def r(node, idx, read):
        if node.outputs[0].type.dtype not in NATIVE_DTYPES or node.outputs[0].type.dtype == "bool":
            raise Unsupported(f"{node.op} on {node.outputs[0].type.dtype}")
        (x,) = _inputs(node, idx, read)
        return fn(x)
    return r


RULES["Neg"] = _numeric_unary(lambda x: Call("neg", (x,)))
RULES["Abs"] = _numeric_unary(lambda x: Call("abs", (x,)))
RULES["Relu"] = _numeric_unary(lambda x: Binary("max", x, _c(0, x)))
RULES["Sign"] = _numeric_unary(lambda x: Select(Compare(">", x, _c(0, x)), _c(1, x),
                                                Select(Compare("<", x, _c(0, x)), _c(-1, x), x)))


@rule("Identity")
def _identity(node, idx, read):
    return read(0, idx)


_ARITH = {"Add": "+", "Sub": "-", "Mul": "*", "Max": "max", "Min": "min", "Sum": "+"}


@rule(*_ARITH)
def _arith(node, idx, read):
    xs = _inputs(node, idx, read)
    out = xs[0]
    for x in xs[1:]:
        out = Binary(_ARITH[node.op], out, x)
    return out


@rule("Mean")
def _mean(node, idx, read):
    _float(node)
    xs = _inputs(node, idx, read)
    out = xs[0]
    for x in xs[1:]:
        out = add(out, x)
    return Binary("/", out, _c(float(len(xs)), out))


@rule("Div")
def _div(node, idx, read):
    a, b = _inputs(node, idx, read)
    if node.outputs[0].type.dtype in ELEMENTWISE_FLOATS:
        return Binary("/", a, b)
    return _int_division(node, "/", a, b, Binary("-", _c(0, a), a))


@rule("Mod")
def _mod(node, idx, read):
    a, b = _inputs(node, idx, read)
    op = "%" if node.attrs["fmod"] else "mod"
    if node.outputs[0].type.dtype in ELEMENTWISE_FLOATS:
        return Binary(op, a, b)
    return _int_division(node, op, a, b, _c(0, a))


def _int_division(node, op: str, a: Expr, b: Expr, by_minus_one: Expr) -> Expr:
    """a op b on integers, with no division that traps (`nontrapping_divisor`):
    a zero divisor gives 0 (what NumPy gives; ONNX leaves it undefined), a
    divisor of -1 `by_minus_one` (the wrapped negation, or remainder 0)."""
    dt = node.outputs[0].type.dtype
    if dt not in INTS:
        raise Unsupported(f"{node.op} on {dt}")
    value = Binary(op, a, nontrapping_divisor(b))
    if LOWEST[dt] < 0:
        value = Select(Compare("==", b, _c(-1, b)), by_minus_one, value)
    return Select(Compare("==", b, _c(0, b)), _c(0, a), value)


@rule("Pow")
def _pow(node, idx, read):
    """x ** y computed in f64 and converted to x's dtype, as minidlc's reference
    does: an integer power is exact while it stays below 2^53 (ONNX's own
    reference, NumPy's integer power, is exact and wraps around beyond its
    dtype's range, where the f64 power converts as Cast does: it saturates,
    and NumPy's cast in minidlc's reference is undefined)."""
    dt = node.outputs[0].type.dtype
    if dt not in ELEMENTWISE_FLOATS + INTS:
        raise Unsupported(f"Pow on {dt}")
    a, b = _inputs(node, idx, read)
    if node.inputs[1].type.dtype not in NATIVE_DTYPES or node.inputs[1].type.dtype == "bool":
        raise Unsupported(f"Pow exponent of dtype {node.inputs[1].type.dtype}")
    return _from_f64(Call("pow", (_to_f64(a), _to_f64(b))), dt)


@rule("PRelu")
def _prelu(node, idx, read):
    _float(node)
    x, slope = _inputs(node, idx, read)
    return _where_neg(x, mul(slope, x))


@rule("Shrink")
def _shrink(node, idx, read):
    _float(node)
    (x,) = _inputs(node, idx, read)
    bias, lambd = _c(node.attrs["bias"], x), _c(node.attrs["lambd"], x)
    return Select(Compare("<", x, Call("neg", (lambd,))), add(x, bias),
                  Select(Compare(">", x, lambd), Binary("-", x, bias), _c(0.0, x)))


@rule("Clip")
def _clip(node, idx, read):
    if node.outputs[0].type.dtype not in NATIVE_DTYPES:
        raise Unsupported(f"Clip on {node.outputs[0].type.dtype}")
    x = read(0, idx)
    for i, op in ((1, "max"), (2, "min")):
        if len(node.inputs) > i and node.inputs[i] is not None:
            x = Binary(op, x, read(i, [const(0)] * node.inputs[i].type.rank))
    return x


_CMP = {"Equal": "==", "Less": "<", "LessOrEqual": "<=", "Greater": ">", "GreaterOrEqual": ">="}


@rule(*_CMP)
def _compare(node, idx, read):
    a, b = _inputs(node, idx, read)
    return Compare(_CMP[node.op], a, b)


_LOGIC = {"And": "and", "Or": "or", "Xor": "xor"}


@rule(*_LOGIC)
def _logic(node, idx, read):
    a, b = _inputs(node, idx, read)
    return Binary(_LOGIC[node.op], a, b)


@rule("Not")
def _not(node, idx, read):
    return Binary("xor", read(0, idx), Const(True, "bool"))


@rule("Where")
def _where(node, idx, read):
    c, a, b = _inputs(node, idx, read)
    return Select(c, a, b)


@rule("Cast")
def _cast(node, idx, read):
    src, dst = node.inputs[0].type.dtype, node.outputs[0].type.dtype
    if src not in NATIVE_DTYPES or dst not in NATIVE_DTYPES:
        raise Unsupported(f"Cast from {src} to {dst}")
    if src == "f16" and dst != "f32" or dst == "f16" and src in INTS:  # through f32, exactly: an f16 is an f32,
        return Cast(Cast(read(0, idx), "f32"), dst)  # and an integer that f16 does not overflow on is one too
    if src == "f64" and dst == "f16":
        return _from_f64(read(0, idx), dst)
    for storage in STORAGE_DTYPES:
        if storage in (src, dst) and {src, dst} - {storage, "f32"}:
            raise Unsupported(f"Cast from {src} to {dst} ({storage} converts to and from f32 only)")
    return Cast(read(0, idx), dst)


def _to_f64(x: Expr) -> Expr:
    """x as f64, exactly: an f16 through f32 (storage dtypes convert to and from f32 only)."""
    return Cast(cast(x, "f32"), "f64") if x.dtype in STORAGE_DTYPES else cast(x, "f64")


def _from_f64(x: Expr, dt: str) -> Expr:
    """An f64 as `dt`, rounded once: to f16 in f64 (`_round_to_f16_precision`),
    then converted exactly, as f32 holds every f16."""
    if dt == "f16":
        return Cast(Cast(_round_to_f16_precision(x), "f32"), "f16")
    return Cast(x, dt)


def _round_to_f16_precision(x: Expr) -> Expr:
    """An f64 rounded to the nearest f16 value (ties to even), as an f64: from
    65520 on the result is 65536 or more, which the conversion to f16 makes
    inf. Through f32 it would round twice (x just above a tie would round down
    to the tie, then to even). With e = floor(log2 |x|), clamped to [-14, 16]
    (below 2^-14 f16's spacing is a subnormal's, 2^-24; 16 stands for
    anything that overflows), the spacing near x is 2^(e - 10): x scaled by
    2^(10 - e) is rounded to an integer and scaled back, all exact. log2
    comes from log, to within one, and one test of each neighbour makes it
    exact (the loop IR has no variables, so each use of e repeats it)."""
    one = Const(1.0, "f64")
    a = Select(Compare("==", x, x), Call("abs", (x,)), one)  # (a NaN takes any exponent)

    def clamp(e: Expr, lo: int, hi: int) -> Expr:
        return Binary("min", Binary("max", e, Const(float(lo), "f64")), Const(float(hi), "f64"))

    def pow2(e: Expr) -> Expr:
        return Call("ldexp", (one, e))
    log2 = mul(Call("log", (Binary("max", a, Const(2.0 ** -16, "f64")),)), Const(1 / math.log(2), "f64"))  # (no log 0)
    e = clamp(Call("floor", (log2,)), -15, 17)
    e = add(e, Select(Compare(">", pow2(e), a), Const(-1.0, "f64"),
                      Select(Compare("<=", pow2(add(e, one)), a), one, Const(0.0, "f64"))))
    spacing = Binary("-", clamp(e, -14, 16), Const(10.0, "f64"))
    return Call("ldexp", (Call("round", (Call("ldexp", (x, Call("neg", (spacing,)))),)), spacing))


# ---- injective ops: index remapping ----------------------------------------------------
def _same_data(node, idx, read):
    """Reshape-like ops: the same row-major data under another shape."""
    flat = row_major(idx, node.outputs[0].type.shape)
    return read(0, unravel(flat, node.inputs[0].type.shape))


for _name in VIEW_OPS:
    RULES[_name] = _same_data


def view_offset(node) -> int | None:
    """If a standalone node's output is a stretch of its input's memory, the
    element offset where it starts (so it runs as a view and copies nothing);
    else None. Reshape-like ops and Identity start at 0; a Slice qualifies
    when the elements it keeps are contiguous, which we check by slicing the
    input's flat indices (e.g. x[2:5] of a [8, 4] tensor: elements 8..19)."""
    if node.op in VIEW_OPS or node.op == "Identity":
        return 0
    if node.op != "Slice" or node.body is not None:
        return None
    x = node.inputs[0].type
    kept = np.asarray(node.opdef.evaluate([np.arange(x.numel).reshape(x.shape)], node.attrs)[0]).ravel()
    if kept.size and np.array_equal(kept, kept[0] + np.arange(kept.size)):
        return int(kept[0])
    return None


@rule("Gather")
def _gather(node, idx, read):
    """data at the index that `indices` holds, clamped into range so that the
    read stays inside data whatever the index; an index out of range is
    reported by the kernel's check (gather.py)."""
    data, indices = node.inputs
    axis, q = node.attrs["axis"] % data.type.rank, indices.type.rank
    n = data.type.shape[axis]
    if n == 0:
        raise Unsupported("Gather from an empty axis")
    i = cast(read(1, idx[axis:axis + q]), INDEX)
    at = clamp_index(Select(Compare("<", i, const(0)), add(i, const(n)), i), n)  # negative: from the back
    return read(0, idx[:axis] + [at] + idx[axis + q:])


@rule("Expand")
def _expand(node, idx, read):
    return read(0, broadcast_index(idx, node.inputs[0].type.shape, node.outputs[0].type.shape))


@rule("Tile")
def _tile(node, idx, read):
    """Each output element repeats the input element at its index modulo the input's shape."""
    shape = node.inputs[0].type.shape
    return read(0, [i if node.outputs[0].type.shape[a] == d else Binary("%", i, const(d))
                    for a, (i, d) in enumerate(zip(idx, shape))])


@rule("Pad")
def _pad(node, idx, read):
    """Each output element reads the input at its position less the padding
    before it (negative pads crop), mapped back inside along each axis by the
    mode (edge: clamped, wrap: modulo, reflect: mirrored without repeating
    the border); in constant mode a position outside reads the value instead."""
    x, a = node.inputs[0].type, node.attrs
    rank, mode = x.rank, a["mode"]
    src, inside = [], None
    for axis, (i, d, b, e) in enumerate(zip(idx, x.shape, a["pads"][:rank], a["pads"][rank:])):
        lo, length = max(0, -b), d - max(0, -b) - max(0, -e)  # the kept (cropped) part of the axis
        q = Binary("-", i, const(max(0, b)))  # the position in that part
        if mode == "constant" and length < x.shape[axis] + max(0, b) + max(0, e):
            here = in_range(q, 0, length)
            inside = here if inside is None else Binary("and", inside, here)
        if mode == "wrap" and length > 0:
            q = Binary("mod", q, const(length))
        elif mode == "reflect" and length > 1:
            r = Binary("mod", q, const(2 * (length - 1)))
            q = Select(Compare("<", r, const(length)), r, Binary("-", const(2 * (length - 1)), r))
        # (a no-op once mapped, and the clamp of edge mode): reads are provably in bounds
        src.append(add(const(lo), clamp_index(q, max(length, 1))))
    value = read(0, src)
    if inside is None:
        return value
    fill = Const(bool(a["value"]) if x.dtype == "bool" else a["value"] if x.dtype in FLOATS else int(a["value"]),
                 x.dtype)
    return Select(inside, value, fill)


@rule("LRN")
def _lrn(node, idx, read):
    """x / (bias + alpha / size * (sum of x^2 over the channel window)) ^ beta,
    the window's `size` terms written out (channels past either end add 0)."""
    a, channels = node.attrs, node.inputs[0].type.shape[1]
    x = read(0, idx)
    total = None
    for offset in range(-((a["size"] - 1) // 2), a["size"] // 2 + 1):
        c = add(idx[1], const(offset))
        xc = read(0, [idx[0], clamp_index(c, channels)] + list(idx[2:]))
        term = Select(in_range(c, 0, channels), mul(xc, xc), _c(0.0, x))
        total = term if total is None else add(total, term)
    denom = add(_c(a["bias"], x), mul(_c(a["alpha"] / a["size"], x), total))
    return Binary("/", x, Call("pow", (denom, _c(a["beta"], x))))


@rule("Transpose")
def _transpose(node, idx, read):
    rank = len(idx)
    perm = node.attrs.get("perm") or list(range(rank))[::-1]
    src: list[Expr] = [const(0)] * rank
    for k, p in enumerate(perm):
        src[p] = idx[k]
    return read(0, src)


@rule("Slice")
def _slice(node, idx, read):
    a = node.attrs
    ranges = slice_ranges(node.inputs[0].type.shape, a["starts"], a["ends"], a["axes"], a["steps"])
    src = [add(const(start), mul(const(step), i)) if count else i for i, (start, step, count) in zip(idx, ranges)]
    return read(0, src)


@rule("Trilu")
def _trilu(node, idx, read):
    """Keep x where column - row >= k (upper) or <= k (lower), else zero."""
    diagonal = Binary("-", idx[-1], idx[-2])
    keep = Compare(">=" if node.attrs["upper"] else "<=", diagonal, const(node.attrs["k"]))
    x = read(0, idx)
    zero = 0.0 if x.dtype in FLOATS else False if x.dtype == "bool" else 0
    return Select(keep, x, Const(zero, x.dtype))


@rule("Concat")
def _concat(node, idx, read):
    axis = node.attrs["axis"] % len(idx)
    offsets, off = [], 0
    for v in node.inputs:
        offsets.append(off)
        off += v.type.shape[axis]
    out = None
    for i in reversed(range(len(node.inputs))):
        if node.inputs[i].type.shape[axis] == 0:
            continue
        src = list(idx)
        # the clamp keeps the index in bounds in the branch not taken
        src[axis] = Binary("max", Binary("min", Binary("-", idx[axis], const(offsets[i])), const(node.inputs[i].type.shape[axis] - 1)), const(0))
        value = read(i, src)
        out = value if out is None else Select(Compare("<", idx[axis], const(offsets[i] + node.inputs[i].type.shape[axis])), value, out)
    if out is None:
        raise Unsupported("Concat of empty inputs")
    return out


def _split(node, k, idx, read):
    axis = node.attrs["axis"] % len(idx)
    src = list(idx)
    src[axis] = add(idx[axis], const(sum(node.attrs["split"][:k])))
    return read(0, src)


MULTI_RULES["Split"] = _split
# inference-mode Dropout (type inference refuses training mode): the identity, and a mask of all true
MULTI_RULES["Dropout"] = lambda node, k, idx, read: read(0, idx) if k == 0 else Const(True, "bool")


@rule("BatchNormalization")
def _batchnorm(node, idx, read):
    """(x - mean) / sqrt(var + eps) * scale + B, per channel (axis 1); params may have another float dtype."""
    dt = _float(node)
    if any(v.type.dtype not in FLOATS for v in node.inputs):
        raise Unsupported("BatchNormalization parameters of a non-native dtype")
    x = read(0, idx)
    scale, bias, mean, var = (Cast(read(i, [idx[1]]), dt) for i in range(1, 5))
    inv = Binary("/", scale, Call("sqrt", (add(var, _c(node.attrs["epsilon"], x)),)))
    return add(mul(Binary("-", x, mean), inv), bias)


# ---- quantization ------------------------------------------------------------------------
def _scale_reader(node, idx, read):
    """read(i) of scale (i=1) or zero point (i=2) at the element that applies to `idx`,
    as f32 (ONNX computes QuantizeLinear and DequantizeLinear in the scale's precision)."""
    from ..ir.ops.quant import scale_axis, scale_index

    x_shape, s_shape = node.inputs[0].type.shape, node.inputs[1].type.shape
    block = node.attrs["block_size"]
    axis = scale_axis(x_shape, s_shape, node.attrs["axis"], block, "scale")
    at = scale_index(list(idx), s_shape, axis, block, lambda i, n: Binary("/", i, const(n)), const(0))
    return lambda i: cast(read(i, at), "f32")


@rule("QuantizeLinear")
def _quantize_linear(node, idx, read):
    scaled = _scale_reader(node, idx, read)
    q = Call("round", (Binary("/", cast(read(0, idx), "f32"), scaled(1)),))
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        q = add(q, scaled(2))
    return Cast(q, node.attrs["dtype"])  # the cast saturates to the integer range (and NaN to 0)


@rule("DequantizeLinear")
def _dequantize_linear(node, idx, read):
    if node.outputs[0].type.dtype not in FLOATS:
        raise Unsupported(f"DequantizeLinear to {node.outputs[0].type.dtype}")
    scaled = _scale_reader(node, idx, read)
    x = cast(read(0, idx), "f32")
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        x = Binary("-", x, scaled(2))
    y = mul(x, scaled(1))
    return y if node.outputs[0].type.dtype == "f32" else Cast(y, node.outputs[0].type.dtype)
