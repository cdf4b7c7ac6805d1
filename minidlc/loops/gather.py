"""Gather's check: its indices may be computed at run time.

An index i into an axis of size n means i (0 <= i < n) or i + n (-n <= i < 0);
any other is an error (ONNX says so, and NumPy's take raises). A kernel
cannot raise, so it reports: before anything else, the kernel checks every
index and stores 1 into its *check flag* (a one-element buffer, binding role
"check", `Lowerer.check`) when one is out of range. The gather itself is an
ordinary rule (rules.py), inlined into its readers, that reads at the index
clamped into range, so no read strays outside the data whatever the indices
hold. After each run the executable looks at the flags and raises, naming
the node (backends/host.py). Indices that are constants need no check when
they are valid (and when not, fail every run, as the reference does).
"""
from __future__ import annotations

import numpy as np

from ..ir import Node
from .ir import INDEX, Binary, Compare, Const, If, Stmt, Store, cast, const, loop_nest
from .lower import CHECKS, Lowerer


def _gather_check(lw: Lowerer, node: Node) -> Stmt | None:
    data, indices = node.inputs
    n = data.type.shape[node.attrs["axis"] % data.type.rank]
    message = f"Gather %{node.outputs[0].name}: an index is out of range for an axis of {n} (valid: {-n} to {n - 1})"
    known = lw.group.constants.get(id(indices))
    if known is not None and np.all((known >= -n) & (known < n)):
        return None  # constant and valid: nothing to check
    at = lw.vars(indices.type.rank, "q")
    i = cast(lw.read(indices, at), INDEX)
    outside = Binary("or", Compare("<", i, const(-n)), Compare(">=", i, const(n)))
    return loop_nest(at, list(indices.type.shape), If(outside, Store(lw.check(message), const(0), Const(1, "i32"))))


CHECKS["Gather"] = _gather_check
