"""The op registry: every op is declared once, here-shaped, in `minidlc/ir/ops/`.

A declaration (`OpDef`) says everything the compiler needs to know about an op:

* its attributes, with defaults and a check (`Attr`);
* type inference: output types from input types (and, for shape-like inputs
  such as Reshape's target shape, their values when known at compile time);
* a NumPy reference implementation, which the reference backend runs and
  constant folding evaluates;
* its fusion kind, which drives operator fusion (see `passes/fuse.py`).

Op names and semantics follow ONNX (latest opset), so a student who knows
ONNX can read the IR. The frontends normalize older opsets into this form.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any, Callable

import numpy as np

from .types import TensorType


class IRError(Exception):
    """A graph is malformed, or an op is used with bad inputs or attributes."""


class Kind(str, Enum):
    """Fusion kinds, after TVM's OpPatternKind."""

    ELEMENTWISE = "elementwise"  # out[i] = f(in[i]), same shapes
    BROADCAST = "broadcast"      # elementwise with numpy broadcasting
    INJECTIVE = "injective"      # each output element reads one input element (reshape, transpose, slice)
    REDUCTION = "reduction"      # reduces axes (sum, mean, softmax, layernorm)
    OUT_FUSABLE = "out-fusable"  # heavy op whose output can take an elementwise epilogue (conv, matmul)
    OPAQUE = "opaque"            # anything else: never fused


REQUIRED = object()


@dataclass(frozen=True)
class Attr:
    """An attribute's declaration: its type name, default and optional check.

    type is one of int, float, str, ints, floats, tensor, dtype.
    `check(value)` returns an error message, or None when the value is fine.
    """

    type: str
    default: Any = REQUIRED
    check: Callable[[Any], str | None] | None = None
    choices: tuple | None = None


_COERCE = {
    "int": int,
    "float": float,
    "str": str,
    "ints": lambda v: [int(x) for x in v],
    "floats": lambda v: [float(x) for x in v],
    "tensor": np.asarray,
    "dtype": str,
    "graph": lambda g: g,
}


class Operand:
    """What type inference sees of one input: its type, and its value if known.

    The value is computed lazily (`Graph.static_value`), so only ops that need
    a value (Reshape's shape, Slice's starts) pay for it.
    """

    def __init__(self, type: TensorType, value_fn: Callable[[], np.ndarray | None] = lambda: None):
        self.type = type
        self._value_fn = value_fn

    @cached_property
    def value(self) -> np.ndarray | None:
        return self._value_fn()

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def rank(self) -> int:
        return self.type.rank


@dataclass
class OpDef:
    name: str
    kind: Kind
    infer: Callable[..., TensorType | list[TensorType]]
    impl: Callable[..., Any]
    attrs: dict[str, Attr] = field(default_factory=dict)
    inputs: tuple[int, int | None] = (1, 1)  # (min, max); max None = variadic
    doc: str = ""

    def check_attrs(self, attrs: dict[str, Any], where: str) -> dict[str, Any]:
        """Validate and complete `attrs`: unknown names, missing required ones,
        wrong types and failed checks raise IRError naming `where`."""
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise IRError(f"{where}: unknown attribute(s) {sorted(unknown)} for {self.name}; "
                          f"it takes {sorted(self.attrs) or 'none'}")
        out = {}
        for name, spec in self.attrs.items():
            if name in attrs and attrs[name] is not None:
                try:
                    value = _COERCE[spec.type](attrs[name])
                except (TypeError, ValueError) as e:
                    raise IRError(f"{where}: attribute {name}={attrs[name]!r} is not a valid {spec.type}: {e}") from None
            elif spec.default is REQUIRED:
                raise IRError(f"{where}: {self.name} needs attribute {name!r}")
            else:
                value = copy.deepcopy(spec.default)  # each node its own list/array, never the shared default
            if spec.choices is not None and value not in spec.choices:
                raise IRError(f"{where}: {self.name} attribute {name}={value!r} is not supported; "
                              f"supported: {list(spec.choices)}")
            if spec.check is not None and value is not None:
                msg = spec.check(value)
                if msg:
                    raise IRError(f"{where}: {self.name} attribute {name}={value!r}: {msg}")
            out[name] = value
        return out

    def infer_types(self, operands: list[Operand | None], attrs: dict, where: str) -> list[TensorType]:
        lo, hi = self.inputs
        n = len(operands)
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {hi if hi is not None else 'any number of'}"
            raise IRError(f"{where}: {self.name} takes {want} inputs, got {n}")
        try:
            out = self.infer(*operands, **attrs)
        except IRError as e:
            raise IRError(f"{where}: {e}") from None
        except (ValueError, TypeError, IndexError, KeyError, AssertionError) as e:
            raise IRError(f"{where}: {self.name} type inference failed: {e}") from None
        return [out] if isinstance(out, TensorType) else list(out)

    def evaluate(self, arrays: list[np.ndarray | None], attrs: dict) -> list[np.ndarray]:
        out = self.impl(*arrays, **attrs)
        return list(out) if isinstance(out, (tuple, list)) else [out]


OPS: dict[str, OpDef] = {}


def register(name: str, kind: Kind, infer, impl, *, attrs=None, inputs=(1, 1), doc: str = "") -> OpDef:
    """Declare an op. Each op is registered exactly once."""
    if name in OPS:
        raise ValueError(f"op {name} registered twice")
    OPS[name] = OpDef(name, kind, infer, impl, attrs or {}, inputs, doc)
    return OPS[name]


def get_op(name: str) -> OpDef:
    from . import ops  # noqa: F401  (populates OPS on first use)

    if name not in OPS:
        raise IRError(f"unknown op {name!r}")
    return OPS[name]


def fail(msg: str):
    """Raise a type-inference error (used inside infer functions)."""
    raise IRError(msg)
