"""Compile every launch of some models' cuda programs to PTX for sm_90, with no
GPU, and count the instructions of each launch's hot loop.

    python benchmarks/ptx_census.py mlp,convnet,tfblock       # exits 77 when NVVM is missing
    python benchmarks/ptx_census.py resnet50 --batch 32 --only conv
    python benchmarks/ptx_census.py sgemm                     # bench_gpu.py's 4096^3 MatMul
    python benchmarks/ptx_census.py mlp:bf16                  # weights in bf16 (the mixed-precision pass)
    python benchmarks/ptx_census.py sgemm --tuning --only     # every tile `minidlc tune` would try

Two jobs, one compile:
- a check: the simulator runs kernels as Python, so it cannot tell whether
  Numba CUDA accepts the generated code (types, supported functions); NVVM
  can, and it needs no GPU. Any launch it rejects fails the run (CI runs it
  on the demo models, tests/test_cuda.py).
- a census, for sessions without a GPU: for each distinct launch, the loop
  (a backward branch in the PTX) that holds the most `fma` instructions, and
  what else that loop executes per iteration. In a tiled GEMM that is the
  k loop, and the share of FMAs among its instructions is what the index
  arithmetic, the shared-memory loads and the loop control leave for the
  arithmetic. The loop around it (a tiled GEMM's k slabs) adds what each
  slab costs besides (its loads into the shared tiles: for a conv, the
  padding tests and index arithmetic of A's elements). It is a static count
  of PTX (before ptxas), not a timing: it says where instructions go, and a
  GPU must say what that is worth. Where the CUDA toolkit's ptxas is
  installed, each launch also shows the registers a thread takes, how many
  blocks a multiprocessor then holds, and any spills to local memory.

Numba asks the current device's compute capability only to compile device
functions (support.py's): here we answer 9.0 ourselves.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    sys.exit("run without NUMBA_ENABLE_CUDASIM: this compiles for a real GPU")
import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402
from numba.cuda import dispatcher  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import minidlc  # noqa: E402
from minidlc.backends import get_backend  # noqa: E402
from minidlc.backends.cuda.render import render_module  # noqa: E402
from minidlc.backends.cuda.tuning import candidates  # noqa: E402
from minidlc.backends.numba import load_module  # noqa: E402
from minidlc.backends.numba.render import bits_dtype  # noqa: E402
from minidlc.demo_models import build_model  # noqa: E402
from minidlc.ir import DTYPES  # noqa: E402
from minidlc.loops.program import StepKind  # noqa: E402
from minidlc.passes.manager import PassContext, build_pipeline  # noqa: E402

CC = (9, 0)
SM_REGISTERS, SM_THREADS, SM_SHARED, SM_BLOCKS = 65536, 2048, 228 * 1024, 32  # an sm_90 multiprocessor's
BLOCK_SHARED_RESERVED = 1024  # shared memory the driver keeps per block
_LABEL = re.compile(r"^(\$L__BB\d+_\d+):$")
_BRANCH = re.compile(r"^(?:@!?%p\d+\s+)?bra(?:\.uni)?\s+(\$L__BB\d+_\d+);")


class _Hopper:
    compute_capability = CC


def hot_loop(ptx: str) -> tuple[Counter, int | None] | None:
    """The opcodes (by their first word: `fma`, `ld`, ...) of the PTX loop with
    the most FMAs (the innermost such loop on a tie), and how many instructions
    the loop around it adds per iteration of its own (in a tiled GEMM: a k
    slab's loads into the shared tiles; None: no loop around it); None if no
    loop has an FMA."""
    lines = [line.strip() for line in ptx.splitlines()]
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := _LABEL.match(line))}
    loops = []  # (first line, last line, opcodes)
    for i, line in enumerate(lines):
        m = _BRANCH.match(line)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            start = labels[m.group(1)]
            loops.append((start, i, Counter(_opcode(x) for x in lines[start + 1:i + 1]
                                            if x and not x.startswith(("$", "//", "{", "}", ".")))))
    with_fma = [x for x in loops if x[2]["fma"]]
    if not with_fma:
        return None
    start, end, ops = max(with_fma, key=lambda x: (x[2]["fma"], -sum(x[2].values())))
    around = [x for x in loops if x[0] < start and x[1] > end]
    outer = min(around, key=lambda x: x[1] - x[0], default=None)
    return ops, None if outer is None else sum(outer[2].values()) - sum(ops.values())


def ptxas_resources(ptx: str) -> tuple[int, int, int] | None:
    """(registers a thread, bytes spilled to local memory, shared bytes) as
    ptxas assigns them for sm_90, when ptxas (the CUDA toolkit's) is on PATH;
    else None. Registers decide how many blocks a multiprocessor holds."""
    exe = shutil.which("ptxas")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        r = subprocess.run([exe, f"-arch=sm_{CC[0]}{CC[1]}", "-v", str(src), "-o", str(Path(tmp) / "kernel.cubin")],
                           capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"ptxas rejected the PTX: {r.stderr[-2000:]}")
    regs = int(re.search(r"Used (\d+) registers", r.stderr).group(1))
    spilled = sum(int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", r.stderr))
    smem = re.search(r"(\d+) bytes smem", r.stderr)
    return regs, spilled, int(smem.group(1)) if smem else 0


def blocks_per_sm(threads: int, regs: int, smem: int) -> int:
    """How many blocks of a launch one multiprocessor holds at once: registers
    go to warps 8 a thread at a time, shared memory to blocks."""
    warps = -(-threads // 32)
    by_regs = SM_REGISTERS // (warps * 32 * -(-max(regs, 1) // 8) * 8)
    return min(by_regs, SM_THREADS // (warps * 32), SM_SHARED // (smem + BLOCK_SHARED_RESERVED), SM_BLOCKS)


def _opcode(instruction: str) -> str:
    if instruction.startswith("@"):  # a predicated instruction: @%p1 bra ...
        instruction = instruction.split(None, 1)[1]
    return instruction.split(None, 1)[0].split(".")[0]


def lowerings_graph():
    """One node of each lowering that no model here uses: integer Div and Mod
    (their divisors made safe), ReduceMax and ReduceMin on bool (block-wide),
    MatMul with a 1-D operand, MaxPool on bytes (a stencil, and a loop over a
    large window; with its Indices output), elementwise ops on f16 (computed in f32, rounded to f16)
    and Casts from f16 to f64 and from f64 to f16 (rounded once, in f64), a MatMul on f16 (summed in
    f32), Pow on i32 and Round, a Conv, a depthwise Conv and a ConvInteger (with its zero points)
    whose weights are computed at run time."""
    from minidlc.ir import Graph, TensorType

    g = Graph()
    for dt in ("i8", "u8", "i32", "i64"):
        a, b = (g.add_input(f"{name}_{dt}", TensorType((300,), dt)) for name in "ab")
        g.outputs += [g.add("Div", [a, b]).output, *(g.add("Mod", [a, b], {"fmod": f}).output for f in (0, 1))]
    flags = g.add_input("flags", TensorType((3, 200), "bool"))
    g.outputs += [g.add(op, [flags], {"axes": [1], "keepdims": 0}).output for op in ("ReduceMax", "ReduceMin")]
    v = g.add_input("v", TensorType((64,)))
    g.outputs += [g.add("MatMul", [v, g.add_input("w", TensorType((4, 64, 32)))]).output,
                  g.add("MatMul", [g.add_input("m", TensorType((5, 64))), v]).output]
    for dt, kernel in (("u8", [3, 3]), ("i8", [7, 10])):
        pixels = g.add_input(f"pixels_{dt}", TensorType((1, 2, 7, 11), dt))
        g.outputs.append(g.add("MaxPool", [pixels], {"kernel_shape": kernel, "pads": [1, 1, 1, 1]}).outputs[0])
    g.outputs += list(g.add("MaxPool", [g.add_input("planes", TensorType((1, 2, 7, 11)))],  # with its Indices
                            {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}).outputs)
    h, k = (g.add_input(name, TensorType((4, 50), "f16")) for name in ("h", "k"))
    g.outputs += [g.add("Max", [g.add("Div", [h, k]).output, g.add("Exp", [k]).output]).output,
                  g.add("Mod", [h, k], {"fmod": 1}).output, g.add("Cast", [h], {"to": "f64"}).output,
                  g.add("MatMul", [h, g.add_input("hk", TensorType((50, 20), "f16"))]).output,
                  g.add("Cast", [g.add_input("d", TensorType((300,), "f64"))], {"to": "f16"}).output,
                  g.add("Pow", [g.add_input(name, TensorType((300,), "i32")) for name in ("base", "exponent")]).output,
                  g.add("Round", [g.add_input("r", TensorType((300,)))]).output]
    image = g.add_input("image", TensorType((1, 4, 9, 9)))
    for wshape, group in (((8, 4, 3, 3), 1), ((4, 1, 3, 3), 4)):
        w = g.add("Relu", [g.add_input(f"w{group}", TensorType(wshape))]).output  # computed at run time
        g.outputs.append(g.add("Conv", [image, w], {"pads": [1, 1, 1, 1], "group": group}).output)
    q = [g.add_input(name, TensorType(shape, "u8")) for name, shape in
         (("qx", (1, 4, 9, 9)), ("qw", (8, 4, 3, 3)), ("qx_zero", ()), ("qw_zero", ()))]
    g.outputs.append(g.add("ConvInteger", q, {"pads": [1, 1, 1, 1]}).output)
    return g


def graph_of(name: str, batch: int | None):
    """The model `name` as a graph: a demo model, `sgemm`, `lowerings`
    (`lowerings_graph`), or MODEL:f16 / MODEL:bf16 (its weights stored in 16
    bits by the mixed-precision pass)."""
    name, _, dtype = name.partition(":")
    if name == "sgemm":
        from bench_gpu import matmul_model

        graph = minidlc.load(matmul_model(4096))
    elif name == "lowerings":
        graph = lowerings_graph()
    else:
        graph = minidlc.load(build_model(name, batch))
    if dtype:
        from minidlc.quantization import BEFORE_QUANTIZE

        graph = build_pipeline(passes=BEFORE_QUANTIZE + [f"mixed-precision{{dtype={dtype}}}"]).run(graph)
    return graph


def census(name: str, batch: int | None, only: str, tuning: bool = False) -> int:
    """Compile `name`'s launches to PTX and print each one's hot loop; the
    number of launches. `tuning`: not the program's launches but those of
    every candidate tile `minidlc tune` would time (a check that all of them
    compile, and their static counts side by side)."""
    backend = get_backend("cuda")
    graph = build_pipeline(opt_level=2, context=PassContext(backend.can_lower)).run(graph_of(name, batch))
    program = backend.program(graph)
    if tuning:
        tried = candidates(program)
        per_product = Counter(c.shape for c in tried).values()
        print(f"{name}: {len(tried)} candidates of {len(per_product)} products ({min(per_product, default=0)} to "
              f"{max(per_product, default=0)} a product)", flush=True)
        kernels = [c.lowered.kernel for c in tried]
    else:
        kernels = [s.lowered.kernel for s in program.steps if s.kind == StepKind.KERNEL]
    source, launches = render_module(kernels)
    module = load_module(source, "ptx-census")
    times = Counter(launch.name for launch in launches)
    for launch in dict((launch.name, launch) for launch in launches).values():
        signature = tuple(numba.from_dtype(bits_dtype(np.dtype(DTYPES[p.dtype])))[::1] for p in launch.kernel.params)
        ptx, _ = cuda.compile_ptx(getattr(module, launch.name).py_func, signature, cc=CC)
        assert ".visible .entry" in ptx, launch.name
        if only is None or only not in launch.name:
            continue
        hot, resources = hot_loop(ptx), ptxas_resources(ptx)
        head = f"  {launch.name:<34} x{times[launch.name]:<3} grid {launch.grid:>6} x {launch.block:<4}"
        if resources is not None:
            regs, spilled, smem = resources
            head += f" regs {regs:>3}, {blocks_per_sm(launch.block, regs, smem):>2} blocks/SM" + \
                (f", SPILLS {spilled} bytes" if spilled else "") + ":"
        if hot is None:
            print(f"{head} no loop with an fma")
            continue
        ops, around = hot
        total = sum(ops.values())
        rest = ", ".join(f"{op} {n}" for op, n in ops.most_common() if op != "fma")
        outer = "" if around is None else f"; the loop around it: {around} more"
        print(f"{head} hot loop {total:>4} instructions, {ops['fma']:>3} fma ({ops['fma'] / total:.0%}): {rest}{outer}")
    return len(launches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", help="comma-separated: demo models, resnet50, densenet121, sgemm, lowerings; "
                    "MODEL:f16 or MODEL:bf16 with its weights stored in 16 bits")
    ap.add_argument("--batch", type=int, help="the batch of resnet50 / densenet121")
    ap.add_argument("--only", nargs="?", const="", help="print the census of the launches whose name holds this "
                    "(no value: all); without --only, only check that every launch compiles")
    ap.add_argument("--tuning", action="store_true", help="the launches of every candidate tile that `minidlc "
                    "tune` would time, instead of the program's")
    args = ap.parse_args()
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
    except Exception as e:  # no NVVM library: nothing to check here
        print(f"NVVM unavailable: {e}")
        sys.exit(77)
    dispatcher.get_current_device = lambda: _Hopper()
    for name in args.models.split(","):
        if args.only is not None:
            print(f"{name}: hot loops of the launches' PTX (sm_{CC[0]}{CC[1]}, static counts)")
        print(f"{name}: {census(name, args.batch, args.only, args.tuning)} launches compile to PTX")


if __name__ == "__main__":
    main()
