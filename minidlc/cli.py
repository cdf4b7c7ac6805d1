"""The `minidlc` command line: compile, run, inspect and benchmark models.

Every user error (bad file, unsupported op, wrong input) is one line on
stderr and exit status 2; `--debug` shows the full traceback instead.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np

from . import cpu
from .benchmarking import onnxruntime_session, time_interleaved
from .frontends.torch import is_torch_spec

EXAMPLES = """\
examples:
  minidlc demo                                   compile, check and time the demo models
  minidlc ops model.onnx                         which ops the model uses, and which we support
  minidlc compile model.onnx --emit graph        print the imported graph IR
  minidlc compile model.onnx -O2 --print-ir-after-change   show what each pass changed
  minidlc compile model.py:make_model --input-shape 1,3,32,32   a PyTorch module from a factory
  minidlc run model.onnx --random-inputs --check          run and compare with onnxruntime
  minidlc run model.onnx --input x=x.npy --output out.npz
  minidlc bench model.onnx --target llvm --compare onnxruntime
  minidlc quantize model.onnx -o int8.onnx --calibration calib.npz --report   int8, QDQ ONNX
  minidlc compress model.onnx -o small.onnx --prune-channels 0.25 --report    fewer channels
  minidlc cache info                             where compiled code is cached, and how much
"""


class UsageError(Exception):
    """Bad command-line usage (reported like any user error)."""


# ---- helpers shared by the commands ------------------------------------------
def parse_input_shapes(specs: list[str]) -> dict | list:
    """`name=1,3,224,224` (ONNX inputs by name) or `1,3,32,32` (PyTorch inputs in order)."""
    named, positional = {}, []
    for spec in specs or []:
        name, sep, dims = spec.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d)
        except ValueError:
            raise UsageError(f"--input-shape {spec!r}: expected name=D0,D1,... with integer dimensions") from None
        if sep:
            named[name] = shape
        else:
            positional.append(shape)
    if named and positional:
        raise UsageError("--input-shape: use either name=dims for every input or dims alone, not both")
    return positional if positional else named


def load_graph(model: str, shapes):
    import minidlc

    if is_torch_spec(model):
        if not isinstance(shapes, list) or not shapes:
            raise UsageError(f"{model}: a PyTorch factory needs --input-shape D0,D1,... for each input")
        from .frontends.torch import load_torch_factory

        return load_torch_factory(model, shapes)
    if isinstance(shapes, list) and shapes:
        raise UsageError("--input-shape for an ONNX model takes name=D0,D1,... (the input's name)")
    return minidlc.load(model, input_shapes=shapes or None)


def compile_model(args, out=None):
    """Load and compile per the command line; `out` (default: stdout) gets the
    pass instruments' text and, with --stats, the backend's memory plan."""
    import minidlc

    from .passes.instruments import write_text
    from .passes.options import pipeline_kwargs_from_args

    graph = load_graph(args.model, parse_input_shapes(args.input_shape))
    m = minidlc.compile(graph, target=args.target, **pipeline_kwargs_from_args(args, out=out),
                        **backend_options_from_args(args))
    if getattr(args, "time_passes", False):
        write_text(out, format_compile_times(m))
    if args.stats and m.backend.runs_kernels:
        from .loops.program import StepKind

        p = m.program
        host = [s.node.describe() for s in p.steps if s.kind == StepKind.HOST]
        write_text(out, p.plan.describe(p.weight_bytes()) + "\n" + f"steps: {p.count(StepKind.KERNEL)} kernels, "
                        f"{len(host)} host steps" + (f" ({', '.join(host)})" if host else "") + "\n")
    if args.pass_stats and m.backend.runs_kernels:
        from .loops.program import StepKind

        p = m.program
        write_text(out, f"after lowering: {p.count(StepKind.KERNEL)} kernels, {p.count(StepKind.HOST)} host steps, "
                        f"arena {p.plan.size / 1024:.1f} KiB\n")
    return m


def format_compile_times(m) -> str:
    """After --time-passes' table of passes: the whole compile by stage."""
    from .loops.program import StepKind

    summary = getattr(m.executable, "compile_summary", lambda: "or loading them from the cache")()
    what = {"cache": "the compile cache: the key, then loading the program (or storing it)",
            "passes": "the pass pipeline (above)",
            "lowering": f"lowering and scheduling {m.program.count(StepKind.KERNEL) if m.backend.runs_kernels else 0} "
                        "kernels, the memory plan",
            "backend": f"{m.target}: code generation and compilation ({summary})"
                       if m.backend.runs_kernels else f"{m.target}: nothing to compile (it interprets the graph)"}
    total = sum(m.compile_seconds.values())
    rows = [f"{s * 1000:14.3f} {100 * s / max(total, 1e-12):6.1f}%  {what[k]}" for k, s in m.compile_seconds.items()]
    return "\n".join(["===-------------------------------------------===", "              Compile timing report",
                      "===-------------------------------------------===", "  Wall time (ms)       %  stage", *rows,
                      f"{total * 1000:14.3f} 100.0%  total", ""]) + "\n"


def backend_options_from_args(args) -> dict:
    """The backend option flags the user gave (--threads, ...), checked against the target."""
    from .backends import all_options

    given = {}
    for name, (option, targets) in all_options().items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if args.target not in targets:
            raise UsageError(f"--{name} is an option of --target {' or '.join(targets)}, not of {args.target}")
        given[name] = value  # the backend checks the value
    return given


def add_profile_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--profile", action="store_true",
                    help="time each kernel (llvm, numba; cuda: by CUDA events, no roofline): ms, share, GFLOP/s, "
                    "GB/s, roofline bound")
    sp.add_argument("--profile-json", metavar="FILE", help="write the profile as JSON, with a Chrome trace")


def add_backend_arguments(sp: argparse.ArgumentParser) -> None:
    """One flag per backend option, from the backend registry."""
    from .backends import all_options

    for name, (option, targets) in all_options().items():
        sp.add_argument(f"--{name}", type=option.type, metavar=name.upper(),
                        help=f"{option.help} ({', '.join(targets)})")


def summarize(array: np.ndarray) -> str:
    a = np.asarray(array)
    head = np.array2string(a.reshape(-1)[:5], precision=4, separator=", ")
    if a.size == 0:
        return "empty"
    if a.dtype.kind in "fiu":
        af = a.astype(np.float64)
        return f"mean {af.mean():.4g}  std {af.std():.4g}  min {af.min():.4g}  max {af.max():.4g}  first {head}"
    return f"first {head}"


def read_inputs(specs: list[str]) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep:
            raise UsageError(f"--input {spec!r}: expected name=file.npy")
        try:
            feeds[name] = np.load(path)
        except (OSError, ValueError) as e:
            raise UsageError(f"--input {name}: cannot read {path}: {e}") from None
    return feeds


def onnxruntime_outputs(model_path: str, feeds: dict) -> dict[str, np.ndarray] | None:
    try:
        sess = onnxruntime_session(model_path)
    except ImportError:
        return None
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def max_error(got: dict, want: dict) -> float:
    return max(float(np.max(np.abs(got[k].astype(np.float64) - want[k].astype(np.float64)), initial=0))
               for k in want)


def best_target() -> str:
    """llvm when llvmlite is installed here, else the NumPy reference."""
    try:
        import llvmlite  # noqa: F401
        return "llvm"
    except ImportError:
        return "reference"


# ---- commands ----------------------------------------------------------------
def cmd_ops(args) -> int:
    from .frontends.onnx.loader import format_table, op_support_table

    if is_torch_spec(args.model):
        raise UsageError(f"{args.model}: `minidlc ops` reads ONNX files; for a PyTorch model, "
                         "`minidlc compile MODEL --input-shape ...` reports unsupported ATen ops")
    rows = op_support_table(args.model)
    print(format_table(rows))
    missing = sum(not r["status"].startswith("supported") for r in rows)
    print(f"\n{len(rows)} op types, {missing} unsupported")
    return 1 if missing else 0


def cmd_compile(args) -> int:
    if args.output and args.emit != "onnx":
        raise UsageError("--output saves the model of --emit onnx; other stages print")
    m = compile_model(args)
    if args.emit == "onnx" and args.output:
        import onnx

        onnx.save(m.to_onnx(), args.output)
        print(f"saved the optimized graph as ONNX to {args.output} (fused groups as functions)")
    elif args.emit:
        print(m.emit(args.emit))
    return 0


def cmd_report(args) -> int:
    from .report import build_report

    graph = load_graph(args.model, parse_input_shapes(args.input_shape))
    page = build_report(graph, target=args.target, opt_level=args.opt_level, profile=args.profile,
                        **backend_options_from_args(args))
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {args.output} ({len(page) // 1024} KiB): open it in a browser")
    return 0


def cmd_explain(args) -> int:
    from .explain import explain

    graph = load_graph(args.model, parse_input_shapes(args.input_shape))
    print(explain(graph, args.node, target=args.target, opt_level=args.opt_level, profile=args.profile,
                  **backend_options_from_args(args)), end="")
    return 0


def cmd_run(args) -> int:
    m = compile_model(args, out=sys.stderr)
    feeds = read_inputs(args.input)
    if args.random_inputs:
        feeds = {**m.random_inputs(), **feeds}
    outs = m.run(feeds)
    for name, a in outs.items():
        print(f"{name}: {a.dtype}{list(a.shape)}  {summarize(a)}")
    if args.output:
        np.savez(args.output, **outs)
        print(f"saved {len(outs)} output(s) to {args.output}")
    if args.profile or args.profile_json:
        print_profile(args, m, feeds)
    if args.check:
        want = reference_outputs(args.model, m, feeds)
        err = max_error(outs, want)
        ok = all(np.allclose(outs[k], want[k], rtol=1e-3, atol=1e-4) for k in want)
        print(f"check against {want.source}: max abs error {err:.3g}  {'OK' if ok else 'MISMATCH'}")
        return 0 if ok else 1
    return 0


def print_profile(args, m, feeds) -> None:
    """`--profile`: the per-kernel table; `--profile-json FILE`: the same as JSON with a Chrome trace."""
    from .profiler import format_profile, peaks_of, profile, to_json

    rows = profile(m, feeds)
    peaks = peaks_of(m)
    threads = getattr(m.executable, "threads", 1)
    if args.profile:
        print(format_profile(rows, peaks, threads))
    if args.profile_json:
        with open(args.profile_json, "w") as f:
            f.write(to_json(rows, peaks, threads))
        print(f"saved the profile to {args.profile_json}")


def evaluation(args, graph, batches):
    """The original (f32) model's outputs on `batches`, with the --labels if given:
    what quantize and compress measure their results against."""
    from . import quant_report as qr

    labels = np.load(args.labels) if args.labels else None
    return qr.Evaluation(batches, qr.outputs(qr.float_graph(graph), batches), labels)


def accuracy_note(accuracy: float | None, ev) -> str:
    from .quant_report import top1

    return f", top-1 {accuracy:.2f}% (was {top1(ev.reference, ev.labels):.2f}%)" if ev.labels is not None else ""


def cmd_tune(args) -> int:
    """Time each GEMM's candidate GPU tiles, record the fastest for this GPU."""
    import minidlc

    from .backends.cuda.tuning import tune
    from .passes.options import pipeline_kwargs_from_args

    graph = load_graph(args.model, parse_input_shapes(args.input_shape))
    tune(minidlc.lower(graph, "cuda", **pipeline_kwargs_from_args(args, out=sys.stderr)), out=sys.stdout)
    return 0


def cmd_quantize(args) -> int:
    """Calibrate, optionally report each layer's sensitivity, write a QDQ ONNX file."""
    import onnx

    from . import quant_report as qr
    from .quantization import load_calibration, quantize

    graph = load_graph(args.model, parse_input_shapes(args.input_shape))
    if args.dtype != "int8":
        return _store_weights_in(args.dtype, args, graph)
    if not args.calibration:
        raise UsageError("int8 quantization needs --calibration DATA (an .npz, a directory of them, or random:N)")
    calibration = load_calibration(args.calibration, graph)
    batches = load_calibration(args.eval, graph) if args.eval else calibration
    options = {"method": args.method, "per_tensor": args.per_tensor, "percentile": args.percentile,
               "activations": "i8" if args.activations == "s8" else "u8"}
    ev = evaluation(args, graph, batches)
    keep = [name for item in args.keep_float for name in item.split(",") if name]
    if "auto" in keep and (len(keep) > 1 or args.max_drop is None):
        raise UsageError("--keep-float auto chooses the layers itself, and needs --max-drop POINTS")
    if args.max_drop is not None and keep != ["auto"]:
        raise UsageError("--max-drop goes with --keep-float auto")
    rows = None
    if args.report or keep == ["auto"]:
        print(f"sensitivity on {len(batches)} batches ({'evaluation data' if args.eval else 'the calibration data'}),"
              f" each layer int8 alone, then all:", flush=True)
        rows = qr.sensitivity(graph, calibration, ev, options)
        print(qr.format_rows(rows, ev))
    if keep == ["auto"]:
        keep, row = qr.choose_float_layers(graph, calibration, ev, options, rows, args.max_drop)
        print(f"keep in f32 for a drop within {args.max_drop} points: {', '.join(keep) or 'none'} "
              f"(drop {qr.drop(row, ev):.2f} points)")
    q = quantize(graph, calibration, **options, keep_float=keep, as_graph=True)
    from .frontends.onnx.export import export_onnx

    onnx.save(export_onnx(q, [v.name for v in graph.outputs]), args.output)
    f32_bytes, q_bytes = _weight_bytes(qr.float_graph(graph)), _weight_bytes(q)
    row = qr.score(qr.outputs(build_integer(q), batches), ev)
    accuracy = accuracy_note(row.accuracy, ev)
    print(f"wrote {args.output}: int8 QDQ, weights {f32_bytes / 1024:.1f} KiB -> {q_bytes / 1024:.1f} KiB "
          f"({f32_bytes / max(q_bytes, 1):.2f}x smaller); output SQNR {row.sqnr_db:.1f} dB, "
          f"top-1 agreement with f32 {row.agreement:.2f}%{accuracy}")
    return 0


def cmd_compress(args) -> int:
    """Prune channels or decompose to low rank; write plain ONNX; --report sweeps the setting."""
    import onnx

    from . import quant_report as qr
    from .compression import compress, compression_pass, format_tradeoffs, measure, sweep
    from .frontends.onnx.export import export_onnx
    from .quantization import load_calibration

    graph = load_graph(args.model, parse_input_shapes(args.input_shape))
    calibration = load_calibration(args.calibration, graph) if args.calibration else []
    batches = load_calibration(args.eval or args.calibration or "random:1", graph)
    ev = evaluation(args, graph, batches)
    kind = "prune" if args.prune_channels is not None else "low-rank"
    if args.report:
        print(f"trade-offs ({'pruning ratios' if kind == 'prune' else 'low-rank energies'}; SQNR against the "
              f"original's output, llvm time per run):", flush=True)
        print(format_tradeoffs(sweep(graph, kind, ev, calibration, args.criterion)))
    spec = compression_pass(prune=args.prune_channels, low_rank=args.low_rank, criterion=args.criterion)
    compressed, done = compress(graph, spec, calibration)
    print(done.describe())
    onnx.save(export_onnx(compressed, [v.name for v in graph.outputs]), args.output)
    before, after = measure("original", qr.float_graph(graph), ev), measure(spec, compressed, ev)
    accuracy = accuracy_note(after.accuracy, ev)
    print(f"wrote {args.output}: params {before.params} -> {after.params}, MFLOPs {before.mflops:.2f} -> "
          f"{after.mflops:.2f}, weights {before.weight_kib:.1f} -> {after.weight_kib:.1f} KiB, llvm "
          f"{before.ms:.3f} -> {after.ms:.3f} ms; output SQNR {after.sqnr_db:.1f} dB{accuracy}")
    return 0


def _store_weights_in(dtype: str, args, graph) -> int:
    """`--dtype f16`: the mixed-precision pass instead of int8; reports bytes and output error."""
    import onnx

    from . import quant_report as qr
    from .frontends.onnx.export import export_onnx
    from .passes.manager import build_pipeline
    from .quantization import BEFORE_QUANTIZE, load_calibration

    pipeline = build_pipeline(passes=BEFORE_QUANTIZE + [f"mixed-precision{{dtype={dtype}}}"])
    half = pipeline.run(graph.copy())
    onnx.save(export_onnx(half, [v.name for v in graph.outputs]), args.output)
    data = args.eval or args.calibration or "random:1"
    batches = load_calibration(data, graph)
    ev = evaluation(args, graph, batches)
    row = qr.score(qr.outputs(half, batches), ev)
    err = float(np.max(np.abs(qr.outputs(half, batches) - ev.reference)))
    mp = pipeline.passes[-1]
    accuracy = accuracy_note(row.accuracy, ev)
    print(f"wrote {args.output}: weights in {dtype}, constants {mp.bytes_before / 1024:.1f} KiB -> "
          f"{mp.bytes_after / 1024:.1f} KiB ({mp.saved_bytes / 1024:.1f} KiB saved); on {data}: output SQNR "
          f"{row.sqnr_db:.1f} dB, max abs error {err:.3g}, top-1 agreement with f32 {row.agreement:.2f}%{accuracy}")
    return 0


def _weight_bytes(graph) -> int:
    from .passes.options import constant_bytes

    return constant_bytes(graph)


def build_integer(graph):
    """A QDQ graph with its integer ops, as -O2 runs it (for the closing numbers)."""
    from .passes.manager import build_pipeline

    return build_pipeline(passes=["integer-ops"]).run(graph.copy())


def cmd_machine(args) -> int:
    from . import machine

    print(machine.describe(machine.peaks(remeasure=args.remeasure)))
    return 0


class _Outputs(dict):
    source = ""


def reference_outputs(model: str, m, feeds) -> _Outputs:
    """What a peer computes: onnxruntime for ONNX files, else our reference backend."""
    import minidlc

    want = _Outputs()
    ort_out = None if is_torch_spec(model) else onnxruntime_outputs(model, feeds)
    if ort_out is not None:
        want.update(ort_out)
        want.source = "onnxruntime"
    else:
        ref = minidlc.compile(m.source, target="reference", opt_level=0)
        want.update(ref.run(feeds))
        want.source = "the reference backend"
    return want


def cmd_demo(args) -> int:
    import minidlc
    from .demo_models import DEMOS, build_model, example_inputs

    target = args.target or best_target()
    rows = []
    for name in args.models or DEMOS:
        print(f"[{len(rows) + 1}/{len(args.models or DEMOS)}] {name}: building, compiling for {target}...",
              file=sys.stderr, flush=True)
        proto = build_model(name)
        graph = minidlc.load(proto)
        t0 = time.perf_counter()
        m = minidlc.compile(graph, target=target)
        compile_s = time.perf_counter() - t0
        feeds = example_inputs(proto)
        outs = m.run(feeds)
        runners = {"minidlc": lambda: m.run(feeds)}
        try:
            sess = onnxruntime_session(proto.SerializeToString())
            want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
            runners["onnxruntime"] = lambda: sess.run(None, feeds)
        except ImportError:
            want = minidlc.compile(graph, target="reference", opt_level=0).run(feeds)
        err = max_error(outs, want)
        times = time_interleaved(runners, budget_s=3.0)
        ms, peer_ms = times["minidlc"], times.get("onnxruntime")
        params = sum(n.attrs["value"].size for n in graph.nodes if n.op == "Constant")
        rows.append((name, len(graph.nodes), params, err, compile_s, ms, peer_ms))
    have_ort = all(row[6] is not None for row in rows)  # onnxruntime is installed, or it is not
    print(f"target: {target}; max err against "
          + ("onnxruntime (timed with the same threads, interleaved)" if have_ort else
             "the reference backend (install onnxruntime to compare and time against it)"))
    print(f"{'model':<9} {'ops':>4} {'params':>9} {'max err':>9} {'compile s':>9} {'run ms':>8} "
          f"{'ort ms':>8} {'ort/ours':>8}")
    for name, ops, params, err, cs, ms, peer in rows:
        peer_cols = f"{peer:>8.2f} {peer / ms:>8.2f}" if have_ort else f"{'-':>8} {'-':>8}"
        print(f"{name:<9} {ops:>4} {params:>9,} {err:>9.2e} {cs:>9.2f} {ms:>8.2f} {peer_cols}")
    bad = [r[0] for r in rows if not r[3] <= 1e-3]
    if bad:
        print(f"MISMATCH against {'onnxruntime' if have_ort else 'the reference backend'}: {', '.join(bad)}")
    return 1 if bad else 0


def cmd_cache(args) -> int:
    from .backends import cache

    if args.action == "clear":
        print(f"removed {cache.clear()} files from {cache.CACHE_DIR}")
    else:
        print(cache.info())
    return 0


def cmd_bench(args) -> int:
    m = compile_model(args, out=sys.stderr)
    feeds = {**m.random_inputs(), **read_inputs(args.input)}
    runners = {f"minidlc {m.target}": lambda: m.run(feeds)}
    peers = args.compare or ("reference" if is_torch_spec(args.model) else "onnxruntime")
    for peer in [p for p in peers.split(",") if p]:
        if peer == "onnxruntime":
            if is_torch_spec(args.model):
                raise UsageError("--compare onnxruntime needs an ONNX model file")
            try:
                sess = onnxruntime_session(args.model)
            except ImportError:
                raise UsageError("--compare onnxruntime: onnxruntime is not installed (pip install onnxruntime), "
                                 "or use --compare reference") from None
            runners[peer] = lambda: sess.run(None, feeds)
        elif peer == "reference":
            import minidlc

            ref = minidlc.compile(m.source, target="reference")
            runners[peer] = lambda: ref.run(feeds)
        else:
            raise UsageError(f"--compare: unknown peer {peer!r} (onnxruntime, reference)")
    times = time_interleaved(runners, rounds=max(1, args.repeat // 3))
    ours = times[f"minidlc {m.target}"]
    print(f"{'runner':<22} {'ms':>9} {'runner/minidlc':>15}")
    for name, ms in times.items():
        print(f"{name:<22} {ms:>9.3f} {ms / ours:>15.2f}")
    if args.profile or args.profile_json:
        print_profile(args, m, feeds)
    return 0


# ---- argument parsing ------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .backends import BACKENDS, all_stages
    from .passes.options import add_pass_arguments

    targets = ", ".join(f"{b.name} ({b.help})" for b in BACKENDS.values())

    p = argparse.ArgumentParser(prog="minidlc", description="minidlc: a small deep-learning compiler.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_command(name, help, example, target: bool = True):
        """A command on a model; `target`: with --target and the backends' options
        (else the command's own target, without options)."""
        sp = sub.add_parser(name, help=help, description=f"{help}\n\nexample:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("model", help="an .onnx file, or path/to/file.py:factory returning an nn.Module")
        if target:
            sp.add_argument("--target", default="reference", choices=list(BACKENDS),
                            help=f"backend (default: reference): {targets}")
        sp.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,..",
                        help="bind an input's shape (repeatable); for a PyTorch factory: D0,D1,.. per input")
        if target:
            add_backend_arguments(sp)
        add_pass_arguments(sp)
        return sp

    sp = model_command("compile", "compile a model and print a stage",
                       "minidlc compile model.onnx -O2 --print-ir-after-change --emit fused")
    sp.add_argument("--emit", choices=all_stages(),
                    help="print this stage: graph (imported), fused (after passes), loops (the loop program), "
                         "or the target's own: " + "; ".join(f"{b.name}: {', '.join(b.stages)}"
                                                             for b in BACKENDS.values() if b.stages))
    sp.add_argument("-o", "--output", metavar="FILE.onnx", help="with --emit onnx: save the model to this file")
    sp.set_defaults(fn=cmd_compile)

    sp = model_command("run", "compile and run a model, print or save its outputs",
                       "minidlc run model.onnx --random-inputs --check")
    sp.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="an input from a .npy file")
    sp.add_argument("--random-inputs", action="store_true", help="random values for inputs not given")
    sp.add_argument("--check", action="store_true", help="compare with onnxruntime (or the reference backend)")
    sp.add_argument("--output", metavar="OUT.npz", help="save the outputs")
    add_profile_arguments(sp)
    sp.set_defaults(fn=cmd_run)

    sp = model_command("tune", "cuda: time each GEMM's candidate tiles on this GPU, and keep the fastest",
                       "minidlc tune model.onnx --input-shape x=32,3,224,224", target=False)
    sp.set_defaults(fn=cmd_tune, target="cuda")

    sp = model_command("bench", "time a model against its peers in one process",
                       "minidlc bench model.onnx --target llvm --compare onnxruntime")
    sp.add_argument("--compare", help="peers to time: onnxruntime,reference (default: onnxruntime for an ONNX "
                                      "file, reference for a PyTorch model)")
    sp.add_argument("--input", action="append", metavar="NAME=FILE.npy")
    sp.add_argument("--repeat", type=int, default=20)
    add_profile_arguments(sp)
    sp.set_defaults(fn=cmd_bench)

    sp = sub.add_parser("quantize", help="int8 post-training quantization to a QDQ ONNX file",
                        description="calibrate on data, quantize Conv/MatMul/Gemm to int8 (weights per channel, "
                                    "activations per tensor) and write a QDQ ONNX file that onnxruntime and "
                                    "minidlc run\n\nexample:\n  minidlc quantize model.onnx -o model_int8.onnx "
                                    "--calibration calib.npz --report",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("model", help="an .onnx file, or path/to/file.py:factory returning an nn.Module")
    sp.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    sp.add_argument("--calibration", metavar="DATA",
                    help="an .npz with arrays named after the inputs, a directory of them, or random[:N] "
                         "(random data: for speed experiments only); int8 needs it")
    sp.add_argument("--dtype", choices=["int8", "f16", "bf16"], default="int8",
                    help="int8 quantization (default), or f16/bf16: weights stored in 16 bits, compute in f32")
    sp.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax",
                    help="how activation ranges come from the calibration data (default: minmax)")
    sp.add_argument("--percentile", type=float, default=99.99, help="for --method percentile (default 99.99)")
    sp.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor, not per channel")
    sp.add_argument("--activations", choices=["u8", "s8"], default="u8",
                    help="u8 with a zero point (default) or s8 symmetric")
    sp.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,..", help="bind an input's shape")
    sp.add_argument("--report", action="store_true",
                    help="print each layer's sensitivity: output SQNR when it alone is int8, FLOPs share, "
                         "top-1 agreement (and accuracy with --labels)")
    sp.add_argument("--eval", metavar="DATA", help="data for the report and the closing numbers "
                                                   "(default: the calibration data)")
    sp.add_argument("--labels", metavar="Y.npy", help="labels of the evaluation data: report top-1 accuracy")
    sp.add_argument("--keep-float", action="append", default=[], metavar="LAYER[,..]|auto",
                    help="keep these layers (output names, as the report prints them) in f32; auto: choose "
                         "the most sensitive until --max-drop holds")
    sp.add_argument("--max-drop", type=float, metavar="POINTS",
                    help="with --keep-float auto: the accuracy (or agreement) drop allowed, in points")
    sp.set_defaults(fn=cmd_quantize)

    sp = sub.add_parser("compress", help="prune channels or decompose to low rank, to a plain ONNX file",
                        description="structured pruning (whole output channels) or low-rank decomposition "
                                    "(truncated SVD) of Conv/Gemm/MatMul weights; --report prints the trade-off "
                                    "table over a sweep\n\nexample:\n  minidlc compress model.onnx -o small.onnx "
                                    "--prune-channels 0.25 --report",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("model", help="an .onnx file, or path/to/file.py:factory returning an nn.Module")
    sp.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    how = sp.add_mutually_exclusive_group(required=True)
    how.add_argument("--prune-channels", type=float, metavar="RATIO", help="remove this share of each layer's channels")
    how.add_argument("--low-rank", type=float, metavar="ENERGY",
                     help="keep the singular values that hold this share of each weight's energy (e.g. 0.99)")
    sp.add_argument("--criterion", choices=["l1", "l2", "activation"], default="l1",
                    help="how pruning ranks channels (activation needs --calibration)")
    sp.add_argument("--calibration", metavar="DATA", help="data for --criterion activation (an .npz, a directory, random:N)")
    sp.add_argument("--eval", metavar="DATA", help="data the report and the closing numbers run on "
                                                   "(default: the calibration data, else random)")
    sp.add_argument("--labels", metavar="Y.npy", help="labels of the evaluation data: report top-1 accuracy")
    sp.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,..", help="bind an input's shape")
    sp.add_argument("--report", action="store_true", help="print the trade-off table over a sweep of settings")
    sp.set_defaults(fn=cmd_compress)

    sp = model_command("report", "write one self-contained HTML page about the compiled model",
                       "minidlc report examples/models/convnet.onnx -o report.html --profile")
    sp.add_argument("-o", "--output", default="report.html", metavar="FILE.html", help="where (default: report.html)")
    sp.add_argument("--profile", action="store_true", help="include the per-kernel profile (llvm, numba, cuda)")
    sp.set_defaults(fn=cmd_report, target="llvm")

    sp = model_command("explain", "follow one node through the compiler: passes, group, kernel, LLVM",
                       "minidlc explain examples/models/convnet.onnx stem.conv_2")
    sp.add_argument("node", help="the node's name (ONNX node name or PyTorch source location) or output's name")
    sp.add_argument("--profile", action="store_true", help="also time its kernel: ms and share of a run")
    sp.set_defaults(fn=cmd_explain, target="llvm")

    sp = sub.add_parser("ops", help="list the model's ops and whether each is supported",
                        description="list the model's ops (opset, node count, status)\n\nexample:\n  minidlc ops model.onnx",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("model")
    sp.set_defaults(fn=cmd_ops)

    sp = sub.add_parser("machine", help="measure this host's peak GFLOP/s and memory bandwidth (cached)",
                        description="the peaks the profiler's roofline uses: f32 GFLOP/s on all cores and on "
                                    "one, and memory bandwidth; measured once per CPU\n\nexample:\n  minidlc machine",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--remeasure", action="store_true", help="measure again instead of reading the cache")
    sp.set_defaults(fn=cmd_machine)

    sp = sub.add_parser("cache", help="show or clear the cache of compiled code",
                        description="the on-disk cache of compiled code (llvm object files, numba modules, "
                                    "loop programs from the compile cache): "
                                    "its place, size and bound, or clear it\n\nexample:\n  minidlc cache info",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("action", choices=["info", "clear"])
    sp.set_defaults(fn=cmd_cache)

    sp = sub.add_parser("demo", help="compile, check and time the shipped demo models",
                        description="compile the demo models (mlp, convnet, tfblock), compare with onnxruntime "
                                    "and print a table\n\nexample:\n  minidlc demo --target llvm",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--target", choices=list(BACKENDS), help="backend (default: the fastest available)")
    sp.add_argument("models", nargs="*", help="which demo models (default: all)")
    sp.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    from .ir import IRError
    from .passes.manager import PassError
    from .runtime import CompileError, DeviceError, InputError

    try:  # (before the parser: building it imports the code generators, which read the CPU)
        cpu.features()
    except cpu.CpuLevelError as e:
        print(f"minidlc: error: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    if sys.stderr.isatty():  # progress notes on long work (a cold Numba compile), for people watching
        logging.basicConfig(level=logging.INFO, format="minidlc: %(message)s", stream=sys.stderr)
    try:
        return args.fn(args)
    except BrokenPipeError:  # e.g. `minidlc compile ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (IRError, InputError, DeviceError, CompileError, PassError, UsageError, ValueError, OSError) as e:
        if args.debug:
            raise
        msg = str(e).strip()
        first, _, rest = msg.partition("\n")
        print(f"minidlc: error: {first}", file=sys.stderr)
        if rest:  # e.g. the table of unsupported ops
            print(rest, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
