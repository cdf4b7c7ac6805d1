"""CompiledModel: a compiled graph plus the input checks that keep native code safe."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .ir import Graph, TensorType
from .ir.types import dtype_name


class InputError(ValueError):
    """A feed to `CompiledModel.run` is missing, unexpected, or of the wrong shape or dtype."""


class CompileError(RuntimeError):
    """A backend's compiler died or failed on a kernel (LLVM aborting on the
    IR we gave it): a bug in minidlc's code generation. The message names
    the kernel and says what the compiler said."""


class DeviceError(RuntimeError):
    """The target's device is not there (no GPU, no driver) or cannot hold the
    model; the message says what it needs and what to do instead."""


class CompiledModel:
    """The result of `minidlc.compile`: run it, or print any of its stages."""

    def __init__(self, source: Graph, optimized: Graph, program, executable, backend):
        self.source = source          # the graph as imported
        self.graph = optimized        # after the pass pipeline
        self.program = program        # the loop program (loops.program.LoopProgram)
        self.executable = executable  # the backend's runnable form
        self.backend = backend        # backends.Backend
        self.target = backend.name
        self.input_types: dict[str, TensorType] = {v.name: v.type for v in optimized.inputs}
        self.output_names = [v.name for v in source.outputs]
        self._expected = [(name, t.np_dtype, t.shape) for name, t in self.input_types.items()]
        self.compile_seconds: dict[str, float] = {}  # stage -> seconds (minidlc.compile fills it)

    def check_inputs(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Validate feeds against the graph's inputs; return them in input order."""
        arrays = self._as_given(feeds)
        return arrays if arrays is not None else self._converted(feeds)

    def _as_given(self, feeds) -> list[np.ndarray] | None:
        """The feeds in input order if each is already a C-contiguous array of its
        input's dtype and shape (the usual case, checked in few steps: Python
        code right after a run is slow, the kernels having evicted it from the
        caches), else None."""
        if type(feeds) is not dict or len(feeds) != len(self._expected):
            return None
        arrays = []
        for name, dtype, shape in self._expected:
            a = feeds.get(name)
            if type(a) is not np.ndarray or a.dtype != dtype or a.shape != shape or not a.flags.c_contiguous:
                return None
            arrays.append(a)
        return arrays

    def _converted(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The feeds as C-contiguous arrays in input order, or an InputError that says what is wrong."""
        if not isinstance(feeds, Mapping):
            raise InputError(f"run() takes a dict of input name -> array, got {type(feeds).__name__}")
        missing = [n for n in self.input_types if n not in feeds]
        extra = [n for n in feeds if n not in self.input_types]
        if missing or extra:
            parts = ([f"missing input(s) {missing}"] if missing else []) + \
                    ([f"unexpected input(s) {extra}"] if extra else [])
            raise InputError("; ".join(parts) + f"; the model takes {self._signature()}")
        arrays = []
        for name, t in self.input_types.items():
            a = np.asarray(feeds[name])
            try:
                got = dtype_name(a.dtype)
            except TypeError:
                got = str(a.dtype)
            if got != t.dtype:
                raise InputError(f"input '{name}' has dtype {got}, expected {t.dtype} (shape {list(t.shape)})")
            if a.shape != t.shape:
                raise InputError(f"input '{name}' has shape {list(a.shape)}, expected {list(t.shape)}")
            arrays.append(np.asarray(a, order="C"))  # not ascontiguousarray: it makes 0-d arrays 1-d
        return arrays

    def _signature(self) -> str:
        return ", ".join(f"{n}: {t}" for n, t in self.input_types.items())

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.executable.run(self.check_inputs(feeds))
        return dict(zip(self.output_names, outs))

    __call__ = run

    def emit(self, stage: str = "graph") -> str:
        """The text of one compilation stage: 'graph' (as imported), 'fused'
        (after the passes), 'loops' (the loop program), 'dot' or 'svg' (a
        picture of the graph after the passes), 'onnx' (that graph as ONNX
        text; `to_onnx()` gives the model), or one of the target's own
        stages (llvm: 'llvm', 'asm'; numba: 'numba')."""
        from .ir.dot import to_dot, to_svg

        common = {"graph": lambda: str(self.source), "fused": lambda: str(self.graph),
                  "loops": lambda: str(self.program), "dot": lambda: to_dot(self.graph),
                  "svg": lambda: to_svg(self.graph), "onnx": lambda: _onnx_text(self.to_onnx())}
        if stage in common:
            return common[stage]()
        if stage not in self.backend.stages:
            raise ValueError(f"target {self.target} cannot emit {stage!r}; it emits "
                             f"{', '.join(tuple(common) + self.backend.stages)}")
        return self.executable.emit(stage)

    def to_onnx(self):
        """The graph after the passes as an onnx.ModelProto (fused groups as ONNX functions)."""
        from .frontends.onnx.export import export_onnx

        return export_onnx(self.graph, [v.name for v in self.source.outputs])

    def random_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Random feeds of the right shapes and dtypes (for smoke tests and the CLI)."""
        return random_inputs(self.input_types, seed)


def _onnx_text(model) -> str:
    import onnx.printer

    return onnx.printer.to_text(model)


def random_inputs(input_types: Mapping[str, TensorType], seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed pseudo-random feeds: normal floats, small non-negative integers
    (valid as indices), random booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, t in input_types.items():
        if t.dtype == "bool":
            feeds[name] = rng.random(t.shape) < 0.5
        elif t.dtype.startswith(("i", "u")):
            feeds[name] = rng.integers(0, 4, t.shape).astype(t.np_dtype)
        else:
            feeds[name] = rng.standard_normal(t.shape).astype(t.np_dtype)
    return feeds
