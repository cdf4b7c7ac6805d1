"""Algebraic simplification: peephole rules that remove or cheapen ops.

Every rule is data (see rewrite.py): a pattern, a check that says why it does
not apply, and a rewrite. Rules only fire when the result is exactly the same
tensor (bit for bit, except that x+0 turns -0.0 into +0.0), with the same
type: `x + 0` where the zero broadcasts `x` to a bigger shape stays.

    identity, dropout          Identity(x), inference Dropout(x)        -> x
    mul-one, add-zero, ...     x*1, x+0, x-0, x/1                        -> x
    sub-const                  x - c  -> x + (-c)                 (floats: negation is exact)
    div-const                  x / c  -> x * (1/c)         (c a power of two: 1/c is exact)
    <view>-<view>              Reshape/Squeeze/Unsqueeze/Flatten chains  -> one Reshape, or x
    <view>-noop                a view op that keeps the type             -> x
    transpose-transpose        Transpose(Transpose(x)) -> one Transpose, or x
    cast-same, cast-cast       Cast to the same dtype -> x; Cast(Cast(x)) -> one Cast
                               when the first cast loses nothing
"""
from __future__ import annotations

import itertools

import numpy as np

from ..ir import Graph
from ..ir.ops.shape import VIEW_OPS
from ..ir.types import DTYPES, FLOAT_DTYPES
from .manager import register_pass
from .rewrite import Const, Match, Pat, RewritePass, Rule, all_of, same_type



def _keep_x(graph: Graph, m: Match):
    return m["x"]


def _neutral(op: str, rule: str, x: float) -> Rule:
    return Rule(rule, Pat(op, ("x", Const("c", x))), _keep_x, same_type("x"))


def _float(name: str):
    def check(graph: Graph, m: Match) -> str | None:
        return None if m[name].type.dtype in FLOAT_DTYPES else f"%{m[name].name} is not a float tensor"

    return check


def _sub_to_add(graph: Graph, m: Match):
    return m.add("Add", [m["x"], m.constant(-m.const("c"), "neg")])


def _exact_reciprocal(graph: Graph, m: Match) -> str | None:
    c = m.const("c")
    with np.errstate(all="ignore"):
        r = np.reciprocal(c)
    mantissa, _ = np.frexp(c)
    ok = np.all(np.abs(mantissa) == 0.5) and np.all(np.isfinite(r)) and np.all(r * c == 1)
    return None if ok else "1/c is not exact (c is not a power of two)"


def _div_to_mul(graph: Graph, m: Match):
    return m.add("Mul", [m["x"], m.constant(np.reciprocal(m.const("c")), "recip")])


def _view_noop(op: str) -> Rule:
    return Rule(f"{op.lower()}-noop", Pat(op, ("x", "...")), _keep_x, same_type("x"), quiet=True)


def _reshape_to_root(graph: Graph, m: Match):
    t = m.root.outputs[0].type
    if t == m["x"].type:
        return m["x"]
    return m.add("Reshape", [m["x"], m.constant(np.array(t.shape, np.int64), "shape")])


def _has_elements(graph: Graph, m: Match) -> str | None:
    # Reshape's shape 0 means "copy this dimension", so empty tensors keep their chain
    return None if m.root.outputs[0].type.numel else "the tensor is empty"


def _view_chain(inner: str, outer: str) -> Rule:
    return Rule(f"{inner.lower()}-{outer.lower()}", Pat(outer, (Pat(inner, ("x", "...")), "...")),
                _reshape_to_root, _has_elements)


def _perm(node) -> list[int]:
    perm = node.attrs.get("perm")
    return list(perm) if perm else list(range(node.inputs[0].type.rank))[::-1]


def _transpose_pair(graph: Graph, m: Match):
    inner, outer = _perm(m.nodes["inner"]), _perm(m.root)
    composed = [inner[i] for i in outer]
    if composed == sorted(composed):
        return m["x"]
    return m.add("Transpose", [m["x"]], {"perm": composed})


def _identity_perm(graph: Graph, m: Match) -> str | None:
    return None if _perm(m.root) == sorted(_perm(m.root)) else "the permutation is not the identity"


def lossless_cast(src: str, dst: str) -> bool:
    """True when every value of dtype `src` is exactly representable in `dst`."""
    if src == dst or src == "bool":
        return True
    a, b = np.dtype(DTYPES[src]), np.dtype(DTYPES[dst])
    if b.kind == "b":
        return False
    if a.kind == "f":
        return b.kind == "f" and b.itemsize >= a.itemsize
    if b.kind == "f":  # an integer fits if its range fits in the float's significand
        return np.iinfo(a).bits - (a.kind == "i") <= np.finfo(b).nmant + 1
    return np.can_cast(a, b, casting="safe")


def _first_cast_exact(graph: Graph, m: Match) -> str | None:
    src, mid = m["x"].type.dtype, m.nodes["inner"].attrs["to"]
    return None if lossless_cast(src, mid) else f"casting {src} to {mid} loses information"


def _cast_pair(graph: Graph, m: Match):
    return m.add("Cast", [m["x"]], {"to": m.root.attrs["to"]})


RULES: list[Rule] = [
    Rule("identity", Pat("Identity", ("x",)), _keep_x),
    Rule("dropout", Pat("Dropout", ("x", "...")), _keep_x),
    _neutral("Mul", "mul-one", 1),
    _neutral("Add", "add-zero", 0),
    _neutral("Sub", "sub-zero", 0),
    _neutral("Div", "div-one", 1),
    Rule("sub-const", Pat("Sub", ("x", Const("c"))), _sub_to_add, _float("x")),
    Rule("div-const", Pat("Div", ("x", Const("c"))), _div_to_mul, all_of(_float("x"), _exact_reciprocal)),
    *[_view_noop(op) for op in VIEW_OPS],
    *[_view_chain(inner, outer) for inner, outer in itertools.product(VIEW_OPS, VIEW_OPS)],
    Rule("transpose-noop", Pat("Transpose", ("x",)), _keep_x, _identity_perm, quiet=True),
    Rule("transpose-transpose", Pat("Transpose", (Pat("Transpose", ("x",), name="inner"),)), _transpose_pair),
    Rule("cast-same", Pat("Cast", ("x",)), _keep_x, same_type("x"), quiet=True),
    Rule("cast-cast", Pat("Cast", (Pat("Cast", ("x",), name="inner"),)), _cast_pair, _first_cast_exact),
]


@register_pass
class Simplify(RewritePass):
    name = "simplify"
    rules = RULES
