"""Export an nn.Module with torch.export and convert its ATen graph to the graph IR."""
from __future__ import annotations

import operator
import os
import re
import warnings

import numpy as np
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from ...ir import Graph, IRError, TensorType, Value
from . import creation, elementwise, nn, reduce, shape  # noqa: F401  (register converters)
from .converters import CONVERTERS, ConversionError, Ctx, dtype_of

# Composite ops that map onto one IR op each: kept whole instead of being
# decomposed into core ATen (linear would become t + addmm, matmul a chain of
# expand/view/bmm, adaptive_avg_pool2d a mean).
KEEP = ("linear.default", "matmul.default", "layer_norm.default", "adaptive_avg_pool2d.default",
        "max_pool2d.default", "transpose.int", "hardswish.default")

_SHORT_NAMES = {"native_batch_norm_legit_no_training": "batch_norm", "convolution": "conv",
                "split_with_sizes": "split"}
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


class UnsupportedOpError(ConversionError):
    """The model uses ATen ops without a converter; `ops` maps each to its source lines."""

    def __init__(self, message: str, ops: dict[str, list[str]]):
        super().__init__(message)
        self.ops = ops


def export(module: torch.nn.Module, example_inputs: tuple) -> ExportedProgram:
    """torch.export in eval mode, decomposed to core ATen except the ops in KEEP."""
    table = torch.export.default_decompositions()
    for name in KEEP:
        packet, overload = name.split(".")
        table.pop(getattr(getattr(torch.ops.aten, packet), overload), None)
    was_training = module.training
    module.eval()  # batch norm uses its running statistics, dropout is the identity
    try:
        with warnings.catch_warnings():  # internal to torch.export, not about the model
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            return torch.export.export(module, example_inputs).run_decompositions(table)
    except Exception as e:
        raise ConversionError(f"torch.export could not trace {type(module).__name__}: {e}") from e
    finally:
        module.train(was_training)


def source_loc(node: torch.fx.Node) -> str | None:
    """'file.py:LINE' of the model's code that made this node: the innermost
    stack frame outside PyTorch itself (nn.Linear's forward is not the model)."""
    frames = _FRAME.findall(node.meta.get("stack_trace") or "")
    user = [(f, line) for f, line in frames if not os.path.abspath(f).startswith(_TORCH_DIR)]
    if not user:
        return None
    path, line = user[-1]
    rel = os.path.relpath(path)
    return f"{path if rel.startswith('..') else rel}:{line}"


def value_name(node: torch.fx.Node) -> str:
    """A readable name for a node's result: the module path for a PyTorch
    layer (`layer1.0.conv1`), else the op inside the module that calls it
    (`layer1.0.add`), so a dump reads like the model."""
    op = re.sub(r"_\d+$", "", node.name).strip("_")
    op = _SHORT_NAMES.get(op, op)
    stack = node.meta.get("nn_module_stack") or {}
    path, cls = list(stack.values())[-1] if stack else ("", "")
    if not path:
        return op
    return path if cls.startswith("torch.nn.") else f"{path}.{op}"


def load_torch(module: torch.nn.Module, example_inputs) -> Graph:
    """Convert `module`, traced on `example_inputs` (a tensor or a tuple of them), to a Graph."""
    if example_inputs is None:
        raise ConversionError(f"loading {type(module).__name__} needs example_inputs: "
                              "a tuple of tensors with the shapes to compile for")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    program = export(module, tuple(example_inputs))
    check_supported(program)
    return convert(program, re.sub(r"\W", "_", type(module).__name__))


def check_supported(program: ExportedProgram) -> None:
    """Report every op without a converter at once, each with its source lines."""
    missing: dict[str, list[str]] = {}
    for node in program.graph.nodes:
        if node.op == "call_function" and node.target is not operator.getitem and str(node.target) not in CONVERTERS:
            lines = missing.setdefault(str(node.target), [])
            loc = source_loc(node) or "unknown source line"
            if loc not in lines:
                lines.append(loc)
    if missing:
        listed = "; ".join(f"{op} at {', '.join(locs)}" for op, locs in missing.items())
        raise UnsupportedOpError(f"unsupported PyTorch op(s): {listed}", missing)


def convert(program: ExportedProgram, name: str) -> Graph:
    g = Graph(name or "main")
    env: dict[torch.fx.Node, Value | list[Value]] = {}
    specs = {s.arg.name: s for s in program.graph_signature.input_specs}
    for node in program.graph.nodes:
        if node.op == "placeholder":
            spec = specs[node.name]
            if node.users or spec.kind == InputKind.USER_INPUT:  # skips unused buffers (num_batches_tracked)
                env[node] = _placeholder(g, program, node, spec)
        elif node.op == "call_function":
            ctx = Ctx(g, node, source_loc(node), value_name(node))
            env[node] = _call(ctx, env)
            _check_type(ctx, env[node])
        elif node.op == "output":
            g.outputs = _outputs(g, program, node, env)
        else:
            raise ConversionError(f"unexpected FX node {node.op} {node.target} in the exported graph")
    return g


def _placeholder(g: Graph, program: ExportedProgram, node: torch.fx.Node, spec) -> Value:
    """User inputs become graph inputs; parameters, buffers and lifted
    constants become Constant nodes named after their attribute path."""
    if spec.kind == InputKind.USER_INPUT:
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise ConversionError(f"input '{node.name}' is a {type(val).__name__}; only tensor inputs are supported")
        return g.add_input(node.name, TensorType(tuple(val.shape), dtype_of(val.dtype, f"input '{node.name}'")))
    if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
        tensor = program.state_dict.get(spec.target)
        if tensor is None:  # non-persistent buffers live in `constants`
            tensor = program.constants[spec.target]
    elif spec.kind == InputKind.CONSTANT_TENSOR:
        tensor = program.constants[spec.target]
    else:
        raise ConversionError(f"input '{node.name}' of kind {spec.kind.name} is not supported")
    dtype_of(tensor.dtype, f"weight '{spec.target}'")
    return g.constant(np.ascontiguousarray(tensor.detach().cpu().numpy()), spec.target)


def _call(ctx: Ctx, env: dict) -> Value | list[Value]:
    node = ctx.node
    if node.target is operator.getitem:
        results, index = env[node.args[0]], node.args[1]
        if not isinstance(results, list) or results[index] is None:
            raise ctx.error(f"output {index} of {node.args[0].target} is not supported (inference only)")
        return results[index]
    args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: env[n])
    try:
        return CONVERTERS[str(node.target)](ctx, *args, **kwargs)
    except ConversionError:
        raise
    except IRError as e:
        raise ctx.error(str(e)) from None
    except TypeError as e:  # a call the converter's signature does not accept
        raise ctx.error(f"unsupported arguments: {e}") from None


def _check_type(ctx: Ctx, result) -> None:
    """Each converted result must have the type PyTorch computed for it:
    a mismatch is a converter bug, caught here instead of as wrong numbers."""
    vals = ctx.node.meta.get("val")
    pairs = zip(result, vals) if isinstance(result, list) else [(result, vals)]
    for v, val in pairs:
        if v is None or not isinstance(val, torch.Tensor):
            continue
        want = TensorType(tuple(val.shape), dtype_of(val.dtype, ctx.where))
        if v.type != want:
            raise ctx.error(f"converted to {v.type}, but PyTorch computes {want}")


def _outputs(g: Graph, program: ExportedProgram, node: torch.fx.Node, env: dict) -> list[Value]:
    specs = program.graph_signature.output_specs
    bad = [s for s in specs if s.kind != OutputKind.USER_OUTPUT]
    if bad:
        raise ConversionError(f"the model mutates state ({bad[0].kind.name} {bad[0].target}); "
                              "only pure inference graphs are supported")
    outs = []
    for arg in node.args[0]:
        if not isinstance(arg, torch.fx.Node):
            raise ConversionError(f"model output {arg!r} is not a tensor")
        v = env[arg]
        if v in outs or v.producer is None:  # each output needs its own value
            v = g.add("Identity", [v], names=[arg.name]).output
        outs.append(v)
    return outs
