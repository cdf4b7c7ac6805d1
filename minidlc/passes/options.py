"""Command-line flags of the pass pipeline, shared by every `minidlc` command.

    ap = argparse.ArgumentParser(); add_pass_arguments(ap)
    args = ap.parse_args()
    m = minidlc.compile(model, **pipeline_kwargs_from_args(args))

The flags map one to one onto `build_pipeline`'s arguments and the
instruments in instruments.py, so the Python API can do everything the CLI can.
"""
from __future__ import annotations

import argparse
from collections import Counter
from typing import TextIO

from ..ir import Graph
from ..ir.cost import graph_flops, intermediate_bytes
from .instruments import (DumpIR, ExplainFusion, PrintChanged, PrintIR, TimePasses, TraceRewrites, VerifyNumerics,
                          write_text)
from .manager import Instrument, registered_passes


def add_pass_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("optimization passes")
    g.add_argument("-O", dest="opt_level", type=int, choices=(0, 1, 2), default=2, metavar="N",
                   help="optimization level: 0 none, 1 cleanups (fold,dce,cse,simplify), "
                        "2 cleanups and fusion (default)")
    g.add_argument("-p", "--passes", metavar="LIST",
                   help="run these passes instead of an -O level, e.g. fold,dce,cse,simplify,fuse-layers,fuse; "
                        "options go in braces: 'fold{always_fold_bytes=32},simplify{disable=sub-const}'")
    g.add_argument("--print-ir-before-all", action="store_true", help="print the IR before every pass")
    g.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass")
    g.add_argument("--print-ir-after", metavar="PASS", action="append", default=[],
                   help="print the IR after the named pass (repeat or comma-separate for more)")
    g.add_argument("--print-ir-after-change", action="store_true",
                   help="print the input IR, then a unified diff after each pass that changed it")
    g.add_argument("--dump-ir-dir", metavar="DIR",
                   help="write the IR to numbered files DIR/000_input.ir, DIR/001_fold.ir, ...")
    g.add_argument("--time-passes", action="store_true", help="print a table of time spent per pass")
    g.add_argument("--trace-rewrites", action="store_true",
                   help="log which rewrite rule fired on which node, and why near misses did not")
    g.add_argument("--explain-fusion", action="store_true",
                   help="after fusion, list each group (its ops and kind) and why each group stopped where it did")
    g.add_argument("--verify-numerics", action="store_true",
                   help="after each pass, compare the reference interpreter's results with the "
                        "unoptimized graph's; name the first pass and tensor that diverge")
    g.add_argument("--no-verify", action="store_true", help="do not run the IR verifier between passes")
    g.add_argument("--stats", action="store_true",
                   help="print op counts before and after, fused groups and constant bytes")
    g.add_argument("--pass-stats", action="store_true",
                   help="print a table of what each pass changed: nodes, groups, estimated FLOPs, "
                        "intermediate tensor bytes, weight bytes")


def pipeline_kwargs_from_args(args: argparse.Namespace, out: TextIO | None = None) -> dict:
    """Keyword arguments for `minidlc.compile` (opt_level, passes, instruments, verify_each).
    Instruments write to `out` (None: whatever sys.stdout is when they write)."""
    after = [name for item in args.print_ir_after for name in item.split(",") if name]
    unknown = sorted(set(after) - set(available_passes()))
    if unknown:
        raise ValueError(f"--print-ir-after: unknown pass(es) {unknown}; available: {', '.join(available_passes())}")
    instruments: list[Instrument] = []
    if args.print_ir_before_all or args.print_ir_after_all or after:
        instruments.append(PrintIR(before=args.print_ir_before_all,
                                   after=True if args.print_ir_after_all else after, out=out))
    if args.print_ir_after_change:
        instruments.append(PrintChanged(out))
    if args.dump_ir_dir:
        instruments.append(DumpIR(args.dump_ir_dir))
    if args.trace_rewrites:
        instruments.append(TraceRewrites(out))
    if args.explain_fusion:
        instruments.append(ExplainFusion(out))
    if args.verify_numerics:
        instruments.append(VerifyNumerics())
    if args.time_passes:
        instruments.append(TimePasses(out))
    if args.stats:
        instruments.append(Stats(out))
    if args.pass_stats:
        instruments.append(PassStats(out))
    return {"opt_level": args.opt_level, "passes": args.passes, "instruments": instruments,
            "verify_each": not args.no_verify}


def available_passes() -> list[str]:
    return sorted(registered_passes())


class PassStats(Instrument):
    """A row per pass (and one for the input): what the graph costs after it
    (see ir/cost.py). Fusion shows as intermediate bytes going down."""

    def __init__(self, out: TextIO | None = None):
        self.out = out
        self.rows: list[tuple] = []

    def before_pipeline(self, graph: Graph) -> None:
        self.rows = [self.row("(input)", graph)]

    def after_pass(self, p, graph: Graph, changed: bool) -> None:
        self.rows.append(self.row(p.name, graph))

    @staticmethod
    def row(name: str, graph: Graph) -> tuple:
        counts = op_counts(graph)
        return (name, sum(counts.values()) - counts["Constant"], sum(n.op == "Fused" for n in graph.nodes),
                len(graph.nodes), graph_flops(graph) / 1e6, intermediate_bytes(graph) / 1024,
                constant_bytes(graph) / 1024)

    def after_pipeline(self, graph: Graph) -> None:
        write_text(self.out, format_pass_stats(self.rows) + "\n")


def format_pass_stats(rows: list[tuple]) -> str:
    head = f"{'pass':<14}{'ops':>6}{'groups':>8}{'top-level':>11}{'MFLOP':>10}{'intermediate KiB':>18}{'weight KiB':>12}"
    return "\n".join([head] + [f"{r[0]:<14}{r[1]:>6}{r[2]:>8}{r[3]:>11}{r[4]:>10.2f}{r[5]:>18.1f}{r[6]:>12.1f}"
                               for r in rows])


class Stats(Instrument):
    """Print `format_stats` of the graph before and after the pipeline."""

    def __init__(self, out: TextIO | None = None):
        self.out = out

    def before_pipeline(self, graph: Graph) -> None:
        self.before = graph.copy()  # passes edit the graph in place

    def after_pipeline(self, graph: Graph) -> None:
        write_text(self.out, format_stats(self.before, graph) + "\n")


def op_counts(graph: Graph) -> Counter:
    """Nodes per op, counting the ops inside fused groups (not the groups)."""
    counts: Counter = Counter()
    for node in graph.nodes:
        counts.update(op_counts(node.body) if node.body is not None else [node.op])
    return counts


def constant_bytes(graph: Graph) -> int:
    total = 0
    for node in graph.nodes:
        if node.op == "Constant":
            total += node.attrs["value"].nbytes
        elif node.body is not None:
            total += constant_bytes(node.body)
    return total


def format_stats(before: Graph, after: Graph) -> str:
    """Op counts before and after the passes, fused groups, constant bytes."""
    b, a = op_counts(before), op_counts(after)
    ops = sorted(set(b) | set(a), key=lambda op: (-b[op], op))
    width = max([len(op) for op in ops] + [5])
    lines = [f"{'op':<{width}}  {'before':>7}  {'after':>7}"]
    lines += [f"{op:<{width}}  {b[op]:>7}  {a[op]:>7}" for op in ops]
    lines.append(f"{'total':<{width}}  {sum(b.values()):>7}  {sum(a.values()):>7}")
    groups = [n for n in after.nodes if n.op == "Fused"]
    lines.append(f"fused groups: {len(groups)} (holding {sum(len(n.body.nodes) for n in groups)} nodes); "
                 f"top-level nodes: {len(before.nodes)} -> {len(after.nodes)}")
    lines.append(f"constant bytes: {constant_bytes(before)} -> {constant_bytes(after)}")
    return "\n".join(lines)
