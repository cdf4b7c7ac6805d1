import os
import random

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
    Numba reads the variable when numba.cuda is first imported, which is later.
    The differential fuzzer's seed is drawn here, once a run: pytest-xdist's
    workers (`-n auto`) start after this and inherit the environment, so they
    all fuzz from the seed that the summary prints."""
    marks = config.option.markexpr or ""
    if "gpu" not in marks.replace("not gpu", ""):
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    if not os.environ.get("MINIDLC_FUZZ_SEED"):
        os.environ["MINIDLC_FUZZ_SEED"] = str(random.SystemRandom().randrange(2 ** 32))


def pytest_terminal_summary(terminalreporter):
    """The differential fuzzer's seed, when it ran, so that a failure can be replayed."""
    ran = any(getattr(report, "when", None) == "call" and report.nodeid.startswith("tests/test_fuzz_onnxruntime.py")
              for reports in terminalreporter.stats.values() for report in reports)
    if ran:
        seed = os.environ["MINIDLC_FUZZ_SEED"]
        terminalreporter.write_line(f"fuzz seed: {seed} (replay: MINIDLC_FUZZ_SEED={seed} "
                                    "python -m pytest tests/test_fuzz_onnxruntime.py)")
