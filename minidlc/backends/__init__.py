"""Backends turn an optimized graph into something that runs.

Each backend module has `build(graph, **options) -> Executable`, where an
Executable has `run(arrays) -> list[np.ndarray]` (one array per graph input,
already validated, in graph order) and `emit(stage) -> str` for the stages
it owns (`loops`, `llvm`, `asm`, `numba`, ...).
"""
from __future__ import annotations

import importlib

TARGETS = ("reference", "llvm", "numba", "cuda")


def get_backend(target: str):
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    try:
        return importlib.import_module(f"{__name__}.{target}" if target != "numba" else f"{__name__}.numba_cpu")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith(__name__):
            raise ValueError(f"target {target!r} is not implemented yet") from None
        raise
