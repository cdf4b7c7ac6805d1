"""minidlc: a small deep-learning compiler you can read in an afternoon.

    import minidlc
    g = minidlc.load("model.onnx")                  # graph IR; print(g) shows it
    m = minidlc.compile("model.onnx", target="llvm")
    outs = m.run({"x": x})                          # dict: output name -> array
    print(m.emit("loops"))                          # any stage as text
"""
from __future__ import annotations

from .ir import Graph
from .runtime import CompiledModel, InputError

__version__ = "0.1.0"


def load(model, example_inputs=None, input_shapes: dict | None = None) -> Graph:
    """Import a model into the graph IR.

    `model` is a path to an .onnx file, an onnx.ModelProto, a Graph (returned
    as is), or a torch.nn.Module (then `example_inputs` is a tuple of tensors).
    `input_shapes` binds dynamic input dimensions: {"x": (1, 3, 224, 224)}.
    """
    if isinstance(model, Graph):
        return model
    if _is_torch_module(model):
        from .frontends.torch import load_torch

        return load_torch(model, example_inputs)
    from .frontends.onnx import load_onnx

    return load_onnx(model, input_shapes)


def compile(model, target: str = "reference", opt_level: int = 2, *, example_inputs=None,
            input_shapes: dict | None = None, passes=None, instruments=(), verify_each: bool = True,
            **backend_options) -> CompiledModel:
    """Import, optimize and build a model for `target` (see `minidlc.backends.BACKENDS`).

    `opt_level` picks the pass pipeline (0 none, 1 cleanups, 2 cleanups and
    fusion); `passes` gives an explicit list of pass names instead.
    `instruments` are pass-manager instruments (printing, timing, checks);
    `verify_each=False` skips the IR verifier between passes.
    """
    from .backends import get_backend
    from .passes.manager import PassContext, build_pipeline

    backend = get_backend(target)
    source = load(model, example_inputs, input_shapes)
    pipeline = build_pipeline(opt_level=opt_level, passes=passes, instruments=instruments,
                              verify_each=verify_each, context=PassContext(backend.can_lower))
    optimized = pipeline.run(source.copy())
    program = backend.program(optimized)
    executable = backend.build(program, **backend_options)
    return CompiledModel(source, optimized, program, executable, backend)


def _is_torch_module(obj) -> bool:
    return any(c.__module__.startswith("torch") and c.__name__ == "Module" for c in type(obj).__mro__)


__all__ = ["load", "compile", "CompiledModel", "Graph", "InputError", "__version__"]
