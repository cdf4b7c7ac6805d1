"""Compile every launch of some models' cuda programs to PTX for sm_90, with no GPU.

The simulator runs kernels as Python, so it cannot tell whether Numba CUDA
accepts the generated code (types, supported functions); NVVM can, and it
needs no GPU. Numba asks the current device's compute capability only to
compile device functions (support.py's): here we answer 9.0 ourselves.

    python tests/cuda_ptx_check.py mlp,convnet      # exits 77 when NVVM is missing
"""
import os
import sys

import numba
import numpy as np

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    sys.exit("run without NUMBA_ENABLE_CUDASIM: this compiles for a real GPU")
from numba import cuda  # noqa: E402
from numba.cuda import dispatcher  # noqa: E402

try:
    from numba.cuda.cudadrv import nvvm

    nvvm.NVVM()
except Exception as e:  # no NVVM library: nothing to check here
    print(f"NVVM unavailable: {e}")
    sys.exit(77)


class _Hopper:
    compute_capability = (9, 0)


dispatcher.get_current_device = lambda: _Hopper()

import minidlc  # noqa: E402
from minidlc.backends import get_backend  # noqa: E402
from minidlc.backends.cuda.render import render_module  # noqa: E402
from minidlc.backends.numba import load_module  # noqa: E402
from minidlc.demo_models import build_model  # noqa: E402
from minidlc.ir import DTYPES  # noqa: E402
from minidlc.loops.program import StepKind  # noqa: E402
from minidlc.passes.manager import PassContext, build_pipeline  # noqa: E402

backend = get_backend("cuda")
for name in sys.argv[1].split(","):
    graph = build_pipeline(opt_level=2, context=PassContext(backend.can_lower)).run(minidlc.load(build_model(name)))
    steps = [s for s in backend.program(graph).steps if s.kind == StepKind.KERNEL]
    source, launches = render_module([s.lowered.kernel for s in steps])
    module = load_module(source, "ptx-check")
    for launch in dict((launch.name, launch) for launch in launches).values():
        signature = tuple(numba.from_dtype(np.dtype(DTYPES[p.dtype]))[::1] for p in launch.kernel.params)
        ptx, _ = cuda.compile_ptx(getattr(module, launch.name).py_func, signature, cc=(9, 0))
        assert ".visible .entry" in ptx, launch.name
    print(f"{name}: {len(launches)} launches compile to PTX")
