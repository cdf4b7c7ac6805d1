"""Read an ONNX model and convert it to the graph IR (see the package docstring)."""
from __future__ import annotations

import os
from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from ...ir import Graph, IRError, TensorType
from . import elementwise, nn, quant, reduce, shape  # noqa: F401  (register converters)
from .converters import CONVERTERS, ConversionError, Ctx, dtype_of

SUPPORTED_DOMAINS = ("", "ai.onnx")


class ModelLoadError(IRError):
    """The model file is missing, unreadable or malformed, or its inputs cannot be bound."""


class UnsupportedOpError(IRError):
    """The model uses ops we do not support; the message holds the full op table."""

    def __init__(self, message: str, table: list[dict]):
        super().__init__(message)
        self.table = table


def read_model(model) -> onnx.ModelProto:
    """A ModelProto from a path or a ModelProto, with clear errors for bad files."""
    if isinstance(model, onnx.ModelProto):
        return model
    path = os.fspath(model)
    if not os.path.exists(path):
        raise ModelLoadError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise ModelLoadError(f"{path} is a directory, not an ONNX model file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelLoadError(f"cannot read model file {path}: {e.strerror}") from None
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as e:
        raise ModelLoadError(f"{path} is not a valid ONNX model (protobuf parse failed: {e})") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"{path} is not a valid ONNX model (it has no graph)")
    return proto


def opset_of(proto: onnx.ModelProto) -> int:
    for imp in proto.opset_import:
        if imp.domain in SUPPORTED_DOMAINS:
            return imp.version
    return 1 if not proto.opset_import else 0


def op_support_table(model) -> list[dict]:
    """One row per (domain, op type): opset, node count, supported?, and why not."""
    proto = read_model(model)
    opset = opset_of(proto)
    newest = onnx.defs.onnx_opset_version()
    counts = Counter((n.domain, n.op_type) for n in proto.graph.node)
    rows = []
    for (domain, op), count in sorted(counts.items()):
        conv = CONVERTERS.get(op) if domain in SUPPORTED_DOMAINS else None
        if domain not in SUPPORTED_DOMAINS:
            status = f"missing: domain {domain!r} is not supported (only the default ONNX domain)"
        elif conv is None:
            status = "missing: no converter for this op"
        elif opset > newest:
            status = f"missing: opset {opset} is newer than the installed onnx package knows ({newest})"
        elif _since_version(op, opset) < conv.min_opset:
            status = (f"missing: the version of {op} in opset {opset} (since opset {_since_version(op, opset)}) "
                      f"is not supported; supported from opset {conv.min_opset}")
        else:
            status = "supported" + (f" ({conv.note})" if conv.note else "")
        rows.append({"op": op, "domain": domain or "ai.onnx", "opset": opset, "count": count, "status": status})
    return rows


def _since_version(op: str, opset: int) -> int:
    """The opset that introduced the version of `op` in force at `opset`."""
    try:
        return onnx.defs.get_schema(op, opset).since_version
    except onnx.defs.SchemaError:
        return opset


def format_table(rows: list[dict]) -> str:
    head = f"{'op':<24} {'domain':<10} {'opset':>5} {'nodes':>5}  status"
    return "\n".join([head] + [f"{r['op']:<24} {r['domain']:<10} {r['opset']:>5} {r['count']:>5}  {r['status']}"
                               for r in rows])


def _input_type(vi: onnx.ValueInfoProto, bound: dict) -> TensorType:
    where = f"graph input '{vi.name}'"
    if not vi.type.HasField("tensor_type"):
        raise ModelLoadError(f"{where} is not a tensor; only tensor inputs are supported")
    tt = vi.type.tensor_type
    dtype = dtype_of(tt.elem_type, where)
    if vi.name in bound:
        shape = tuple(int(d) for d in bound[vi.name])
        if tt.HasField("shape"):
            dims = tt.shape.dim
            if len(dims) != len(shape) or any(d.HasField("dim_value") and d.dim_value != s
                                               for d, s in zip(dims, shape)):
                declared = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
                raise ModelLoadError(f"{where}: bound shape {list(shape)} does not match the declared shape {declared}")
        return TensorType(shape, dtype)
    if not tt.HasField("shape"):
        raise ModelLoadError(f"{where} has no shape; bind one with input_shapes={{'{vi.name}': (...)}} "
                             f"or --input-shape {vi.name}=D0,D1,...")
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value"):
            example = ",".join(str(x.dim_value) if x.HasField("dim_value") else "1" for x in tt.shape.dim)
            raise ModelLoadError(f"{where} has a dynamic dimension '{d.dim_param or '?'}'; minidlc compiles "
                                 f"static shapes: bind it with input_shapes={{'{vi.name}': ({example.replace(',', ', ')})}} "
                                 f"or --input-shape {vi.name}={example}")
        dims.append(d.dim_value)
    return TensorType(tuple(dims), dtype)


def load_onnx(model, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Graph:
    """Convert an ONNX model (path or ModelProto) into a typed Graph."""
    proto = read_model(model)
    bound = dict(input_shapes or {})
    rows = op_support_table(proto)
    missing = [r for r in rows if not r["status"].startswith("supported")]
    if missing:
        names = ", ".join(f"{r['op']} ({r['count']} node{'s' if r['count'] > 1 else ''}; "
                          f"{r['status'].removeprefix('missing: ')})" for r in missing)
        raise UnsupportedOpError(f"model uses {len(missing)} unsupported op type(s): {names}\n"
                                 + format_table(rows) + f"\nsupported ops: {', '.join(sorted(CONVERTERS))}", rows)
    opset = opset_of(proto)
    g = Graph(_ident(proto.graph.name) or "main")
    env: dict[str, object] = {}
    defined: dict[str, str] = {}  # value name -> what defines it, for the error on a second definition

    def define(name: str, by: str) -> None:
        if name in defined:
            raise ModelLoadError(f"value {name!r} is defined twice: by {by} and by {defined[name]} "
                                 "(an ONNX graph defines each value once)")
        defined[name] = by

    inits = {}
    for t in proto.graph.initializer:
        define(t.name, f"initializer '{t.name}'")
        inits[t.name] = t
    for vi in proto.graph.input:
        if vi.name in inits:  # old-style models list initializers as inputs too: they must agree
            _check_initializer_matches_input(inits[vi.name], vi)
            continue
        define(vi.name, f"graph input '{vi.name}'")
        env[vi.name] = g.add_input(vi.name, _input_type(vi, bound))
    unknown = set(bound) - {vi.name for vi in proto.graph.input}
    if unknown:
        raise ModelLoadError(f"input_shapes names {sorted(unknown)}, which are not graph inputs; "
                             f"inputs: {[v.name for v in g.inputs]}")
    for name, t in inits.items():
        try:
            arr = numpy_helper.to_array(t)
        except Exception as e:
            raise ModelLoadError(f"initializer '{name}' cannot be read: {e}") from None
        dtype_of(t.data_type, f"initializer '{name}'")
        env[name] = g.constant(np.asarray(arr, order="C"), name)  # ascontiguousarray makes 0-d 1-d
    for i, node in enumerate(proto.graph.node):
        loc = node.name or f"{node.op_type}_{i}"
        try:
            ins = [env[n] if n else None for n in node.input]
        except KeyError as e:
            raise ModelLoadError(f"{node.op_type} node '{loc}' reads {e.args[0]!r}, which no earlier node "
                                 "or input defines (is the model topologically sorted?)") from None
        while ins and ins[-1] is None:
            ins.pop()
        ctx = Ctx(g, node, ins, opset, loc)
        try:
            outs = CONVERTERS[node.op_type].fn(ctx)
        except ConversionError:
            raise
        except IRError as e:
            raise ConversionError(f"{node.op_type} node '{loc}' (opset {opset}): {e}") from None
        outs = [outs] if not isinstance(outs, (list, tuple)) else outs
        for name, v in zip(node.output, outs):
            if name:
                define(name, f"{node.op_type} node '{loc}'")
                env[name] = v
    try:
        g.outputs = [env[o.name] for o in proto.graph.output]
    except KeyError as e:
        raise ModelLoadError(f"graph output {e.args[0]!r} is not produced by any node") from None
    return g


def _check_initializer_matches_input(t: onnx.TensorProto, vi: onnx.ValueInfoProto) -> None:
    """An initializer listed as a graph input too (old models) must have the input's dtype and shape."""
    if not vi.type.HasField("tensor_type"):
        raise ModelLoadError(f"graph input '{vi.name}' has an initializer but is not a tensor")
    tt = vi.type.tensor_type
    if tt.elem_type != t.data_type:
        raise ModelLoadError(f"initializer '{t.name}' has element type {onnx.TensorProto.DataType.Name(t.data_type)}, "
                             f"but the graph input of that name says {onnx.TensorProto.DataType.Name(tt.elem_type)}")
    if tt.HasField("shape"):
        declared = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if len(declared) != len(t.dims) or any(d is not None and d != s for d, s in zip(declared, t.dims)):
            raise ModelLoadError(f"initializer '{t.name}' has shape {list(t.dims)}, but the graph input of that "
                                 f"name says {[d if d is not None else '?' for d in declared]}")


def _ident(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_]", "_", name)
