"""The ONNX package's model tests: whole small models with their data.

`pytorch-converted` and `pytorch-operator` were exported from PyTorch, most
at opset 6, so they test the frontend's conversion of legacy op versions
(the `broadcast` attribute of Add and Gemm, BatchNormalization's `is_test`,
PRelu's per-channel slope); `simple` holds small models of later opsets.

A case is out of scope when it uses an op minidlc does not mean to support
(`OUT_OF_SCOPE`: sequences, strings, training); every other case must pass.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SUITES = ("pytorch-converted", "pytorch-operator", "simple")

_SEQUENCE_OPS = ("SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
                 "SequenceLength", "SplitToSequence", "ConcatFromSequence")
OUT_OF_SCOPE: dict[str, str] = {
    **{op: "sequence type: minidlc compiles tensors only" for op in _SEQUENCE_OPS},
    "StringNormalizer": "string type: minidlc compiles numeric tensors only",
    "Gradient": "training-only op: minidlc compiles models for inference",
}


@dataclass
class ModelCase:
    """What `onnx_node_cases.run_case` needs: a model and its data sets."""

    suite: str
    name: str
    model: object
    data_sets: list[tuple[list[np.ndarray], list[np.ndarray]]]
    rtol: float
    atol: float

    @property
    def ops(self) -> set[str]:
        return {n.op_type for n in self.model.graph.node}

    def out_of_scope(self) -> str | None:
        """Why the case is out of scope, or None."""
        reasons = sorted({OUT_OF_SCOPE[op] for op in self.ops if op in OUT_OF_SCOPE})
        return "; ".join(reasons) or None


def _tensors(pattern: str) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return [numpy_helper.to_array(onnx.load_tensor(f)) for f in sorted(glob.glob(pattern))]


@lru_cache(maxsize=1)
def all_model_cases() -> tuple[ModelCase, ...]:
    import onnx
    from onnx.backend.test.loader import load_model_tests

    out = []
    for suite in SUITES:
        for t in sorted(load_model_tests(kind=suite), key=lambda t: t.name):
            model = onnx.load(os.path.join(t.model_dir, "model.onnx"))
            sets = [(_tensors(os.path.join(d, "input_*.pb")), _tensors(os.path.join(d, "output_*.pb")))
                    for d in sorted(glob.glob(os.path.join(t.model_dir, "test_data_set_*")))]
            out.append(ModelCase(suite, t.name, model, sets, t.rtol, t.atol))
    return tuple(out)


def scoped_model_cases() -> list[ModelCase]:
    return [c for c in all_model_cases() if c.out_of_scope() is None]


def run_on_onnxruntime(case: ModelCase) -> None:
    """The same check as `run_case`, on onnxruntime: raises on a failure."""
    import onnxruntime as ort

    sess = ort.InferenceSession(case.model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for inputs, expected in case.data_sets:
        got = sess.run(None, dict(zip(names, inputs)))
        for g, want in zip(got, expected):
            np.testing.assert_allclose(g, want, rtol=case.rtol, atol=case.atol, equal_nan=True)
