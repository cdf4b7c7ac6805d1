"""Ops that are not computations: constants and fused groups."""
from __future__ import annotations

from ..registry import Attr, Kind, fail, register
from ..types import TensorType


def _fused_infer(*args, body, name):
    if len(args) != len(body.inputs):
        fail(f"fused group takes {len(body.inputs)} inputs, got {len(args)}")
    for a, p in zip(args, body.inputs):
        if a.type != p.type:
            fail(f"fused group parameter %{p.name} is {p.type}, its argument is {a.type}")
    return [v.type for v in body.outputs]


def _fused_impl(*args, body, name):
    from ..interpreter import interpret

    return interpret(body, args)


register("Constant", Kind.OPAQUE, lambda value: TensorType.of(value), lambda value: value,
         attrs={"value": Attr("tensor")}, inputs=(0, 0), doc="a compile-time tensor (weights)")
register("Fused", Kind.OPAQUE, _fused_infer, _fused_impl, inputs=(0, None),
         attrs={"body": Attr("graph"), "name": Attr("str", "fused")},
         doc="a fused group: its `body` sub-graph runs as one kernel")
