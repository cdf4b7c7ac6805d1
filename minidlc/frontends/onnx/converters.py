"""The converter registry of the ONNX frontend, and the context converters use.

A converter takes a `Ctx` (one ONNX node, its opset, its input Values) and
returns the node's output Values, built with `ctx.add(...)`. Most ONNX ops
need only `same_op`: the same op name, attributes copied. The family modules
(`elementwise.py`, `nn.py`, `reduce.py`, `shape.py`) register the rest with
`@converter("OpName")`; `min_opset` is the oldest version of the op (its
schema's since_version) whose semantics the converter handles.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper

from ...ir import Graph, IRError, Value
from ...ir.types import DTYPES

# ONNX TensorProto data type enum -> our dtype name
ONNX_DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT16: "f16", onnx.TensorProto.FLOAT: "f32", onnx.TensorProto.DOUBLE: "f64",
    onnx.TensorProto.INT8: "i8", onnx.TensorProto.UINT8: "u8", onnx.TensorProto.INT16: "i16",
    onnx.TensorProto.INT32: "i32", onnx.TensorProto.INT64: "i64", onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.BFLOAT16: "bf16",
}


class ConversionError(IRError):
    """A node cannot be converted (unsupported attribute value, dynamic shape, ...)."""


class StaticValueError(ConversionError):
    """An input that must be known at compile time (a shape, axes, pads) is
    computed at run time. `value` names it, so a caller can bind it."""

    def __init__(self, message: str, value: str):
        super().__init__(message)
        self.value = value


@dataclass
class Converter:
    fn: Callable[["Ctx"], list[Value] | Value]
    min_opset: int = 1
    note: str = ""


CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str, min_opset: int = 1, note: str = ""):
    """Register the decorated function as the converter of `op_types`."""

    def deco(fn):
        for op in op_types:
            CONVERTERS[op] = Converter(fn, min_opset, note)
        return fn

    return deco


def same_op(ctx: "Ctx"):
    """Default conversion: the registry op of the same name, attributes copied."""
    return ctx.add(ctx.op_type, ctx.inputs, ctx.attrs)


def register_same(*op_types: str, min_opset: int = 1):
    for op in op_types:
        CONVERTERS[op] = Converter(same_op, min_opset)


class Ctx:
    """What a converter sees of one ONNX node."""

    def __init__(self, graph: Graph, node: onnx.NodeProto, inputs: list[Value | None], opset: int, loc: str):
        self.graph = graph
        self.node = node
        self.op_type = node.op_type
        self.inputs = inputs
        self.opset = opset
        self.loc = loc
        self.attrs: dict[str, Any] = {a.name: attr_value(a) for a in node.attribute}
        self.attrs.pop("consumed_inputs", None)  # an opset-1 hint for in-place memory reuse, without meaning
        self.outputs = [o for o in node.output]

    def input(self, i: int) -> Value | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def static(self, i: int, what: str | None = None) -> np.ndarray | None:
        """Compile-time value of input i (None if the input is omitted);
        raises if it exists but is only known at run time."""
        v = self.input(i)
        if v is None:
            return None
        a = self.graph.static_value(v)
        if a is None:
            raise StaticValueError(str(self.error(f"{what or f'input {i}'} (%{v.name}) must be known at compile "
                                                  "time; minidlc compiles static shapes")), v.name)
        return a

    def pop(self, name: str, default=None):
        """Take an attribute out of `attrs` (to handle it in the converter)."""
        return self.attrs.pop(name, default)

    def add(self, op: str, inputs, attrs=None, num_outputs: int | None = None) -> list[Value]:
        """Add an IR node for this ONNX node; output names follow the ONNX outputs."""
        n = num_outputs if num_outputs is not None else len([o for o in self.outputs])
        names = [o or f"{self.op_type.lower()}_unused" for o in self.outputs[:n]] or None
        node = self.graph.add(op, inputs, attrs, loc=self.loc, names=names, num_outputs=n)
        return node.outputs

    def add_one(self, op: str, inputs, attrs=None, hint: str | None = None) -> Value:
        """An intermediate IR node (not one of the ONNX node's outputs)."""
        return self.graph.add(op, inputs, attrs, loc=self.loc, names=[hint or op.lower()]).output

    def const(self, array, hint: str = "c") -> Value:
        return self.graph.constant(array, hint, loc=self.loc)

    def error(self, msg: str) -> ConversionError:
        return ConversionError(f"{self.op_type} node '{self.node.name or self.outputs[0]}' "
                               f"(opset {self.opset}): {msg}")


def attr_value(a: onnx.AttributeProto):
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, onnx.TensorProto):
        return onnx.numpy_helper.to_array(v)
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [x.decode() for x in v]
    return v


def dtype_of(onnx_type: int, where: str) -> str:
    if onnx_type not in ONNX_DTYPES:
        name = onnx.TensorProto.DataType.Name(onnx_type) if onnx_type in onnx.TensorProto.DataType.values() else onnx_type
        raise ConversionError(f"{where}: dtype {name} is not supported; supported: {', '.join(DTYPES)}")
    return ONNX_DTYPES[onnx_type]
