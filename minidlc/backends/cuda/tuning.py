"""Tuning GEMM tiles on the GPU: time every candidate, keep the fastest.

Which tile computes a product fastest depends on the GPU (its multiprocessors,
registers, shared memory) as much as on the product, and a shape heuristic
(`gpu_gemm.choose_tile`) can only guess. `tune(program)` measures instead:
for each tiled product of the program (each `GemmShape`, once) it lowers the
step that holds it once per candidate tile (`gpu_gemm.candidate_tiles`),
compiles all the candidates together (in parallel, as a model's kernels
are), times each on random inputs by CUDA events, checks that its outputs
agree with those of the heuristic's tile (a tile that computes something
else is reported and never kept), and records the fastest for this GPU:

    $MINIDLC_CACHE/tuning/cuda-<GPU name>.json
    {"gpu": "NVIDIA H200",
     "tiles": {"1x1568x512x4608/9 f32": [128, 64, 18, 8, 8, 2], ...},  # GemmShape.key -> GpuTile
     "ms":    {"1x1568x512x4608/9 f32": {"128x64x18_8x8s2": 0.061, ...}}}  # what each agreeing candidate took

Later compiles for cuda on a GPU of that name lower with those tiles
(`Backend.tiles` -> `LoopProgram(tiles=...)`), and the compile cache's key
includes them. Records measured on GPUs we had are shipped with minidlc
(`tuned/cuda-<GPU name>.json`, as TVM ships TopHub's logs): on such a GPU a
compile takes their tiles untuned, and the user's own records override
them. Cache eviction and `minidlc cache clear` leave the records alone
(they are measured, not rebuilt); delete the file to forget them.
This is AutoTVM's search, or tinygrad's BEAM, made exhaustive over a small
space: a few dozen tiles at most per product, each kernel otherwise the
same. The step is timed whole (its epilogue too), as the model runs it. On
Numba's simulator the times are Python's: `tune` runs there (tests), but
records nothing unless asked to.
"""
from __future__ import annotations

import json
import logging
import re
import statistics
import sys
from dataclasses import astuple, dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from ...ir import DTYPES
from ...ir.types import FLOAT_DTYPES
from ...loops import gpu_gemm
from ...loops.gpu_gemm import GemmShape, GpuTile
from ...loops.lower import LoweredGroup
from ...loops.program import LoopProgram, StepKind
from ...passes.instruments import close
from ...passes.manager import Tolerance
from ...runtime import DeviceError
from .. import cache
from ..numba import load_module, record_cache_files
from ..numba.render import as_numba, bits_dtype
from . import RENDER_VERSION, compile_in_parallel, cuda_module, gpu_name, launcher, signatures, simulated, time_calls
from .render import render_module

log = logging.getLogger(__name__)
TIMED_S = 2e-3  # a round of a candidate's timing queues its launches for at least this long
SHIPPED = Path(__file__).parent / "tuned"  # records measured on GPUs we had (see the module's docstring)


@dataclass
class Trial:
    """One candidate tile of one product, what its step took, and whether
    its outputs agreed with those of the heuristic's tile (`_agree`): a
    candidate that computes something else is never recorded, however fast."""

    shape: GemmShape
    tile: GpuTile
    seconds: float
    agrees: bool = True


def _file_name(cuda) -> str:
    """The name of this GPU's records, in the cache and among the shipped ones."""
    name = re.sub(r"[^\w.-]+", "-", gpu_name(cuda))
    return f"cuda-{name}.json"


def records_path(cuda) -> Path | None:
    """This GPU's tuning records (None: no usable cache directory)."""
    folder = cache.directory(cache.TUNING)
    return None if folder is None else folder / _file_name(cuda)


def _read(path: Path | None, shipped: bool = False) -> dict:
    """The records at `path` (their tiles as GpuTiles); {} if there are none,
    or if they are damaged (with a warning: tuning again rewrites them).
    Records in the cache must be the user's own (`cache.trusted`); `shipped`
    ones are part of minidlc, as its code is."""
    if path is None or not path.is_file() or not (shipped or cache.trusted(path)):
        return {}
    try:
        records = json.loads(path.read_text())
        records["tiles"] = {key: GpuTile(*tile) for key, tile in records["tiles"].items()}
        return records
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        log.warning("minidlc: ignoring the damaged tuning records %s (%s)", path, e)
        return {}


def tuned_tiles() -> dict[str, GpuTile]:
    """The tiles tuned for this machine's GPU: shipped with minidlc for a GPU
    of its name, overridden by the user's own records (none without a GPU:
    the build says why)."""
    try:
        cuda = cuda_module()
    except DeviceError:
        return {}
    return {**_read(SHIPPED / _file_name(cuda), shipped=True).get("tiles", {}),
            **_read(records_path(cuda)).get("tiles", {})}


@dataclass
class Candidate:
    """A product of a program in one candidate tile: its step, so lowered."""

    shape: GemmShape
    tile: GpuTile
    lowered: LoweredGroup


def candidates(program: LoopProgram) -> list[Candidate]:
    """Each tiled product of `program` (the first step that holds it) lowered
    in each of its candidate tiles, products with one candidate left out.
    Needs no GPU (ptx_census.py compiles them all to PTX, as a check)."""
    counts = program.graph.use_counts()
    out: list[Candidate] = []
    seen: set[str] = set()
    for step in program.steps:
        for shape in (p.shape for p in step.lowered.gemms) if step.kind == StepKind.KERNEL else ():
            tiles = gpu_gemm.candidate_tiles(shape)
            if shape.key in seen or len(tiles) < 2:
                continue
            seen.add(shape.key)
            out += [Candidate(shape, tile, program.lower(step.node, f"{step.lowered.kernel.name}_{tile.label}",
                                                         counts, {**program.tiles, shape.key: tile}))
                    for tile in tiles]
    return out


def tune(program: LoopProgram, out=sys.stderr, record: bool | None = None) -> list[Trial]:
    """Time every candidate tile of every tiled product in `program` (lowered
    for cuda) and return the trials; record the fastest of each for this GPU
    (`record`; by default, unless on the simulator). Prints a line a product
    to `out`, and where the records went."""
    cuda = cuda_module()
    jobs = candidates(program)
    if not jobs:
        print("tune: no product here has more than one tile to choose from", file=out)
        return []
    products: dict[GemmShape, list[Candidate]] = {}
    for job in jobs:
        products.setdefault(job.shape, []).append(job)
    source, launches = render_module([job.lowered.kernel for job in jobs])
    module = load_module(source, RENDER_VERSION)
    print(f"tune: compiling {len(jobs)} candidates of {len(products)} products", file=out, flush=True)
    if not simulated():
        compile_in_parallel(module, signatures(launches), minimum=2)  # a tiled GEMM: seconds each
    rng = np.random.default_rng(0)
    results: list[tuple[Trial, list[Trial]]] = []  # (the fastest, all) of each product
    for i, (shape, its_jobs) in enumerate(products.items(), 1):
        shared: dict[tuple, object] = {}  # the product's inputs and weights, for all its candidates
        heuristic = gpu_gemm.choose_tile(shape)  # always a candidate: timed first, and the others must agree with it
        trials: dict[GpuTile, Trial] = {}
        for job in sorted(its_jobs, key=lambda job: job.tile != heuristic):
            arrays = [_array(cuda, b, rng, shared) for b in job.lowered.bindings]
            calls = [launcher(getattr(module, launch.name), launch, arrays)
                     for launch in launches if launch.kernel is job.lowered.kernel]
            trial = trials[job.tile] = Trial(shape, job.tile, _seconds(cuda, calls))
            got = [_host(a, b) for a, b in zip(arrays, job.lowered.bindings) if b.role == "output"]
            if job.tile == heuristic:
                want = got
            trial.agrees = all(_agree(g, w) for g, w in zip(got, want))
            if not trial.agrees:
                log.warning("tune: %s in %s tiles computes something else than in %s tiles: not recorded",
                            shape.key, job.tile.label, heuristic.label)
        mine = [trials[job.tile] for job in its_jobs]
        best = min((t for t in mine if t.agrees), key=lambda t: t.seconds)
        was = trials[heuristic]
        gain = "" if best is was else f" ({was.seconds / best.seconds:.2f}x faster than the heuristic's " \
                                      f"{was.tile.label})"
        times = ", ".join(f"{t.tile.label} {t.seconds * 1e3:.3f}" + ("" if t.agrees else " (WRONG)") for t in mine)
        print(f"tune {i}/{len(products)}: {shape.key}: {times} ms -> {best.tile.label}{gain}", file=out, flush=True)
        results.append((best, mine))
    if not simulated():
        record_cache_files(module)  # what Numba cached may be loaded by later processes
    if record is None and simulated():
        print("tune: on the simulator the times are Python's: nothing recorded", file=out)
    elif record is not False:
        path = _record(cuda, results)
        print(f"tune: recorded in {path}: compiles for this GPU now use them" if path else
              "tune: no usable cache directory: nothing recorded", file=out)
    return [t for _, mine in results for t in mine]


def _array(cuda, binding, rng, shared: dict):
    """A device array for a kernel parameter, on its own: inputs random
    floats (integers zero, always a valid index: a product of integer
    inputs is timed, but its tiles agree trivially), constants the weights.
    Inputs and constants are made once for all of a product's candidates
    (`shared`), outputs and scratch for each."""
    p = binding.param
    key = (binding.role, binding.index, p.name, p.size)
    if binding.role in ("input", "const") and key in shared:
        return shared[key]
    if binding.role == "const":
        a = cuda.to_device(as_numba(np.ascontiguousarray(binding.array).reshape(-1)))
    else:
        dtype = np.dtype(DTYPES[p.dtype])
        host = np.zeros(p.size, dtype)
        if binding.role == "input" and p.dtype in (*FLOAT_DTYPES, "bf16"):
            host = rng.uniform(-1, 1, p.size).astype(dtype)
        a = cuda.to_device(host.view(bits_dtype(dtype)))
    if binding.role in ("input", "const"):
        shared[key] = a
    return a


def _host(array, binding) -> np.ndarray:
    """A kernel's output, copied from the device and viewed as its dtype."""
    return array.copy_to_host().view(np.dtype(DTYPES[binding.param.dtype]))


def _agree(got: np.ndarray, want: np.ndarray) -> bool:
    """Whether two tiles' outputs agree (`close`, as passes are checked):
    floats within a thousandth of their value plus a thousandth of the
    largest magnitude (at least 1), or two steps of a 16-bit float (split-K
    and the tiles' k slabs add the products in another order); integers
    within one step (a float epilogue may round the other way); booleans
    equal (a flipped one is another result)."""
    if want.dtype.kind == "b":
        return bool(np.array_equal(got, want))
    tol = 0.0 if want.dtype.kind in "iu" else max(1e-3, 2 * float(ml_dtypes.finfo(want.dtype).eps))
    return close(got, want, Tolerance(rtol=tol, atol=tol, int_steps=1, why="another tile's order of sums"))


def _seconds(cuda, calls, rounds: int = 5) -> float:
    """The median over rounds of a step's time, each round enough back-to-back
    runs to last TIMED_S (the simulator: one run, once)."""
    once = time_calls(cuda, calls)  # (also the warm-up)
    if simulated():
        return once
    reps = max(1, min(100, int(TIMED_S / max(once, 1e-6))))
    return statistics.median(time_calls(cuda, calls * reps) / reps for _ in range(rounds))


def _record(cuda, results: list[tuple[Trial, list[Trial]]]) -> Path | None:
    """Merge each product's fastest tile and its candidates' times (`results`:
    the fastest trial, all trials) into this GPU's records; where they are
    (None: no cache directory, or it cannot be written)."""
    path = records_path(cuda)
    if path is None:
        return None
    records = {"gpu": gpu_name(cuda), "tiles": {}, "ms": {}, **_read(path)}
    for best, mine in results:
        records["tiles"][best.shape.key] = best.tile
        records["ms"][best.shape.key] = {t.tile.label: round(t.seconds * 1e3, 4) for t in mine if t.agrees}
    return path if cache.write_atomic(path, _dumps(records).encode()) else None


def _dumps(records: dict) -> str:
    """Records as JSON, a tile's numbers on one line."""
    text = json.dumps({**records, "tiles": {key: astuple(tile) for key, tile in records["tiles"].items()}},
                      indent=1, sort_keys=True)
    return re.sub(r"\[\s+([^][]*?)\s+\]", lambda m: f"[{' '.join(m[1].split())}]", text)
