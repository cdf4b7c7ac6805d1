"""Low-rank factorization: a layer's weight matrix replaced by two thin ones.

A MatMul or Gemm computes x @ B with a constant K x N matrix B. Its singular
value decomposition B = U S V^T, cut to the r largest singular values, is
the closest rank-r matrix to B (the Eckart-Young theorem), and it splits the
product in two:

    x @ B  ≈  (x @ U_r S_r) @ V_r^T        a K x r product, then an r x N one

r * (K + N) weights and multiply-adds per row instead of K * N: a saving
only where r * (K + N) < K * N. A Gemm keeps its alpha, beta and bias on
the second product. A Conv (group=1) with weight W of shape (M, C, *k)
multiplies every input patch by W as an M x (C * prod(k)) matrix, so the
same split makes a Conv with r output channels (weight S_r V_r^T as
(r, C, *k), the original strides, pads and dilations) followed by a 1x1 Conv
(weight U_r, with the original bias): channel decomposition.

    low-rank-matmul  MatMul(x, W)           -> MatMul(MatMul(x, U_r S_r), V_r^T)
    low-rank-gemm    Gemm(x, W, C)          -> Gemm(MatMul(x, U_r S_r), V_r^T, C)
    low-rank-conv    Conv(x, W, b)          -> Conv(Conv(x, S_r V_r^T), U_r, b), the second 1x1

The rank: the smallest r whose singular values keep `energy` of the sum of
all their squares (B_r then differs from B by at most sqrt(1 - energy) of
B's Frobenius norm), or `rank` when given. Singular values below f32's rounding
(numpy.linalg.matrix_rank's threshold) count as zero, so energy=1.0 finds a
matrix's exact rank. The SVD runs in float64, rounded once to the weight
dtype. Each decomposition, and each layer where the rank does not pay, goes
to the rewrite trace (--trace-rewrites); `chosen` lists the last run's.

Limits. This approximates: the error a layer makes grows as energy falls,
and how much that costs the network's accuracy its weights do not say, so it
is judged on data. Trained weights often have decaying spectra; random ones
(the demo models) are flat and need nearly full rank, which does not pay.
Methods that compress a lot fine-tune the factors afterwards to win the
accuracy back; minidlc does not train.

Run it after fuse-layers (so conv+BN weights are folded first) and before fuse:
    -p 'fold,dce,cse,simplify,fuse-layers,low-rank{energy=0.99},fuse'
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Node
from ..ir.types import FLOAT_DTYPES
from .manager import Tolerance, register_pass
from .quantize import layer_name
from .rewrite import Const, Match, Pat, RewritePass, Rule, all_of


@dataclass(frozen=True)
class Choice:
    """The rank chosen for one layer, and what it keeps and costs."""

    layer: str
    op: str
    rank: int
    full_rank: int
    kept_energy: float
    params_before: int
    params_after: int

    def __str__(self) -> str:
        return (f"rank {self.rank} of {self.full_rank}, {self.kept_energy:.1%} of the energy, "
                f"{self.params_before} -> {self.params_after} weights")


def truncated_svd(b: np.ndarray, energy: float, rank: int = 0) -> tuple[int, float, np.ndarray, np.ndarray]:
    """(r, kept energy, P, Q) with b ≈ P @ Q, P = U_r S_r (K x r) and Q = V_r^T (r x N)."""
    u, s, vt = np.linalg.svd(b.astype(np.float64), full_matrices=False)
    kept = np.cumsum(s ** 2) / max(np.sum(s ** 2), np.finfo(np.float64).tiny)
    if rank:
        r = min(rank, len(s))
    else:
        nonzero = int(np.sum(s > s[0] * max(b.shape) * np.finfo(np.float32).eps))
        r = max(1, min(int(np.searchsorted(kept, energy)) + 1, nonzero))
    return r, float(kept[r - 1]), u[:, :r] * s[:r], vt[:r]


def _weight_matrix(node: Node, w: np.ndarray) -> np.ndarray:
    """The layer's weight as the K x N matrix B of x @ B (for a Conv, x is an input patch)."""
    if node.op == "Conv":
        return w.reshape(w.shape[0], -1).T
    return w.T if node.op == "Gemm" and node.attrs["transB"] else w


def _not_trans_a(graph: Graph, m: Match) -> str | None:
    return "transA=1: the input, not the weight, is transposed" if m.root.attrs["transA"] else None


def _one_group(graph: Graph, m: Match) -> str | None:
    group = m.root.attrs["group"]
    return f"group={group}: only a plain convolution is one matrix product" if group != 1 else None


@register_pass
class LowRank(RewritePass):
    name = "low-rank"
    tolerance = Tolerance(rtol=0.3, atol=0.3,
                          why="truncates singular values: each factored weight is off by up to sqrt(1 - energy) of "
                              "its norm, and the errors add up through the layers (the digits CNN's logits move by "
                              "5% of their largest value at energy 0.95; the random-weight demo models, whose flat "
                              "spectra pay only lower, by up to a third at 0.9); accuracy is judged on data")

    def __init__(self, energy: float = 0.99, rank: int = 0, layers: tuple = ()):
        if not 0 < energy <= 1:
            raise ValueError(f"energy must be in (0, 1], got {energy}")
        if rank < 0:
            raise ValueError(f"rank must be >= 0 (0: choose by energy), got {rank}")
        self.energy, self.rank, self.layers = energy, rank, set(layers)
        self.rules = [
            Rule("low-rank-matmul", Pat("MatMul", ("x", Const("w"))), self._split_product, self._pays),
            Rule("low-rank-gemm", Pat("Gemm", ("x", Const("w"), "...")), self._split_product,
                 all_of(_not_trans_a, self._pays)),
            Rule("low-rank-conv", Pat("Conv", ("x", Const("w"), "...")), self._split_conv,
                 all_of(_one_group, self._pays)),
        ]
        super().__init__()
        self.chosen: list[Choice] = []  # the layers the last run factored
        self._plans: dict[Node, tuple[Choice, np.ndarray, np.ndarray]] = {}  # one SVD per layer and run
        self._made: set[Node] = set()  # the factors: never factored again

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        unknown = self.layers - {layer_name(n) for n in graph.nodes}
        if unknown:
            raise ValueError(f"low-rank: no layer named {sorted(unknown)}")
        self.chosen, self._plans, self._made = [], {}, set()
        return super().run(graph)

    def describe(self) -> str:
        """What the last run did, a line per layer it weighed."""
        factored = {c.layer for c in self.chosen}
        width = max([len(c.layer) for c, _, _ in self._plans.values()] + [5])
        lines = [f"{'layer':<{width}}  {'op':<6} what"]
        for c, _, _ in self._plans.values():
            verdict = "factored" if c.layer in factored else "left alone: the two factors would not be smaller"
            lines.append(f"{c.layer:<{width}}  {c.op:<6} {c}; {verdict}")
        return "\n".join(lines)

    def _plan(self, m: Match) -> tuple[Choice, np.ndarray, np.ndarray]:
        node = m.root
        if node not in self._plans:
            b = _weight_matrix(node, m.const("w"))
            r, kept, p, q = truncated_svd(b, self.energy, self.rank)
            k, n = b.shape
            self._plans[node] = Choice(layer_name(node), node.op, r, min(k, n), kept, k * n, r * (k + n)), p, q
        return self._plans[node]

    def _pays(self, graph: Graph, m: Match) -> str | None:
        """A check: the layer is wanted, and its factors hold fewer weights than it."""
        node, w = m.root, m["w"]
        if node in self._made:
            return "already a factor of a low-rank split"
        if self.layers and layer_name(node) not in self.layers:
            return "not in the layers option"
        if w.type.dtype not in FLOAT_DTYPES:
            return f"the weight is {w.type}; the pass factors {', '.join(FLOAT_DTYPES)} weights"
        if node.op == "MatMul" and w.type.rank != 2:
            return f"the weight {w.type} is not one matrix"
        if graph.use_counts()[w] > 1:
            return f"%{w.name} is shared with other layers, so it would stay besides the factors"
        choice = self._plan(m)[0]
        if choice.params_after >= choice.params_before:
            return f"{choice}: does not pay (r·(K+N) >= K·N)"
        return None

    def _accept(self, m: Match) -> tuple[int, np.ndarray, np.ndarray]:
        """(rank, P, Q) of the matched layer in its weight's dtype, reported to `chosen` and the trace."""
        choice, p, q = self._plans[m.root]
        self.chosen.append(choice)
        m.explain(str(choice))
        dt = m["w"].type.np_dtype
        return choice.rank, p.astype(dt), q.astype(dt)

    def _split_product(self, graph: Graph, m: Match):
        _, p, q = self._accept(m)
        node = m.root
        h = m.add("MatMul", [m["x"], m.constant(p, "factor1")])
        second = m.constant(q, "factor2")
        if node.op == "MatMul":
            y = m.add("MatMul", [h, second])
        else:
            y = m.add("Gemm", [h, second, *node.inputs[2:]], dict(node.attrs, transB=0))
        self._made.update((h.producer, y.producer))
        return y

    def _split_conv(self, graph: Graph, m: Match):
        r, p, q = self._accept(m)
        node = m.root
        out_channels, in_channels, *kernel = m["w"].type.shape
        h = m.add("Conv", [m["x"], m.constant(p.T.reshape(r, in_channels, *kernel), "factor1")], dict(node.attrs))
        pointwise = q.T.reshape(out_channels, r, *(1 for _ in kernel))
        y = m.add("Conv", [h, m.constant(pointwise, "factor2"), *node.inputs[2:]])
        self._made.update((h.producer, y.producer))
        return y
