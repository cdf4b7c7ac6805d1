"""minidlc's cuda target against PyTorch on the same GPU, in one process.

    python benchmarks/bench_gpu.py [--sgemm 4096] [--models mlp,convnet,tfblock,resnet50:32]
                                   [--batches 1,32] [--no-compile] [--tune sgemm,resnet50:32] [--json out.json]

Prints the GPU's name, then:
- sgemm N^3 (f32, both operands computed at run time): minidlc's tiled kernel
  and torch.matmul with TF32 off, GFLOP/s each and the ratio;
- each model at each batch: ms per run of minidlc, PyTorch eager (also with
  cuDNN's TF32 off: by default its convolutions may use TF32 tensor cores,
  where minidlc computes in f32) and
  torch.compile (the same ONNX graph run by torch ops, benchmarks/onnx_torch.py),
  and the ratios eager/minidlc and compile/minidlc (above 1: minidlc is faster),
  with minidlc's compile time and its error against PyTorch;
- with --profile MODEL:BATCH, that run's steps each timed alone (the
  per-kernel profile: ms, share, GFLOP/s), to show where its time goes;
- with --tune sgemm,MODEL:BATCH, before building those, each of their GEMMs'
  candidate tiles timed (`minidlc tune`: a line a product, with how much
  faster the tuned tile is than the heuristic's), then built with the fastest.

A row that one of the CUDA issue's goals concerns ends with whether it is
met: sgemm 4096^3 at 0.5 of torch.matmul or more, the demo models at batch 1
at 1.0 of eager or more, ResNet-50 at batch 32 at 0.5 of eager or more.

Every time is the median over rounds of CUDA-event time around `reps`
back-to-back runs on inputs already on the device (no host copies on either
side), after WARM_S of warm-up runs (an idle GPU's clocks are low). The
header says how minidlc queues its kernels (MINIDLC_CUDA_LAUNCH: by default
one CUDA graph a run, where numba-cuda's cuda.core can capture one); a model
run as a graph is also timed launched kernel by kernel, to show what the
graph saves, and a row says if any launches went through Numba's dispatcher
rather than straight to the driver. tfblock's Reshapes fix its batch at 1.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
import numpy as np  # noqa: E402

import minidlc  # noqa: E402
from minidlc.demo_models import DEMOS, build_model  # noqa: E402

# issue 10's goals: minidlc's speed over PyTorch's (sgemm: torch.matmul, TF32 off; models: eager)
SGEMM_GOAL = 0.5
MODEL_GOALS = {**{(name, 1): 1.0 for name in DEMOS}, ("resnet50", 32): 0.5}


def verdict(ratio: float, goal: float | None) -> str:
    """What a row says of its goal, if it has one."""
    return "" if goal is None else f"  goal {goal:.1f}: {'met' if ratio >= goal else 'NOT met'}"


WARM_S = 0.2  # each timed call first runs this long, synchronized: a GPU's clocks rise from idle under load


def time_gpu(fn, reps: int, event, sync, rounds: int = 5) -> float:
    """ms per call of fn (which queues GPU work): the median over rounds of
    GPU-event time around `reps` back-to-back calls, after WARM_S of warm-up
    calls (an idle H200 clocks at 345 MHz: without it, whichever side is timed
    first reads slow). `event()` makes a timing event, `sync()` waits for the
    GPU (Numba's or PyTorch's: both events have record, synchronize and
    elapsed_time)."""
    start = time.perf_counter()
    while time.perf_counter() - start < WARM_S:
        fn()
        sync()
    times = []
    for _ in range(rounds):
        begin, end = event(), event()
        begin.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / reps)
    return statistics.median(times)


def time_numba(fn, reps: int) -> float:
    from numba import cuda

    return time_gpu(fn, reps, cuda.event, cuda.synchronize)


def time_torch(fn, reps: int) -> float:
    import torch

    return time_gpu(fn, reps, lambda: torch.cuda.Event(enable_timing=True), torch.cuda.synchronize)


def matmul_model(n: int):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def build_cuda(model, tune: bool):
    """minidlc's build of `model` for cuda and its compile time; with `tune`,
    after tuning its GEMM tiles on this GPU (which prints each product's
    candidates; untuned tiles if tuning fails)."""
    if tune:
        from minidlc.backends.cuda.tuning import tune as tune_tiles

        start = time.perf_counter()
        try:
            tune_tiles(minidlc.lower(model, "cuda"), out=sys.stdout)
        except Exception as e:  # noqa: BLE001 -- the untuned figures are still worth having
            print(f"tuning failed ({type(e).__name__}: {e}); the heuristic's tiles", flush=True)
        print(f"tuning took {time.perf_counter() - start:.0f} s", flush=True)
    start = time.perf_counter()
    m = minidlc.compile(model, target="cuda")
    return m, time.perf_counter() - start


def bench_sgemm(n: int, tune: bool = False) -> dict:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    m, compile_s = build_cuda(matmul_model(n), tune)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    ex = m.executable
    ex.feed([a, b])
    reps = max(1, int(2e10 // (2 * n ** 3)))
    ours = time_numba(ex.launch, reps)
    ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    theirs = time_torch(lambda: torch.matmul(ta, tb), reps)
    got = ex.run([a, b])[0]
    want = (ta.double() @ tb.double()).cpu().numpy()
    err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    flops = 2 * n ** 3
    row = {"n": n, "minidlc_gflops": flops / ours / 1e6, "torch_gflops": flops / theirs / 1e6,
           "ratio": theirs / ours, "rel_err": err, "compile_s": compile_s}
    print(f"sgemm {n}^3 f32: minidlc {row['minidlc_gflops']:.0f} GFLOP/s, torch.matmul (TF32 off) "
          f"{row['torch_gflops']:.0f} GFLOP/s, minidlc/torch {row['ratio']:.2f}; rel. error {err:.1e}; "
          f"compile {compile_s:.1f} s" + verdict(row["ratio"], SGEMM_GOAL if n == 4096 else None), flush=True)
    return row


def bench_model(name: str, batch: int, with_compile: bool, with_profile: bool = False, tune: bool = False) -> dict:
    import torch
    from onnx_torch import OnnxModule

    if name == "tfblock" and batch != 1:  # its Reshapes fix its batch at 1
        return {}
    model = build_model(name, None if name == "tfblock" else batch)
    m, compile_s = build_cuda(model, tune)
    feeds = m.random_inputs(0)
    ex = m.executable
    ex.feed([feeds[v.name] for v in ex.graph.inputs])
    module = OnnxModule(model).cuda().eval()
    xs = [torch.from_numpy(feeds[n]).cuda() for n in module.inputs]
    with torch.no_grad():
        want = module(*xs)[0].double().cpu().numpy()
        eager = time_torch(lambda: module(*xs), 20)
        torch.backends.cudnn.allow_tf32 = False  # convolutions in f32, as minidlc's are
        eager_f32 = time_torch(lambda: module(*xs), 20)
        torch.backends.cudnn.allow_tf32 = True  # (PyTorch's default)
        compiled = None
        if with_compile:
            cmod = torch.compile(module)
            cmod(*xs)
            compiled = time_torch(lambda: cmod(*xs), 20)
    ours = time_numba(ex.launch, 20)
    one_by_one = time_numba(lambda: [call() for call in ex.calls], 20) if ex.replay is not None else None
    got = ex.run([feeds[v.name] for v in ex.graph.inputs])[0]  # the arena reuses the inputs' memory: feed again
    err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    host = sum(s.kind.value == "host" for s in m.program.steps)
    direct = ex.direct_launches  # the other launches: Numba's dispatcher
    row = {"model": name, "batch": batch, "minidlc_ms": ours, "eager_ms": eager, "eager_f32_ms": eager_f32,
           "compile_ms": compiled,
           "eager_ratio": eager / ours, "compile_ratio": compiled / ours if compiled else None,
           "compile_s": compile_s, "launches": len(ex.launches), "direct_launches": direct, "host_steps": host,
           "graph": ex.replay is not None, "one_by_one_ms": one_by_one, "rel_err": err}
    comp = f"{compiled:8.3f}" if compiled else "       -"
    cr = f"{compiled / ours:6.2f}" if compiled else "     -"
    print(f"{name:<9}{batch:>6}{ours:>10.3f}{eager:>10.3f}{eager_f32:>10.3f}{comp:>10}{eager / ours:>9.2f}{cr:>10}"
          f"{compile_s:>10.1f}{len(ex.launches):>9}{host:>6}{err:>10.1e}"
          + verdict(eager / ours, MODEL_GOALS.get((name, batch))), flush=True)
    if one_by_one is not None:
        print(f"  (one CUDA graph; launched kernel by kernel: {one_by_one:.3f} ms)", flush=True)
    if direct < len(ex.launches):
        print(f"  ({len(ex.launches) - direct} of its {len(ex.launches)} launches went through Numba's dispatcher: "
              "see the warning above)", flush=True)
    if with_profile:  # where minidlc's time goes: each step's launches timed alone
        from dataclasses import asdict

        from minidlc.profiler import format_profile, profile

        rows = profile(m, feeds, repeat=10)
        print(format_profile(rows, None, 1), flush=True)
        row["profile"] = [asdict(r) for r in rows]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sgemm", type=int, default=4096, help="N of the N^3 sgemm (0: skip)")
    ap.add_argument("--models", default="mlp,convnet,tfblock,resnet50",
                    help="MODEL (at each of --batches) or MODEL:BATCH, in the order to run them")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (it compiles for minutes)")
    ap.add_argument("--compile-for", default="", help="run torch.compile for these models only (default: all)")
    ap.add_argument("--profile", default="", help="MODEL:BATCH,...: also time each step of these alone "
                    "(minidlc's per-kernel profile)")
    ap.add_argument("--tune", default="", help="sgemm,MODEL:BATCH,...: tune their GEMM tiles on this GPU first "
                    "(minidlc tune; the records stay in the cache and serve later compiles too)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    import numba
    import torch
    from numba import cuda

    from minidlc.backends.cuda import cuda_module, gpu_name, launch_mode

    cuda_module()  # a clear error when there is no GPU
    dev = cuda.get_current_device()
    try:
        numba_cuda = f"numba-cuda {importlib.metadata.version('numba-cuda')}"
    except importlib.metadata.PackageNotFoundError:
        numba_cuda = "Numba's built-in CUDA target"
    print(f"GPU: {gpu_name(cuda)} (compute capability "
          f"{dev.compute_capability[0]}.{dev.compute_capability[1]}); numba {numba.__version__}, {numba_cuda}, torch "
          f"{torch.__version__}; launches: {launch_mode().value} (MINIDLC_CUDA_LAUNCH)", flush=True)
    tuned = args.tune.split(",")
    rows = {"sgemm": bench_sgemm(args.sgemm, "sgemm" in tuned) if args.sgemm else None, "models": []}

    def save() -> None:  # after every row: a run the time limit cuts short keeps what it measured
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    save()
    print(f"{'model':<9}{'batch':>6}{'ours ms':>10}{'eager ms':>10}{'f32 eager':>10}{'compile':>10}{'eager/us':>9}"
          f"{'compile/us':>10}{'build s':>10}{'launches':>9}{'host':>6}{'rel err':>10}", flush=True)
    for name, batch in model_runs(args.models, args.batches):
        with_compile = not args.no_compile and (not args.compile_for or name in args.compile_for.split(","))
        row = bench_model(name, batch, with_compile, f"{name}:{batch}" in args.profile.split(","),
                          f"{name}:{batch}" in tuned)
        if row:
            rows["models"].append(row)
        save()


def model_runs(models: str, batches: str) -> list[tuple[str, int]]:
    """(model, batch) in the order to run them: `models` names MODEL (at
    each of `batches`) or MODEL:BATCH (at that batch only)."""
    runs = []
    for item in models.split(","):
        name, _, batch = item.partition(":")
        runs += [(name, int(b)) for b in (batch or batches).split(",")]
    return runs


if __name__ == "__main__":
    main()
