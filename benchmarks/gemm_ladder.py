"""The GEMM schedule ladder: one 1024^3 f32 matmul, step by step, next to numpy.

    python benchmarks/gemm_ladder.py [--size 1024] [--threads N]

Each step is one loop-IR kernel, compiled by both CPU backends (llvm and numba):

naive       for i, j, k: C[i,j] += A[i,k] * B[k,j]
tiled       split i and j by 32, reorder to (i_o, j_o, k, i_i, j_i): blocks that stay in cache
vectorized  + the 32-wide j_i loop as vector code, i_i unrolled by 4
packed      the lowering's kernel: B packed at compile time, a 6x16 block of C in registers, FMA
parallel    + the row blocks on all threads
Each line prints, per backend, ms, GFLOP/s and the fraction of numpy's
GFLOP/s measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))
import minidlc  # noqa: E402
from minidlc.backends.llvm import compile_kernel as llvm_kernel  # noqa: E402
from minidlc.backends.numba import compile_kernel as numba_kernel  # noqa: E402
from minidlc.ir import Graph, TensorType  # noqa: E402
from minidlc.loops.ir import Const, For, Kernel, Load, Param, Store, Var, add, const, mul, seq  # noqa: E402
from minidlc.loops.schedule import reorder, split, unroll, vectorize  # noqa: E402


def naive(n: int) -> Kernel:
    i, j, k, i0, j0 = (Var(x) for x in ("i", "j", "k", "i0", "j0"))
    zero = For(i0, const(n), For(j0, const(n), Store("C", add(mul(i0, const(n)), j0), Const(0.0, "f32"))))
    cij = add(mul(i, const(n)), j)
    fma = Store("C", cij, add(Load("C", cij, "f32"), mul(Load("A", add(mul(i, const(n)), k), "f32"),
                                                         Load("B", add(mul(k, const(n)), j), "f32"))))
    return Kernel("gemm", (Param("A", "f32", n * n), Param("B", "f32", n * n), Param("C", "f32", n * n)),
                  seq(zero, For(i, const(n), For(j, const(n), For(k, const(n), fma)))))


def tiled(n: int) -> Kernel:
    k = naive(n)
    body = split(split(k.body, "i", 4), "j", 32)
    return Kernel(k.name, k.params, reorder(body, ["i_o", "j_o", "k", "i_i", "j_i"]))


def vectorized(n: int) -> Kernel:
    k = tiled(n)
    return Kernel(k.name, k.params, unroll(vectorize(k.body, "j_i"), "i_i"))


def timeit(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=20)  # a team of threads runs its first few slowly
    args = ap.parse_args()
    n = args.size
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    c = np.zeros((n, n), np.float32)
    flops = 2 * n ** 3

    g = Graph()
    g.outputs = [g.add("MatMul", [g.add_input("a", TensorType((n, n))), g.constant(b, "b")]).output]
    backends = {"llvm": llvm_kernel, "numba": numba_kernel}
    rows: dict[str, dict[str, float]] = {}
    for backend, compile_kernel in backends.items():
        for name, make in (("naive", naive), ("tiled", tiled), ("vectorized", vectorized)):
            run = compile_kernel(make(n))
            rows.setdefault(name, {})[backend] = timeit(lambda: run([a, b, c]), 1 if name == "naive" else args.repeat)
            np.testing.assert_allclose(c, a @ b, rtol=1e-3, atol=1e-2)
        packed = minidlc.compile(g, target=backend, threads=1).executable
        par = minidlc.compile(g, target=backend, threads=args.threads).executable
        for name, exe in (("packed", packed), (f"parallel ({args.threads} threads)", par)):
            rows.setdefault(name, {})[backend] = timeit(lambda: exe.run([a]), args.repeat)
            np.testing.assert_allclose(exe.run([a])[0], a @ b, rtol=1e-3, atol=1e-2)
    np_t = timeit(lambda: a @ b, args.repeat)
    np_gflops = flops / np_t / 1e9
    print(f"GEMM {n}x{n}x{n} f32; numpy: {np_t * 1e3:.1f} ms, {np_gflops:.1f} GFLOP/s")
    print(f"{'step':<24}" + "".join(f"{b + ' ms':>12}{'GFLOP/s':>10}{'of numpy':>10}" for b in backends))
    for name, times in rows.items():
        cells = "".join(f"{times[b] * 1e3:>12.1f}{flops / times[b] / 1e9:>10.1f}{flops / times[b] / 1e9 / np_gflops:>10.0%}"
                        for b in backends)
        print(f"{name:<24}{cells}")

if __name__ == "__main__":
    main()
