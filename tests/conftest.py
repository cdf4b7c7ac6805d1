import os

from hypothesis import settings

# CI has 2 cores and a time limit: keep property tests small by default, and the
# same on every run (derandomized) so that main stays green; the thorough profile
# (HYPOTHESIS_PROFILE=thorough) searches anew each time.
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    """The cuda target's tests run on Numba's CUDA simulator unless the run
    selects the tests marked gpu (`pytest -m gpu`, on a machine with a GPU).
    Numba reads the variable when numba.cuda is first imported, which is later."""
    marks = config.option.markexpr or ""
    if "gpu" not in marks.replace("not gpu", ""):
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


def pytest_terminal_summary(terminalreporter):
    """The differential fuzzer's seed, so that a failure can be replayed."""
    import sys

    fuzz = sys.modules.get("onnx_fuzz")
    if fuzz is not None and "test_fuzz_onnxruntime" in sys.modules:
        terminalreporter.write_line(f"fuzz seed: {fuzz.SEED} (replay: MINIDLC_FUZZ_SEED={fuzz.SEED} "
                                    "python -m pytest tests/test_fuzz_onnxruntime.py)")
