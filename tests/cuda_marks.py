"""Where the cuda target's tests run: Numba's CUDA simulator (the default run:
conftest.py sets NUMBA_ENABLE_CUDASIM=1) or a real GPU (`pytest -m gpu`).
A test marked gpu also takes `needs_gpu`, so that without a GPU it skips,
saying why, rather than failing."""
import os

import pytest

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def gpu_present() -> bool:
    """Whether a real GPU runs the cuda target here (not the simulator)."""
    if SIMULATED:
        return False
    try:
        from numba import cuda

        return cuda.is_available()
    except Exception:
        return False


gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not gpu_present(), reason="no CUDA GPU (or NUMBA_ENABLE_CUDASIM is set)")
on_simulator = pytest.mark.skipif(not SIMULATED, reason="simulator tests: run with NUMBA_ENABLE_CUDASIM=1")
