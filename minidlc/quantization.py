"""Post-training quantization from Python and the command line.

    q = minidlc.quantize("model.onnx", calibration="calib.npz")   # a QDQ onnx.ModelProto
    m = minidlc.compile(q, target="llvm")                          # runs int8 kernels
    m = minidlc.compile("model.onnx", target="llvm", quantize="entropy", calibration="calib.npz")

Calibration data is what the model will really see: an .npz whose arrays
are named after the model's inputs (a stack of samples, split into batches
of the model's batch size), a directory of such files, a dict of arrays or a
list of them, or `random:N` (N batches of random normal inputs: for speed
experiments only, since ranges calibrated on noise say nothing about
accuracy).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .ir import Graph
from .passes.manager import CLEANUPS, LEVELS, PassContext, build_pipeline

RANDOM_BATCHES = 8  # batches for a bare "random"
# the pipeline in front of the quantize pass: clean up, fold BatchNorm into the weights first
BEFORE_QUANTIZE = CLEANUPS + ["fuse-layers"]


class CalibrationError(ValueError):
    """Calibration data that does not fit the model (names, shapes, dtypes)."""


def load_calibration(spec, graph: Graph, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Batches ({input name: array} with the graph's input types) from `spec`."""
    if isinstance(spec, (list, tuple)):
        return [b for part in spec for b in _batches(part, graph, "calibration batch")]
    if isinstance(spec, dict):
        return _batches(spec, graph, "calibration data")
    text = str(spec)
    if text == "random" or text.startswith("random:"):
        count = int(text.partition(":")[2] or RANDOM_BATCHES)
        from .runtime import random_inputs

        print(f"calibrating on random data ({count} batches): for speed experiments only; "
              "the quantized model's accuracy means nothing", file=sys.stderr)
        return [random_inputs({v.name: v.type for v in graph.inputs}, seed + i) for i in range(count)]
    path = Path(text)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise CalibrationError(f"calibration directory {path} holds no .npz files")
        return [b for f in files for b in _batches(_read(f), graph, str(f))]
    if not path.exists():
        raise CalibrationError(f"calibration data {text!r}: no such file or directory "
                               "(give an .npz, a directory of them, or random:N)")
    return _batches(_read(path), graph, str(path))


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input error
        raise CalibrationError(f"cannot read calibration file {path}: {e}") from None


def _batches(arrays: dict, graph: Graph, where: str) -> list[dict[str, np.ndarray]]:
    """Split stacks of samples into batches of each input's shape."""
    counts = set()
    for v in graph.inputs:
        if v.name not in arrays:
            raise CalibrationError(f"{where} has no array named {v.name!r} (the model's inputs: "
                                   f"{[u.name for u in graph.inputs]}; it has {sorted(arrays)})")
        a = np.asarray(arrays[v.name])
        shape = v.type.shape
        if a.dtype != v.type.np_dtype:
            raise CalibrationError(f"{where}: {v.name!r} is {a.dtype}, the model's input is {v.type}")
        if a.shape == shape:
            counts.add(1)
        elif shape and a.ndim == len(shape) and a.shape[1:] == shape[1:] and shape[0] and a.shape[0] >= shape[0]:
            counts.add(a.shape[0] // shape[0])
        else:
            raise CalibrationError(f"{where}: {v.name!r} has shape {list(a.shape)}; the model's input is {v.type} "
                                   "(give one batch of that shape, or a stack of samples along the first axis)")
    n = min(counts)
    out = []
    for i in range(n):
        batch = {}
        for v in graph.inputs:
            a = np.asarray(arrays[v.name])
            b0 = v.type.shape[0] if v.type.shape else 1
            batch[v.name] = a if a.shape == v.type.shape else np.ascontiguousarray(a[i * b0:(i + 1) * b0])
        out.append(batch)
    return out


def quantize_spec(options: str | dict | bool) -> str:
    """The pass spec ("quantize{method=entropy}") of `compile(quantize=...)`:
    True for the defaults, a method name, or a dict of the pass's options."""
    if options is True:
        return "quantize"
    if isinstance(options, str):
        options = {"method": options}
    items = [f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple, set)) else v}" for k, v in options.items()]
    return "quantize{" + " ".join(items) + "}" if items else "quantize"


def quantized_pipeline(opt_level: int, options) -> list[str]:
    """The -O level's passes with quantization where it belongs: after the
    cleanups and layer fusion (BatchNorm folded into weights first), before
    the integer-op rewrite and operator fusion."""
    if opt_level != 2:
        raise ValueError("quantization needs opt_level 2 (it runs between layer fusion and operator fusion)")
    passes = list(LEVELS[2])
    passes.insert(passes.index("integer-ops"), quantize_spec(options))
    return passes


def quantize(model, calibration, *, method: str = "minmax", per_tensor: bool = False, activations: str = "u8",
             percentile: float = 99.99, keep_float=(), input_shapes: dict | None = None, instruments=(),
             as_graph: bool = False):
    """Post-training int8 quantization: an onnx.ModelProto in QDQ form (or the
    Graph, with as_graph=True), which onnxruntime and minidlc both run."""
    from . import load
    from .frontends.onnx.export import export_onnx

    graph = load(model, input_shapes=input_shapes)
    batches = load_calibration(calibration, graph)
    spec = quantize_spec(dict(method=method, per_tensor=per_tensor, activations=activations, percentile=percentile,
                              keep_float=tuple(keep_float)))
    pipeline = build_pipeline(passes=BEFORE_QUANTIZE + [spec], instruments=instruments,
                              context=PassContext(calibration=tuple(batches)))
    quantized = pipeline.run(graph.copy())
    return quantized if as_graph else export_onnx(quantized, [v.name for v in graph.outputs])
