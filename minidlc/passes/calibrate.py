"""Calibration: the range of each activation on representative data.

Post-training quantization maps a float range [lo, hi] onto 256 integer
levels. Weights are known, so their range is exact; activations are not, so
the reference interpreter runs over calibration batches and each method
turns what it saw into a range:

    minmax      the smallest and largest value seen: nothing clips, but one
                outlier stretches the steps for every other value
    percentile  |x| up to its p-th percentile (99.99 by default): the rare
                tail clips, the bulk gets finer steps
    entropy     the clipping threshold whose quantized histogram loses the
                least information: the smallest KL divergence between the
                histogram of |x| and its 128- (or 256-) level version, as
                TensorRT and onnxruntime calibrate

The histogram methods need the largest |x| first, so they run the data twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from ..ir import Graph, interpret

BINS = 2048  # histogram bins over [0, max |x|]


class Method(str, Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"


@dataclass
class Observed:
    """What calibration saw of one tensor."""

    lo: float = np.inf
    hi: float = -np.inf
    hist: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))

    @property
    def amax(self) -> float:
        return max(abs(self.lo), abs(self.hi))


def observe(graph: Graph, batches, names: set[str], method: Method) -> dict[str, Observed]:
    """Run `batches` (lists of input arrays, in graph input order) and record
    the tensors named in `names`."""
    seen = {name: Observed() for name in names}

    def minmax(v, a):
        if v.name in seen and a.size:
            o = seen[v.name]
            o.lo, o.hi = min(o.lo, float(a.min())), max(o.hi, float(a.max()))

    def histogram(v, a):
        if v.name in seen and seen[v.name].amax > 0:
            o = seen[v.name]
            o.hist += np.histogram(np.abs(a), BINS, (0.0, o.amax))[0]

    steps = [minmax] if method == Method.MINMAX else [minmax, histogram]
    for record in steps:
        for batch in batches:
            for v, a in zip(graph.inputs, batch):  # the interpreter reports computed values only
                record(v, a)
            interpret(graph, batch, on_value=record)
    return seen


def calibrated_range(o: Observed, method: Method, percentile: float, levels: int) -> tuple[float, float]:
    """The range [lo, hi] to quantize a tensor to, by `method`."""
    if not np.isfinite(o.lo):
        return 0.0, 0.0
    if method == Method.MINMAX or o.amax == 0:
        return o.lo, o.hi
    width = o.amax / BINS
    if method == Method.PERCENTILE:
        cdf = np.cumsum(o.hist) / max(o.hist.sum(), 1)
        threshold = (int(np.searchsorted(cdf, percentile / 100.0)) + 1) * width
    else:
        threshold = (entropy_bins(o.hist, levels) + 0.5) * width
    return max(o.lo, -threshold), min(o.hi, threshold)


def entropy_bins(hist: np.ndarray, levels: int, stride: int = 8) -> int:
    """The number of histogram bins to keep (values past them clip) that
    minimizes KL(P || Q): P the kept bins with the clipped tail added to the
    last one, Q those bins merged into `levels` levels and spread back over
    the bins that were non-empty."""
    hist = hist.astype(np.float64)
    best, best_kl = len(hist), np.inf
    for i in range(levels, len(hist) + 1, stride):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        starts = (np.arange(levels) * i) // levels
        nonzero = hist[:i] > 0
        totals = np.add.reduceat(hist[:i], starts)
        counts = np.add.reduceat(nonzero.astype(np.float64), starts)
        level_of = np.repeat(np.arange(levels), np.diff(np.append(starts, i)))
        q = np.where(nonzero, totals[level_of] / np.maximum(counts[level_of], 1), 0.0)
        kl = _kl(p, q)
        if kl < best_kl:
            best, best_kl = i, kl
    return best


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p, q = p / max(p.sum(), 1e-30), q / max(q.sum(), 1e-30)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
