"""Mixed precision: weights stored in f16 or bf16, arithmetic kept in f32.

The pass stores the model's f32 weights in 16 bits (half the bytes) and puts a
Cast back to f32 in front of their readers:

    %fc1.weight = Constant <f32[784,512]>                      before
    %fc1.weight_f16 = Constant <f16[784,512]>                  after
    %fc1.weight = Cast(%fc1.weight_f16) {to=f32}

so every op still computes in f32 and activations stay f32: only the weights
are rounded, once. dtype=f16 keeps an 11-bit mantissa (a relative error of
at most 2^-11, about 5e-4; below 6e-5, where f16 turns subnormal, an
absolute error of at most 3e-8) but only a range to 65504; dtype=bf16 keeps
f32's range with an 8-bit mantissa (a relative error of at most 2^-8, about
4e-3): the top half of an f32, so converting it back is a shift. This is weight-only mixed precision, the kind that suits
CPUs: most (before AVX512-FP16) have no f16 arithmetic, only the conversion
(F16C's vcvtph2ps), and the point is bytes, of the model and of the memory
traffic for its weights, not faster arithmetic.

Which constants: every f32 constant of more than `MIN_ELEMENTS` elements
(the weights of Conv, MatMul and Gemm above all), unless one of its readers
is in `KEEP_F32`. A constant outside f16's range (|x| > 65504) stays f32 in
f16 mode, since it would become infinite.

Where the bytes are saved. Constant folding never undoes the pass: a Cast of
a constant would double its bytes, and fold materializes a result only when
it is no bigger than its inputs. Fusion puts each Cast in the group of the
Conv or MatMul that reads it, and the GEMM lowering packs the f16 array at
compile time and widens each element as its micro-kernel loads it. So the
compiled llvm and numba programs hold f16 weights too
(`LoopProgram.weight_bytes()` halves) and never an f32 copy, not only the
graph and its ONNX export.

Run it after fold and fuse-layers (so that conv+BN folding sees the f32
weights) and before fuse:
    -p 'fold,dce,cse,simplify,fuse-layers,mixed-precision{dtype=f16},fuse'
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from ..ir import Graph
from ..ir.types import DTYPES
from .fold import ALWAYS_FOLD_BYTES
from .manager import Tolerance, register_pass

# Smaller f32 constants stay: they save next to nothing, and fold would fold their Cast back.
MIN_ELEMENTS = ALWAYS_FOLD_BYTES // 4
STORAGE = ("f16", "bf16")

KEEP_F32 = ("Softmax", "LogSoftmax", "LayerNormalization", "InstanceNormalization", "BatchNormalization",
            "ReduceSum", "ReduceMean", "ReduceProd", "ReduceSumSquare", "ReduceL2", "CumSum",
            "QuantizeLinear", "DequantizeLinear")
"""Ops whose constant inputs stay f32. They accumulate (sums, means,
variances) or exponentiate, so one f16 rounding in a parameter is summed over
many elements or amplified by exp, and f16's 11-bit mantissa loses the
accuracy that computing in f32 was meant to keep. A quantization scale
defines the integer grid: rounding it would flip roundings of the quantized
values."""


@register_pass
class MixedPrecision:
    name = "mixed-precision"
    tolerance = Tolerance(rtol=2e-2, atol=2e-2,
                          why="weights rounded to 16 bits, a relative error of up to 2^-11 each in f16, 2^-8 "
                              "in bf16 (the demo models' outputs move by about 4e-4 and 3e-3 of their largest value)")

    def __init__(self, dtype: str = "f16"):
        if dtype not in STORAGE:
            raise ValueError(f"mixed-precision stores weights in {' or '.join(STORAGE)}, got dtype={dtype!r}")
        self.dtype = dtype
        self.stored: list[str] = []  # the constants the last run stored in f16
        self.bytes_before = self.bytes_after = 0  # of every constant in the graph, around the last run

    @property
    def saved_bytes(self) -> int:
        return self.bytes_before - self.bytes_after

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        self.bytes_before = _constant_bytes(graph)
        self.stored = []
        readers: dict[int, list[str]] = {}
        for n in graph.nodes:
            for v in n.inputs:
                if v is not None:
                    readers.setdefault(id(v), []).append(n.op)
        for node in list(graph.nodes):
            if node.op != "Constant" or not self._wanted(node.attrs["value"], readers.get(id(node.output), [])):
                continue
            v = node.output
            half = graph.constant(node.attrs["value"].astype(DTYPES[self.dtype]), name=f"{v.name}_{self.dtype}",
                                  loc=v.loc, before=node)
            # the Constant becomes the Cast: the f32 value keeps its name and its readers
            node.op, node.inputs, node.attrs = "Cast", [half], {"to": "f32"}
            self.stored.append(v.name)
        self.bytes_after = _constant_bytes(graph)
        return graph, bool(self.stored)


    def _wanted(self, array: np.ndarray, reader_ops: list[str]) -> bool:
        """Whether a constant read by nodes `reader_ops` is stored in 16 bits."""
        finite_max = float(ml_dtypes.finfo(DTYPES[self.dtype]).max)  # NumPy's finfo knows no bf16
        return (array.dtype == np.float32 and array.size > MIN_ELEMENTS and bool(reader_ops)
                and not any(op in KEEP_F32 for op in reader_ops)
                and bool(np.all(np.abs(array[np.isfinite(array)]) <= finite_max)))


def _constant_bytes(graph: Graph) -> int:
    return sum(n.attrs["value"].nbytes for n in graph.nodes if n.op == "Constant")
