"""Backends turn an optimized graph into something that runs.

Each backend module has `build(graph, **options) -> Executable`, where an
Executable has `run(arrays) -> list[np.ndarray]` (one array per graph input,
already validated, in graph order) and `emit(stage) -> str` for the stages
it owns (`loops`, `llvm`, `asm`).
"""
from __future__ import annotations

import importlib

TARGETS = ("reference", "llvm")
PLANNED = ("numba", "cuda")  # in the design, not built yet


def get_backend(target: str):
    if target in PLANNED:
        raise ValueError(f"target {target!r} is not implemented yet; available: {', '.join(TARGETS)}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    return importlib.import_module(f"{__name__}.{target}")
