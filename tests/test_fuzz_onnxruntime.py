"""Differential fuzzing: random ONNX models (onnx_fuzz.py) compiled at -O0 and
-O2 on every target must agree with onnxruntime.

Unlike the other property tests (derandomized: the same 25 examples every
run), this one searches anew each run, from a fresh seed that the run prints
at its end (`fuzz seed: N`); `MINIDLC_FUZZ_SEED=N` replays it. The example
counts are fixed, sized to take one to two minutes together on a 2-core
machine; `MINIDLC_FUZZ_SCALE` multiplies them (0 skips, 10 hunts longer).
A shrunk counterexample becomes a test in test_fuzz_regressions.py.
"""
import os

import pytest
from hypothesis import HealthCheck, given, note, reject, seed, settings

from onnx_fuzz import SEED, PeerHasNoKernel, check_against_onnxruntime, onnx_models

# Examples per target: numba compiles each kernel with Numba, slower than llvm.
EXAMPLES = {"reference": 1000, "llvm": 150, "numba": 25}
SCALE = float(os.environ.get("MINIDLC_FUZZ_SCALE", "1"))


@pytest.mark.parametrize("target", list(EXAMPLES))
def test_random_models_match_onnxruntime(target):
    count = round(EXAMPLES[target] * SCALE)
    if not count:
        pytest.skip("MINIDLC_FUZZ_SCALE=0")

    @seed(SEED)
    @settings(max_examples=count, derandomize=False, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(spec=onnx_models())
    def check(spec):
        note(f"replay with MINIDLC_FUZZ_SEED={SEED}")
        try:
            check_against_onnxruntime(spec, target)
        except PeerHasNoKernel:  # e.g. Softsign on f64: nothing to compare with
            reject()

    check()
