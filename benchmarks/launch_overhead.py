"""The host's cost of queueing one kernel launch: Numba's `launch_kernel`
against minidlc's prepared `DirectLaunch`, with no GPU.

    python benchmarks/launch_overhead.py

At batch 1 a small model is launch-bound: the GPU finishes each kernel
before Python has queued the next, so the Python between two driver calls
is the model's time. Here the driver's cuLaunchKernel is replaced by a C
function that does nothing (libc's abs, given Numba's own argument types, so
every argument is still converted as for the driver), behind Numba's own
wrapper, and each path is timed by timeit: what is left is the Python and
ctypes work of each path. The arguments are those of a kernel of four arrays
(Numba passes seven values per array). Absolute times are this CPU's. It
needs Numba's built-in CUDA target, whose driver binding is ctypes; NVIDIA's
numba-cuda launches through cuda.core, where minidlc's launch calls
`cuda.core.launch` itself.
"""
from __future__ import annotations

import ctypes
import functools
import sys
import timeit
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parents[1]))
from numba.cuda.cudadrv import driver, drvapi  # noqa: E402

from minidlc.backends.cuda import driver_launch  # noqa: E402


NOT_CTYPES = "launch_overhead.py needs Numba's ctypes driver binding (the built-in CUDA target's)"


def stub_driver() -> None:
    """Numba's driver object, its cuLaunchKernel a C no-op, never initialized."""
    if not hasattr(driver, "launch_kernel") or getattr(driver, "USE_NV_BINDING", True):
        sys.exit(NOT_CTYPES)
    noop = ctypes.CDLL(None).abs  # abs(NULL handle) == 0: CUDA_SUCCESS
    restype, *argtypes = drvapi.API_PROTOTYPES["cuLaunchKernel"]
    noop.restype, noop.argtypes = restype, argtypes
    driver.driver.is_initialized, driver.driver.initialization_error = True, None
    driver._logger = driver.make_logger()
    driver.driver._ctypes_wrap_fn("cuLaunchKernel", libfn=noop)  # sets driver.driver.cuLaunchKernel


def main() -> None:
    stub_driver()
    prepared = [value for _ in range(4) for value in (
        ctypes.c_void_p(0), ctypes.c_void_p(0), ctypes.c_ssize_t(100), ctypes.c_ssize_t(4), ctypes.c_void_p(0),
        ctypes.c_ssize_t(100), ctypes.c_ssize_t(4))]  # meminfo, parent, nitems, itemsize, data, shape, strides
    handle = ctypes.c_void_p(0)
    paths = {"Numba's launch_kernel": functools.partial(driver.launch_kernel, handle, 64, 1, 1, 224, 1, 1, 0, None,
                                                        prepared),
             "minidlc's DirectLaunch": driver_launch("k", SimpleNamespace(handle=handle), 64, 224, prepared)}
    n = 100_000
    times = {name: min(timeit.repeat(call, number=n, repeat=5)) / n * 1e6 for name, call in paths.items()}
    for name, us in times.items():
        print(f"{name:<24}{us:6.2f} us a launch")
    numba_us, ours_us = times.values()
    print(f"DirectLaunch takes {ours_us / numba_us:.2f} of Numba's time")


if __name__ == "__main__":
    main()
