"""The converter registry of the PyTorch frontend, and the context converters use.

A converter turns one ATen call of the exported FX graph into graph-IR values.
It is written like the ATen op's schema: the loader passes the call's
arguments with every FX node already replaced by its IR `Value` (a list of
values for list arguments such as `cat`'s), and the converter declares the
schema's defaults itself:

    @converter("aten._softmax.default")
    def softmax(ctx, x, dim, half_to_float=False):
        return ctx.add("Softmax", [x], {"axis": dim})

It returns one Value, or a list of Values for ops with several outputs (which
the FX graph then picks apart with `operator.getitem`).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ...ir import Graph, IRError, Value
from ...ir.types import DTYPES

# torch dtype -> our dtype name
TORCH_DTYPES: dict[torch.dtype, str] = {
    torch.float16: "f16", torch.float32: "f32", torch.float64: "f64", torch.int8: "i8", torch.uint8: "u8",
    torch.int16: "i16", torch.int32: "i32", torch.int64: "i64", torch.bool: "bool",
}


class ConversionError(IRError):
    """A PyTorch op cannot be converted: unsupported op, argument or dtype."""


CONVERTERS: dict[str, Callable[..., Value | list[Value]]] = {}


def converter(*targets: str):
    """Register the decorated function for ATen overloads such as 'aten.add.Tensor'."""

    def deco(fn):
        for t in targets:
            CONVERTERS[t] = fn
        return fn

    return deco


def dtype_of(dtype: torch.dtype, where: str) -> str:
    if dtype not in TORCH_DTYPES:
        raise ConversionError(f"{where}: dtype {dtype} is not supported; supported: {', '.join(DTYPES)}")
    return TORCH_DTYPES[dtype]


class Ctx:
    """What a converter sees of one FX node: the graph to add to, where the
    call is in the model's source, and the type PyTorch computed for it."""

    def __init__(self, graph: Graph, node: torch.fx.Node, loc: str | None, name: str):
        self.graph = graph
        self.node = node
        self.loc = loc
        self.name = name  # what the node's result is called in the IR

    @property
    def op_name(self) -> str:
        return str(self.node.target)

    @property
    def out_dtype(self) -> str:
        """Our dtype of the (first) result, as PyTorch's type promotion decided it."""
        val = self.node.meta["val"]
        val = val[0] if isinstance(val, (list, tuple)) else val
        return dtype_of(val.dtype, self.where)

    def promoted_dtype(self) -> str:
        """The dtype PyTorch computes a binary op in (comparisons return bool,
        so their operands' common dtype is not the result's)."""
        a, b = (x.meta["val"] if isinstance(x, torch.fx.Node) else x for x in self.node.args[:2])
        return dtype_of(torch.result_type(a, b), self.where)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.node.meta["val"].shape)

    @property
    def where(self) -> str:
        return f"{self.op_name} ({self.loc or 'unknown source line'})"

    def error(self, msg: str) -> ConversionError:
        return ConversionError(f"{self.where}: {msg}")

    def add(self, op: str, inputs, attrs: dict[str, Any] | None = None, hint: str | None = None) -> Value:
        """Add an IR node and return its first output (ops such as MaxPool
        have optional outputs PyTorch does not ask for)."""
        return self.add_outputs(op, inputs, attrs, 1, hint)[0]

    def add_outputs(self, op: str, inputs, attrs: dict[str, Any] | None, n: int,
                    hint: str | None = None) -> list[Value]:
        """Add an IR node and return its first `n` outputs, named after the FX
        node, or `name.hint` for a helper node."""
        name = f"{self.name}.{hint}" if hint else self.name
        node = self.graph.add(op, inputs, attrs, loc=self.loc, names=[name] * n, num_outputs=n)
        return node.outputs

    def const(self, array, dtype: str | None = None, hint: str = "c") -> Value:
        """A Constant node; Python scalars and lists become arrays of `dtype`."""
        return self.graph.constant(np.asarray(array, DTYPES[dtype] if dtype else None), hint, loc=self.loc)

    def operand(self, x, dtype: str) -> Value:
        """A tensor operand of `dtype`: a Value (cast if PyTorch promoted it)
        or a Python scalar (a scalar Constant of that dtype)."""
        if isinstance(x, Value):
            return x if x.type.dtype == dtype else self.add("Cast", [x], {"to": dtype}, hint="cast")
        if isinstance(x, (bool, int, float)):
            return self.const(x, dtype, hint="scalar")
        raise self.error(f"expected a tensor or a number, got {type(x).__name__} {x!r}")
