"""minidlc: a small deep-learning compiler you can read in an afternoon.

    import minidlc
    g = minidlc.load("model.onnx")                  # graph IR; print(g) shows it
    m = minidlc.compile("model.onnx", target="llvm")
    outs = m.run({"x": x})                          # dict: output name -> array
    print(m.emit("loops"))                          # any stage as text
    q = minidlc.quantize("model.onnx", calibration="calib.npz")  # int8, a QDQ onnx.ModelProto
"""
from __future__ import annotations

import time
from typing import NamedTuple

from .ir import Graph
from .runtime import CompiledModel, CompileError, DeviceError, InputError

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
            quantize=None, calibration=None, **backend_options) -> CompiledModel:
    """Import, optimize and build a model for `target` (see `minidlc.backends.BACKENDS`).

    `opt_level` picks the pass pipeline (0 none, 1 cleanups, 2 cleanups and
    fusion); `passes` gives an explicit list of pass names instead.
    `quantize` adds int8 quantization to the -O2 pipeline (True, a
    calibration method, or a dict of the quantize pass's options); it
    calibrates on `calibration` (see `minidlc.quantization.load_calibration`).
    `instruments` are pass-manager instruments (printing, timing, checks);
    `verify_each=False` skips the IR verifier between passes.

    A compile done before (the same graph, weights and options) loads its
    optimized graph and loop program from the compile cache instead of
    running the passes and lowering (see `minidlc.compile_cache`); one with
    instruments always runs them.
    """
    from . import compile_cache

    done = _lowered(model, target, opt_level, example_inputs, input_shapes, passes, instruments, verify_each, quantize,
                    calibration)
    times = done.times
    clock = time.perf_counter()
    executable = done.backend.build(done.program, **backend_options)
    times["backend"] = time.perf_counter() - clock
    if done.key and not done.loaded:  # stored after the build, which works out what kernels remember
        clock = time.perf_counter()   # (Kernel.canonical)
        compile_cache.store(done.key, done.program)
        times["cache"] += time.perf_counter() - clock
    m = CompiledModel(done.source, done.program.graph, done.program, executable, done.backend)
    m.compile_seconds = times
    return m


def lower(model, target: str, opt_level: int = 2, *, example_inputs=None, input_shapes: dict | None = None,
          passes=None, instruments=(), verify_each: bool = True, quantize=None, calibration=None):
    """Import, optimize and lower a model for `target`, as `compile` does, but
    build nothing: the loop program (loops.program.LoopProgram, which
    `--emit loops` prints), from the compile cache if it is there. What
    tuning works on (`minidlc tune`)."""
    return _lowered(model, target, opt_level, example_inputs, input_shapes, passes, instruments, verify_each,
                    quantize, calibration).program


class _Lowered(NamedTuple):
    source: Graph          # the imported graph
    backend: object        # backends.Backend
    program: object        # loops.program.LoopProgram
    key: str | None        # its compile cache key (None: not cached)
    loaded: bool           # from the compile cache (no passes ran)
    times: dict            # seconds per stage


def _lowered(model, target, opt_level, example_inputs, input_shapes, passes, instruments, verify_each, quantize,
             calibration) -> _Lowered:
    """What `compile` and `lower` share: import, passes, lowering, or the compile cache."""
    from . import compile_cache
    from .backends import get_backend

    backend = get_backend(target)
    source = load(model, example_inputs, input_shapes)
    if quantize is not None and quantize is not False:
        if passes is not None:
            raise ValueError("give quantize= or passes=, not both (put 'quantize' in the pass list instead)")
        from .quantization import quantized_pipeline

        passes = quantized_pipeline(opt_level, quantize)
    batches = ()
    if calibration is not None:
        from .quantization import load_calibration

        batches = tuple(load_calibration(calibration, source))
    tiles = backend.tiles()  # read once: the key and the lowering must agree
    clock = time.perf_counter()  # the compile cache: a compile done before is loaded (see compile_cache.py)
    key = compile_cache.key(source, backend, {"opt_level": opt_level, "passes": passes, "calibration": batches,
                                              "verify_each": verify_each}, tiles) if not instruments else None
    program = compile_cache.load(key) if key else None
    loaded = program is not None
    times = {"cache": time.perf_counter() - clock} if key else {}
    if not loaded:
        from .passes.manager import PassContext, build_pipeline

        pipeline = build_pipeline(opt_level=opt_level, passes=passes, instruments=instruments,
                                  verify_each=verify_each, context=PassContext(backend.can_lower, batches))
        clock = time.perf_counter()
        optimized = pipeline.run(source.copy())
        times["passes"] = time.perf_counter() - clock
        program = backend.program(optimized, tiles)
        if backend.runs_kernels:  # lowered on first use: here, so that it is timed apart from the backend
            clock = time.perf_counter()
            program.plan
            times["lowering"] = time.perf_counter() - clock
    return _Lowered(source, backend, program, key, loaded, times)


def quantize(model, calibration, **options):
    """Post-training int8 quantization to a QDQ onnx.ModelProto; see `minidlc.quantization.quantize`."""
    from .quantization import quantize as run

    return run(model, calibration, **options)


def _is_torch_module(obj) -> bool:
    return any(c.__module__.startswith("torch") and c.__name__ == "Module" for c in type(obj).__mro__)


__all__ = ["load", "compile", "lower", "quantize", "CompiledModel", "CompileError", "DeviceError", "Graph",
           "InputError", "__version__"]
