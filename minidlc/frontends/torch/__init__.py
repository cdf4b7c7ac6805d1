"""PyTorch frontend: an nn.Module becomes a typed graph IR, through torch.export.

    graph = load_torch(model, (torch.randn(1, 3, 32, 32),))
    graph = load_torch_factory("examples/torch_models.py:make_convnet", [(1, 3, 32, 32)])

Steps: export the module in eval mode with torch.export (static shapes from
the example inputs); decompose to core ATen, except the composite ops that
map onto one IR op each (linear, matmul, layer_norm, ...: see `loader.KEEP`);
check every op has a converter (all missing ops reported at once, each with
its source line); then convert node by node. Parameters and buffers become
Constant nodes named after their attribute path (`layer1.0.conv1.weight`);
each node's location is the line of the model's Python code that made it.

PyTorch is optional: this package imports it only when a model is loaded.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

from ...ir import Graph


class FactoryError(ValueError):
    """A `model.py:factory` spec names no function, or the function returns no nn.Module."""


def is_torch_spec(path: str) -> bool:
    """`path/to/model.py` or `path/to/model.py:factory` names a PyTorch model."""
    return path.endswith(".py") or ".py:" in path


def import_file(path: str) -> ModuleType:
    """Run a Python file as a module (it need not be on sys.path)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    name = "minidlc_user_" + Path(path).stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up there
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)  # the file may import its neighbours, as under `python file.py`
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's code: report it as theirs, in one line (--debug shows the traceback)
        raise FactoryError(f"{path} failed to import: {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(folder)
    return module


def import_factory(spec: str) -> Callable:
    """The function `factory` of `path/to/model.py:factory` (default `make_model`)."""
    path, _, name = spec.rpartition(":") if ".py:" in spec else (spec, "", "")
    name = name or "make_model"
    module = import_file(path)
    factory = getattr(module, name, None)
    if not callable(factory):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise FactoryError(f"{path} has no function {name!r}; it defines: {', '.join(found) or 'nothing callable'}")
    return factory


def load_torch(module, example_inputs) -> Graph:
    """Convert an nn.Module traced on `example_inputs` (a tensor or a tuple of tensors)."""
    from .loader import load_torch as load

    return load(module, example_inputs)


def load_torch_factory(spec: str, input_shapes: list[tuple[int, ...]], seed: int = 0) -> Graph:
    """Build the module returned by the factory in `spec` and convert it,
    traced on random float32 inputs of `input_shapes` (one per input)."""
    try:
        import torch
    except ImportError:
        raise FactoryError(f"{spec} is a PyTorch model, but PyTorch is not installed "
                           "(pip install 'minidlc[torch]')") from None

    factory = import_factory(spec)
    try:
        module = factory()
    except Exception as e:
        raise FactoryError(f"{spec} raised {type(e).__name__}: {e}") from e
    if not isinstance(module, torch.nn.Module):
        raise FactoryError(f"{spec} returned a {type(module).__name__}, not a torch.nn.Module")
    generator = torch.Generator().manual_seed(seed)
    inputs = tuple(torch.randn(shape, generator=generator) for shape in input_shapes)
    return load_torch(module, inputs)


__all__ = ["FactoryError", "is_torch_spec", "import_file", "import_factory", "load_torch", "load_torch_factory"]
