"""Backends: each one builds an executable from the loop program and owns its memory.

A backend is declared once, as a `Backend` in `BACKENDS`:
- its name (the `target` of `minidlc.compile` and the CLI's `--target`);
- the stages it can print beyond the common ones (graph, fused, loops, dot, svg, onnx);
- its options, with type, default and help (the CLI makes a flag of each);
- whether it runs loop-IR kernels (then fusion only groups ops that lower,
  and the program's kernels are scheduled with `schedule`);
- the module whose `build(program, **options)` makes the executable. It is
  imported on first use, so `import minidlc` imports neither llvmlite nor Numba.

An executable has `run(arrays) -> list[np.ndarray]` (one array per graph
input, already validated, in graph order) and `emit(stage) -> str` for its
own stages.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from ..ir import Node
from ..loops.gpu_schedule import gpu_schedule
from ..loops.lower import CpuChoices, Device
from ..loops.program import LoopProgram, Schedule, lowering_failure
from ..loops.schedule import default_schedule

COMMON_STAGES = ("graph", "fused", "loops", "dot", "svg", "onnx")  # every target prints these (CompiledModel.emit)


@dataclass(frozen=True)
class Option:
    """A backend option: `build(program, name=value)`, and the CLI flag --name."""

    name: str
    type: type
    help: str
    minimum: int | None = None  # for integers

    def check(self, value, target: str):
        if value is None:  # the backend's default
            return
        if not isinstance(value, self.type) or isinstance(value, bool) != (self.type is bool):
            raise TypeError(f"target {target}: option {self.name} takes a {self.type.__name__}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"target {target}: option {self.name} must be at least {self.minimum}, got {value}")


@dataclass(frozen=True)
class Backend:
    name: str
    help: str
    module: str                       # holds build(program, **options)
    stages: tuple[str, ...] = ()      # what its executable's emit() prints
    options: tuple[Option, ...] = ()
    runs_kernels: bool = True         # False: it interprets the graph and lowers nothing
    schedule: Schedule = default_schedule
    device: Device = Device.CPU       # what its kernels are lowered for
    cpu: CpuChoices = CpuChoices()    # what its code generator asks of the CPU lowering
    tuning: str | None = None         # the module whose tuned_tiles() are GPU tiles tuned on this machine's device

    def build(self, program: LoopProgram, **options):
        known = {o.name: o for o in self.options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            takes = ", ".join(f"{o}=" for o in known) or "no options"
            raise TypeError(f"target {self.name} has no option(s) {unknown}; it takes {takes}")
        for name, value in options.items():
            known[name].check(value, self.name)
        return importlib.import_module(self.module).build(program, **options)

    def can_lower(self, node: Node) -> bool:
        """Whether a kernel of this target can compute `node` (fusion asks)."""
        return not self.runs_kernels or lowering_failure(node, self.device) is None

    def tiles(self) -> dict:
        """The tiles tuned on this machine's device, which lowering takes over its
        heuristic's (see backends/cuda/tuning.py; GemmShape.key -> GpuTile)."""
        return importlib.import_module(self.tuning).tuned_tiles() if self.tuning else {}

    def program(self, graph, tiles: dict | None = None) -> LoopProgram:
        """The loop program of an optimized graph, scheduled for this target,
        with `tiles` tuned for the device (default: `self.tiles()`)."""
        return LoopProgram(graph, self.schedule, self.device, self.cpu,
                           self.tiles() if tiles is None else tiles)


THREADS = Option("threads", int, f"threads to run on (default: all {os.cpu_count()} cores; numba: at most its "
                                 "pool, NUMBA_NUM_THREADS)", minimum=1)
BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    BACKENDS[backend.name] = backend
    return backend


register_backend(Backend("reference", "NumPy interpreter of the graph: slow, simple, the oracle",
                         f"{__name__}.reference", runs_kernels=False))
register_backend(Backend("llvm", "loop IR -> LLVM IR (llvmlite), JIT-compiled for this CPU",
                         f"{__name__}.llvm", stages=("llvm", "asm"), options=(THREADS,),
                         cpu=CpuChoices(wide_blocks=True)))
# numba copies a conv's input padded: its pipeline compiles the tested form's larger
# kernels (a copy of the register block per border block) 4x slower and runs them 2x
# slower (the demo convnet: 190 s and 8.8 ms, against 43 s and 4.3 ms); and it ran
# the wide register blocks 15 to 23% slower (squeezenet, convnet, mlp, tfblock)
register_backend(Backend("numba", "loop IR -> Python source compiled by Numba (njit, prange)",
                         f"{__name__}.numba", stages=("numba",), options=(THREADS,),
                         cpu=CpuChoices(copy_padding=True)))
register_backend(Backend("cuda", "loop IR scheduled for a GPU -> Numba CUDA kernels over one device arena "
                         "(NUMBA_ENABLE_CUDASIM=1: Numba's simulator, no GPU needed)",
                         f"{__name__}.cuda", stages=("cuda", "ptx"), schedule=gpu_schedule, device=Device.GPU,
                         tuning=f"{__name__}.cuda.tuning"))


def get_backend(target: str) -> Backend:
    if target not in BACKENDS:
        raise ValueError(f"unknown target {target!r}; choose one of: {', '.join(BACKENDS)}")
    return BACKENDS[target]


def all_stages() -> list[str]:
    """Every stage some target can print, common ones first."""
    return list(dict.fromkeys(COMMON_STAGES + tuple(s for b in BACKENDS.values() for s in b.stages)))


def all_options() -> dict[str, tuple[Option, list[str]]]:
    """Each option name -> (the option, the targets that take it)."""
    out: dict[str, tuple[Option, list[str]]] = {}
    for b in BACKENDS.values():
        for o in b.options:
            out.setdefault(o.name, (o, []))[1].append(b.name)
    return out


__all__ = ["Backend", "BACKENDS", "COMMON_STAGES", "Option", "all_options", "all_stages", "get_backend",
           "register_backend"]
