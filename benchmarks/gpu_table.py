"""The README's GPU tables from a GPU benchmark run's JSON, as Markdown.

    python benchmarks/gpu_table.py gpu-results/bench.json

bench_gpu.py writes its rows to --json after each model (gpu_session.sh:
$OUT/bench.json), so a run the time limit cut short still has its tables.
Each row that one of the CUDA issue's goals concerns says whether it was met.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_gpu import MODEL_GOALS, SGEMM_GOAL  # noqa: E402

NAMES = {"resnet50": "ResNet-50"}


def _goal(ratio: float | None, goal: float | None) -> str:
    if goal is None:
        return "–"
    return f"≥ {goal:g}: {'met' if ratio is not None and ratio >= goal else 'not met'}"


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def tables(rows: dict) -> str:
    """The sgemm table and the models' table (rows as bench_gpu.py writes them)."""
    out = []
    s = rows.get("sgemm")
    if s:
        out += ["| | minidlc | PyTorch | ratio | goal |", "|---|---|---|---|---|",
                f"| sgemm {s['n']}³ f32, GFLOP/s (torch.matmul, TF32 off) | {s['minidlc_gflops']:,.0f} | "
                f"{s['torch_gflops']:,.0f} | {s['ratio']:.2f} | {_goal(s['ratio'], SGEMM_GOAL if s['n'] == 4096 else None)} |",
                ""]
    out += ["| model | batch | minidlc ms | minidlc ms, kernel by kernel | eager ms | eager ms, cuDNN TF32 off | "
            "torch.compile ms | eager / minidlc | compile / minidlc | minidlc build s | launches | goal |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows.get("models", []):  # (kernel by kernel: timed where minidlc ran the model as one CUDA graph)
        out.append(f"| {NAMES.get(r['model'], r['model'])} | {r['batch']} | {r['minidlc_ms']:.3f} | "
                   f"{_num(r.get('one_by_one_ms'), '.3f')} | {r['eager_ms']:.3f} | "
                   f"{r['eager_f32_ms']:.3f} | {_num(r['compile_ms'], '.3f')} | {r['eager_ratio']:.2f} | "
                   f"{_num(r['compile_ratio'], '.2f')} | {r['compile_s']:.1f} | {r['launches']} | "
                   f"{_goal(r['eager_ratio'], MODEL_GOALS.get((r['model'], r['batch'])))} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", type=Path, help="bench_gpu.py's --json file")
    print(tables(json.loads(ap.parse_args().json.read_text())))


if __name__ == "__main__":
    main()
