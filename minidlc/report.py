"""One self-contained HTML page about a compiled model (`minidlc report`).

Sections: the model (inputs, outputs, op counts), the passes (the per-pass
table and each pass's diff), the fusion explanation, the graph before and
after the passes (SVG when Graphviz is installed, else its DOT text), each
kernel's loop IR linked from the list of steps (with its LLVM functions on
llvm), the memory plan drawn as buffers on a step x offset chart, and, when
asked, the profile. No scripts and no network: `<details>` folds the long
parts, so the page opens anywhere, offline.
"""
from __future__ import annotations

import html
import io

from .backends.llvm.codegen import stage_functions
from .ir import Graph
from .ir.dot import to_dot, to_svg
from .loops.program import StepKind
from .passes.instruments import ExplainFusion, PrintChanged
from .passes.options import PassStats, format_pass_stats, op_counts

SECTIONS = {"model": "Model", "passes": "Passes", "fusion": "Fusion", "graphs": "Graph before and after",
            "kernels": "Kernels", "memory": "Memory plan", "profile": "Profile"}
_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}h2{border-bottom:1px solid #ccc}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}summary{cursor:pointer}nav a{margin-right:1em}
.add{color:#070}.del{color:#a00}svg{max-width:100%;height:auto}"""


class _PassRows(PassStats):
    def after_pipeline(self, graph: Graph) -> None:
        """The report shows the rows itself."""


def build_report(model, target: str = "llvm", opt_level: int = 2, profile: bool = False, **options) -> str:
    import minidlc

    stats, diffs, fusion_text = _PassRows(), PrintChanged(io.StringIO()), io.StringIO()
    m = minidlc.compile(model, target=target, opt_level=opt_level,
                        instruments=[stats, diffs, ExplainFusion(fusion_text)], **options)
    sections = {"model": _model(m),
                "passes": _pre(format_pass_stats(stats.rows)) + "".join(
                    _details(f"diff after {name}", _diff(text)) for name, text in diffs.diffs),
                "fusion": _pre(fusion_text.getvalue()),
                "graphs": _details("before the passes", _picture(m.source))
                + _details("after the passes", _picture(m.graph), open_=True)}
    if m.backend.runs_kernels:
        sections.update(kernels=_kernels(m), memory=_memory(m))
        if profile:
            sections["profile"] = _profile(m)
    body = [_nav(list(sections))] + [_section(key, content) for key, content in sections.items()]
    title = f"minidlc report: {m.graph.name} ({target}, -O{opt_level})"
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n" + "\n".join(body)
            + "\n</body></html>\n")


def _nav(keys: list[str]) -> str:
    return "<nav>" + "".join(f"<a href='#{k}'>{SECTIONS[k]}</a>" for k in keys) + "</nav>"


def _section(key: str, content: str) -> str:
    return f"<section id='{key}'><h2>{SECTIONS[key]}</h2>\n{content}</section>"


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def _details(summary: str, content: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{html.escape(summary)}</summary>{content}</details>"


def _diff(text: str) -> str:
    lines = []
    for line in text.splitlines():
        cls = "add" if line.startswith("+") else "del" if line.startswith("-") else ""
        lines.append(f"<span class='{cls}'>{html.escape(line)}</span>" if cls else html.escape(line))
    return "<pre>" + "\n".join(lines) + "</pre>"


def _table(head: list[str], rows: list[list]) -> str:
    cells = lambda row, tag: "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in row)  # noqa: E731
    return "<table><tr>" + cells(head, "th") + "</tr>" + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows) \
        + "</table>"


def _model(m) -> str:
    g = m.source
    io_rows = [["input", v.name, str(v.type)] for v in g.inputs] + [["output", v.name, str(v.type)] for v in g.outputs]
    before, after = op_counts(m.source), op_counts(m.graph)
    ops = sorted(set(before) | set(after), key=lambda op: (-before[op], op))
    return (_table(["", "name", "type"], io_rows) + "<p>Ops, imported and after the passes:</p>"
            + _table(["op", "imported", "after"], [[op, before[op], after[op]] for op in ops]))


def _picture(graph: Graph) -> str:
    try:
        svg = to_svg(graph)
        return svg[svg.index("<svg"):]
    except OSError as e:  # no Graphviz: the DOT text, which any Graphviz viewer draws
        return f"<p>{html.escape(str(e))}. The DOT text:</p>" + _pre(to_dot(graph))


def _kernels(m) -> str:
    llvm = m.emit("llvm") if m.target == "llvm" else ""
    rows, parts = [], []
    for i, step in enumerate(m.program.steps):
        if step.kind == StepKind.KERNEL:
            name = step.lowered.kernel.name
            rows.append(f"<li><a href='#{name}'>{html.escape(name)}</a>: {html.escape(step.computes())}</li>")
            text = _pre(str(step))
            functions = [text for _, text in stage_functions(llvm, name)]
            if functions:
                text += _details(f"LLVM IR after O3 ({len(functions)} functions)", _pre("\n\n".join(functions)))
            parts.append(f"<div id='{name}'>{_details(name, text)}</div>")
        else:
            rows.append(f"<li>{html.escape(str(step))}</li>")
    return "<ol>" + "".join(rows) + "</ol>" + "".join(parts)


def _memory(m) -> str:
    """Each buffer a box: across the steps it is live, at its offset in the arena."""
    plan = m.program.plan
    names = {}
    for n in m.program.graph.nodes:
        for v in n.outputs:
            names.setdefault(plan.roots.get(id(v)), v.name)
    slots = list(plan.slots.items())
    steps = max([s.end for _, s in slots] + [1]) + 1
    width, height, size = 900, 360, max(plan.size, 1)
    boxes = []
    for key, s in slots:
        x, w = 40 + s.start * (width - 50) / steps, max((s.end - s.start + 1) * (width - 50) / steps, 2)
        y, h = 10 + s.offset * (height - 40) / size, max(s.size * (height - 40) / size, 1)
        label = names.get(key, "scratch")
        boxes.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{w:.1f}' height='{h:.1f}' fill='#8ab' stroke='#345'>"
                     f"<title>{html.escape(label)}: {s.size} bytes at {s.offset}, steps {s.start}-{s.end}</title></rect>")
    axes = (f"<text x='40' y='{height - 8}' font-size='12'>step 0 → {steps - 1}</text>"
            f"<text x='2' y='20' font-size='12'>0</text>"
            f"<text x='2' y='{height - 30}' font-size='12'>{plan.size // 1024} KiB</text>")
    svg = f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}'>{axes}{''.join(boxes)}</svg>"
    return (f"<p>Arena {plan.size / 1024:.1f} KiB; lower bound of any plan {plan.lower_bound() / 1024:.1f} KiB. "
            "A box is a buffer: across the steps it lives, at its offset (hover for its name).</p>" + svg)


def _profile(m) -> str:
    from .profiler import format_profile, peaks_of, profile

    rows = profile(m, m.random_inputs())
    return _pre(format_profile(rows, peaks_of(m), getattr(m.executable, "threads", 1)))
