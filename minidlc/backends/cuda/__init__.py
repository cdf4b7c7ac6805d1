"""The CUDA backend: the loop program, lowered and scheduled for a GPU, as Numba CUDA kernels.

- Lowering for `Device.GPU` gives MatMul, Gemm and Conv shared-memory tiles
  and register blocks (loops/gpu_gemm.py); `gpu_schedule` turns every other
  stage into a launch, one thread per iteration of its outer loops.
- render.py writes each launch as a `@cuda.jit` function (`--emit cuda`);
  the module goes through the Numba backend's disk cache, and Numba CUDA
  caches what it compiles (`--emit ptx` prints it).
- Here: one device arena from the same memory plan as the CPU backends;
  weights are uploaded once, when the model is compiled; a run copies the
  inputs in, launches every kernel in order on one stream, and copies the
  outputs out (on numba-cuda, the launches are one CUDA graph, replayed by one
  call: `LaunchMode`). Nothing returns to the host between kernels, except for a
  step that has no GPU lowering: it runs on the host with its NumPy
  reference (its inputs copied out, its outputs back), and `--stats` and
  `--emit loops` count and name such steps. We chose that over a compile
  error so that every model runs; the host steps are what to lower next.

Without a GPU, Numba's CUDA simulator (`NUMBA_ENABLE_CUDASIM=1`) runs the same
kernels as Python threads: slow, but exact enough for tests of small graphs.
"""
from __future__ import annotations

import contextlib
import ctypes
import enum
import functools
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ...ir import DTYPES
from ...loops.program import LoopProgram, StepKind
from ...runtime import DeviceError
from .. import cache
from ..host import Arena, host_step
from ..numba.render import as_numba, bits_dtype
from .render import Launch, render_module

RENDER_VERSION = cache.source_version(Path(__file__).parent)
log = logging.getLogger(__name__)
SIMULATOR_HINT = ("to try the cuda target without a GPU, run with NUMBA_ENABLE_CUDASIM=1 (Numba's CUDA simulator: "
                  "slow, for small models)")


def cuda_module():
    """numba.cuda, once it is known that a GPU (or the simulator) is there."""
    try:
        from numba import cuda
    except ImportError as e:  # numba-cuda missing or broken
        raise DeviceError(f"target cuda: Numba's CUDA support cannot be imported ({e}); {SIMULATOR_HINT}") from None
    if not cuda.is_available():
        raise DeviceError(f"target cuda: no CUDA GPU or driver found; {SIMULATOR_HINT}")
    return cuda


def gpu_name(cuda) -> str:
    """The current GPU's name ("simulator" under Numba's simulator)."""
    name = getattr(cuda.current_context().device, "name", None) or "simulator"
    return name.decode() if isinstance(name, bytes) else str(name)


def simulated() -> bool:
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


class DeviceArena(Arena):
    """The memory plan's arena as one device allocation; weights uploaded once each."""

    def __init__(self, program: LoopProgram, cuda):
        super().__init__(program)
        self.cuda = cuda
        self.uploaded: dict[int, tuple[np.ndarray, object]] = {}  # id(host array) -> (it, its device copy)
        arena, weights = max(self.plan.size, 1), program.weight_bytes()
        if not simulated():
            free, total = cuda.current_context().get_memory_info()
            if arena + weights > free:
                raise DeviceError(f"target cuda: out of device memory: the model needs {arena + weights} bytes "
                                  f"(arena {arena}, weights {weights}), the GPU has {free} of {total} bytes free")
        self.memory = cuda.device_array(arena, np.uint8)

    def kernel_dtype(self, dtype: np.dtype) -> np.dtype:
        """f16 and bf16 buffers live on the device as their bits, viewed back on the host."""
        return bits_dtype(dtype)

    def region(self, offset: int, nbytes: int, dtype: np.dtype):
        return self.memory[offset:offset + nbytes].view(bits_dtype(dtype))

    def constant(self, a: np.ndarray):
        if id(a) not in self.uploaded:
            self.uploaded[id(a)] = (a, self.cuda.to_device(as_numba(np.ascontiguousarray(a))))
        return self.uploaded[id(a)][1]

    def new_flag(self):
        return self.cuda.to_device(np.zeros(1, np.int32))

    def take_flag(self, flag) -> bool:
        """(A copy from the device, and a zero back when set.)"""
        raised = bool(flag.copy_to_host()[0])
        if raised:
            flag.copy_to_device(np.zeros(1, np.int32))
        return raised

    def read(self, v) -> np.ndarray:
        """A copy on the host (device memory is read by copying)."""
        if v.type.numel == 0:
            return np.empty(v.type.shape, v.type.np_dtype)
        return self.array(v).copy_to_host().view(v.type.np_dtype).reshape(v.type.shape)

    def write(self, v, a) -> None:
        if v.type.numel:
            self.array(v).copy_to_device(as_numba(np.ascontiguousarray(np.asarray(a).reshape(v.type.shape),
                                                                       dtype=v.type.np_dtype)))


class CudaExecutable:
    """The loop program's kernels as CUDA launches over one device arena."""

    def __init__(self, program: LoopProgram):
        cuda = cuda_module()
        self.program, self.graph = program, program.graph
        kernel_steps = [s for s in program.steps if s.kind == StepKind.KERNEL]
        self.source, launches = render_module([s.lowered.kernel for s in kernel_steps],
                                              [s.computes() for s in kernel_steps])
        self.arena = DeviceArena(program, cuda)
        from ..numba import load_module, record_cache_files

        module = load_module(self.source, RENDER_VERSION) if kernel_steps else None
        if module is not None and not simulated():
            compile_in_parallel(module, signatures(launches))
        by_kernel: dict[str, list[Launch]] = {}
        for launch in launches:
            by_kernel.setdefault(launch.kernel.name, []).append(launch)
        self.launches: list[tuple[Launch, object, list]] = []  # (launch, its function, its arrays)
        self.step_calls: list[tuple[object, list[Callable[[], None]]]] = []  # (step, the calls that run it)
        for step in program.steps:
            if step.kind == StepKind.HOST:  # its inputs to the host, NumPy, its outputs back
                self.step_calls.append((step, [host_step(self.arena, step)]))
            elif step.kind == StepKind.KERNEL:
                arrays = [self.arena.buffer(step, b) for b in step.lowered.bindings]
                calls = []
                for launch in by_kernel.get(step.lowered.kernel.name, []):  # none: nothing to compute
                    fn = getattr(module, launch.name)
                    self.launches.append((launch, fn, arrays))
                    calls.append(launcher(fn, launch, arrays))
                if calls:
                    self.step_calls.append((step, calls))
        self.calls = [call for _, calls in self.step_calls for call in calls]
        if module is not None and not simulated():
            record_cache_files(module)  # what Numba cached may be loaded by later processes
        self.replay = graph_replay(self.calls, cuda) if launch_mode() is LaunchMode.GRAPH else None
        self.queue = [self.replay] if self.replay is not None else self.calls  # what a run calls
        self.lock = threading.Lock()

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        with self.lock:
            self.feed(arrays)
            self.arena.checked(self.queue)
            return [self.arena.read(v) for v in self.graph.outputs]

    def feed(self, arrays: list[np.ndarray]) -> None:
        """Copy the inputs (one array per graph input, validated) into the arena."""
        for v, a in zip(self.graph.inputs, arrays):
            self.arena.write(v, a)

    @property
    def direct_launches(self) -> int:
        """How many launches skip Numba's dispatcher (`DirectLaunch`); the
        rest fell back to it (a warning said why)."""
        return sum(isinstance(call, DirectLaunch) for call in self.calls)

    def launch(self) -> None:
        """Queue every step once, on the inputs already in the arena (no copies:
        what the GPU benchmark times, as it times PyTorch on device tensors):
        the graph's one replay where there is one, else each launch."""
        for call in self.queue:
            call()

    def time_calls(self, calls: list[Callable[[], None]]) -> float:
        """Seconds the GPU takes for `calls` queued alone (see `time_calls`)."""
        return time_calls(self.arena.cuda, calls)

    def emit(self, stage: str) -> str:
        if stage == "cuda":
            return self.source
        if simulated():
            raise ValueError("--emit ptx needs a GPU: Numba's CUDA simulator compiles nothing")
        import numba

        return "\n".join(f"// {launch.name}: grid {launch.grid}, block {launch.block}\n"
                         + fn.inspect_asm(tuple(numba.typeof(a) for a in arrays))
                         for launch, fn, arrays in self.launches)


class DirectLaunch:
    """A launch with every argument prepared once, called with no Numba
    dispatcher in between (which types, converts and configures every
    argument again at every call: tens of microseconds, most of a small
    model's time). `launch(*args)` is the cheapest launch the installed Numba
    CUDA offers (`driver_launch`). The GPU benchmark counts these, to say
    which way the launches went."""

    __slots__ = ("name", "launch", "args", "keep", "via_cuda_core")

    def __init__(self, name: str, launch: Callable, args: tuple, keep: tuple = (), via_cuda_core: bool = False):
        self.name, self.launch, self.args, self.keep = name, launch, args, keep  # keep: what args point into
        self.via_cuda_core = via_cuda_core  # launch is cuda.core's, args[0] its stream: `graph_replay` swaps that

    def __call__(self) -> None:
        status = self.launch(*self.args)
        if status:  # a ctypes driver call returns its CUresult (the other launches raise instead)
            raise DeviceError(f"cuda: launching {self.name} failed with CUDA error {status}")


def driver_launch(name: str, cufunc, grid: int, block: int, prepared: list, keep: tuple = ()) -> DirectLaunch:
    """The launch of `cufunc` (Numba's compiled kernel function) on the
    arguments `prepared` as Numba's `_prepare_args` makes them, `keep` alive.
    - NVIDIA's numba-cuda launches through cuda.core (it dropped its own
      driver bindings): the arguments are Python ints, and `cuda.core.launch`
      takes them with a LaunchConfig and the stream made here once.
    - Numba's built-in target binds the driver with ctypes: the arguments
      are ctypes values, and the call is the driver's cuLaunchKernel itself,
      the parameter array built once (Numba's `launch_kernel` rebuilds it and
      goes through its logging wrapper at every call:
      `benchmarks/launch_overhead.py` times both with the driver stubbed)."""
    from numba.cuda.cudadrv import driver

    if not hasattr(driver, "launch_kernel"):
        core = cuda_core()
        config = core.LaunchConfig(grid=grid, block=block, shmem_size=0)
        return DirectLaunch(name, core.launch, (driver._to_core_stream(0), config, cufunc.kernel, *prepared), keep,
                            via_cuda_core=True)
    dims, nv_binding = (grid, 1, 1, block, 1, 1), getattr(driver, "USE_NV_BINDING", False)
    if nv_binding or not hasattr(driver.driver.cuLaunchKernel, "__wrapped__"):
        stream = driver.binding.CUstream(0) if nv_binding else None
        return DirectLaunch(name, driver.launch_kernel, (cufunc.handle, *dims, 0, stream, prepared), keep)
    params = (ctypes.c_void_p * len(prepared))(*map(ctypes.addressof, prepared))
    launch = driver.driver.cuLaunchKernel.__wrapped__  # the driver's function, with Numba's argtypes
    return DirectLaunch(name, launch, (cufunc.handle, *map(ctypes.c_uint, (*dims, 0)), None, params, None),
                        (prepared, *keep))


def cuda_core():
    """NVIDIA's cuda.core, through which numba-cuda launches (under
    cuda.core.experimental before its 1.0)."""
    try:
        import cuda.core as core

        core.LaunchConfig  # noqa: B018 (before 1.0 the package holds only `experimental`)
    except (ImportError, AttributeError):
        import cuda.core.experimental as core
    return core


class LaunchMode(enum.Enum):
    """How a run queues its kernels: MINIDLC_CUDA_LAUNCH, default graph."""

    GRAPH = "graph"  # every launch captured once into a CUDA graph, which a run replays with one call
    DIRECT = "direct"  # each launch with its arguments prepared once (`DirectLaunch`)
    DISPATCHER = "dispatcher"  # each launch through Numba's dispatcher (what Numba does; for comparison)


def launch_mode() -> LaunchMode:
    """MINIDLC_CUDA_LAUNCH as a LaunchMode (read at each compile, so a
    benchmark may compare the modes in one process)."""
    value = os.environ.get("MINIDLC_CUDA_LAUNCH", LaunchMode.GRAPH.value)
    try:
        return LaunchMode(value)
    except ValueError:
        raise ValueError(f"MINIDLC_CUDA_LAUNCH={value!r}: expected one of "
                         f"{', '.join(m.value for m in LaunchMode)}") from None


def graph_replay(calls: list, cuda) -> Callable[[], None] | None:
    """A run's launches as one CUDA graph: captured once here, then each run
    is one `Graph.launch` from Python instead of a launch a kernel (a model at
    batch 1 is launch-bound: the GPU finishes a kernel before Python has
    queued the next). This is what torch.compile's "reduce-overhead" mode
    does. Only where every call is a launch through cuda.core (numba-cuda; a
    model with a host step, or Numba's built-in target, launches kernel by
    kernel), and the graph replays on the stream the launches used, so the
    copies in and out stay ordered around it. Kernel arguments are captured
    by value: they point into the arena and the weights, which live as long
    as the executable. None, with a warning, where capture fails (a driver
    older than CUDA 12.3 cannot capture a lazily loaded kernel's first
    launch, say).
    The capture is thread-local: no other thread's CUDA calls can spoil it,
    and Numba's deferred frees, which would (a cuMemFree while this thread
    captures), wait until it is over."""
    if not calls or not all(isinstance(c, DirectLaunch) and c.via_cuda_core for c in calls):
        return None
    core, builder = cuda_core(), None
    try:
        device = core.Device()
        device.set_current()  # (the context Numba made current: cuda.core's Device then knows it)
        with cuda.defer_cleanup():
            builder = device.create_graph_builder().begin_building("thread_local")
            for call in calls:
                call.launch(builder.stream, *call.args[1:])
            graph = builder.end_building().complete()
    except Exception as e:  # an older cuda.core, or a driver that cannot capture: launch one by one
        if builder is not None:
            _end_capture(builder)
        _warn_once(f"cuda: launching kernel by kernel, not as one CUDA graph ({type(e).__name__}: {e})")
        return None
    stream = calls[0].args[0]
    return functools.partial(graph.launch, stream)


def _end_capture(builder) -> None:
    """End a capture that failed part way, so that this thread may use CUDA
    again (the builder's own `end_building` raises on an invalidated one)."""
    with contextlib.suppress(Exception):  # (not capturing any more, or never began: nothing to end)
        from cuda.bindings import driver as cu

        cu.cuStreamEndCapture(builder.stream.handle)


def launcher(fn, launch: Launch, arrays: list) -> Callable[[], None]:
    """A call that queues one launch. On a GPU the kernel is compiled now
    (not at the first run), and its arguments are prepared once: each run
    then launches with no dispatcher (`DirectLaunch`), unless
    MINIDLC_CUDA_LAUNCH=dispatcher (`LaunchMode`)."""
    if simulated():
        configured = fn[launch.grid, launch.block]
        return lambda: configured(*arrays)
    import numba

    signature = tuple(numba.typeof(a) for a in arrays)
    fn.compile(signature)
    if launch_mode() is not LaunchMode.DISPATCHER:
        try:
            kernel = fn.overloads[signature]
            prepared, writeback = [], []
            for ty, value in zip(kernel.argument_types, arrays):
                kernel._prepare_args(ty, value, 0, writeback, prepared)
            return driver_launch(launch.name, kernel._codelibrary.get_cufunc(), launch.grid, launch.block, prepared,
                                 (arrays,))
        except Exception as e:  # another Numba CUDA version: its dispatcher still works
            _warn_once(f"cuda: launching through Numba's dispatcher, tens of microseconds a launch: this Numba CUDA "
                       f"has no launch minidlc knows ({type(e).__name__}: {e})")
    configured = fn[launch.grid, launch.block]  # (Numba warns here of grids under 128 blocks: a small model's are)
    return lambda: configured(*arrays)


@functools.cache
def _warn_once(message: str) -> None:
    """A warning each distinct message once (not once per launch of a model's hundred)."""
    log.warning(message)


def time_calls(cuda, calls: list[Callable[[], None]]) -> float:
    """Seconds the GPU takes for `calls` queued alone, by CUDA events (on the
    simulator, whose events read 0, by the host's clock: Python's time)."""
    if simulated():
        start = time.perf_counter()
        for call in calls:
            call()
        return time.perf_counter() - start
    start, end = cuda.event(), cuda.event()
    start.record()
    for call in calls:
        call()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def signatures(launches: list[Launch]) -> dict[str, list[str]]:
    """Each launch's function -> its parameters' dtypes, as they lie on the device."""
    return {launch.name: [bits_dtype(np.dtype(DTYPES[p.dtype])).str for p in launch.kernel.params]
            for launch in launches}


PARALLEL_COMPILE_MIN = 8  # fewer kernels than this compile in the calling process


def compile_in_parallel(module, kernels: dict[str, list[str]], minimum: int = PARALLEL_COMPILE_MIN) -> None:
    """Numba CUDA compiles a kernel in a second or several (a tiled GEMM: 5 to
    8 s), one at a time (ResNet-50: minutes). With many `kernels` (function
    name -> its parameters' dtypes, `signatures`), worker processes compile
    them (each its share) into Numba's disk cache; the caller then only
    loads them.
    Workers are spawned, not forked: a forked child cannot use CUDA. With
    fewer than `minimum` kernels, starting workers costs more than it saves."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = min(os.cpu_count() or 1, -(-len(kernels) // 2))  # two kernels a worker, or fewer
    if len(kernels) < minimum or workers < 2 or cache.directory("numba") is None:
        return
    log.info("cuda: compiling %d kernels in %d processes", len(kernels), workers)
    jobs = list(kernels.items())
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_compile_one, [(module.__file__, module.__name__, name, dtypes) for name, dtypes in jobs]))
    except Exception as e:  # the caller compiles what is missing, one at a time
        log.warning("cuda: compiling in worker processes failed (%s); compiling here instead", e)


_WORKER_MODULES: dict[str, object] = {}


def _compile_one(job: tuple[str, str, str, list[str]]) -> None:
    """In a worker: compile one kernel of the module at `path` (imported under
    the caller's module name, which Numba's cache index records)."""
    import importlib.util

    import numba

    path, name, kernel, dtypes = job
    if name not in _WORKER_MODULES:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _WORKER_MODULES[name] = module
    getattr(_WORKER_MODULES[name], kernel).compile(tuple(numba.from_dtype(np.dtype(d))[::1] for d in dtypes))


def build(program: LoopProgram) -> CudaExecutable:
    return CudaExecutable(program)
