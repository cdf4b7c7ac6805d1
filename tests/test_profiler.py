"""The per-kernel profiler (`--profile`) and the machine's peaks (`minidlc machine`)."""
import json

import pytest

import minidlc
from minidlc import cpu, machine
from minidlc.backends import cache
from minidlc.cli import main
from minidlc.demo_models import build_model
from minidlc.ir.cost import node_flops
from minidlc.loops.program import StepKind
from minidlc.profiler import format_profile, profile, to_json
from test_passes_fusion import host_chain, host_chain_feeds

PEAKS = {"cpu": "test", "cores": 2, "gflops": 100.0, "gflops_one_thread": 50.0, "gbps": 20.0}


@pytest.mark.parametrize("target", ["llvm", "numba"])
def test_one_row_per_kernel_with_its_nodes_flops_and_time(target):
    m = minidlc.compile(build_model("mlp"), target=target)
    rows = profile(m, m.random_inputs(), repeat=3)
    kernels = [s for s in m.program.steps if s.kind == StepKind.KERNEL]
    assert [r.name for r in rows] == [s.lowered.kernel.name for s in kernels]
    assert [r.flops for r in rows] == [node_flops(s.node) for s in kernels]
    assert rows[0].computes == "Gemm %fc1.add_4_0 (fc1.add_4), Relu %relu1_5 (relu1_5)"
    assert rows[0].bytes >= 784 * 512 * 4  # at least the weights
    assert all(r.seconds > 0 and r.kind == "kernel" for r in rows)
    text = format_profile(rows, PEAKS, threads=2)
    assert text.splitlines()[0].split()[:4] == ["kernel", "ms", "share", "GFLOP/s"]
    assert "compute" in text and text.splitlines()[-1].startswith("total")


def test_a_numpy_fallback_is_a_row_too_and_json_holds_a_chrome_trace():
    m = minidlc.compile(host_chain(), target="llvm")
    feeds = host_chain_feeds()
    rows = profile(m, feeds, repeat=2)
    assert [r.kind for r in rows] == ["host", "kernel"]
    assert "(NumPy)" in format_profile(rows, PEAKS, threads=2)
    data = json.loads(to_json(rows, PEAKS, threads=2))
    assert [e["name"] for e in data["traceEvents"]] == [r.name for r in rows]
    assert data["traceEvents"][1]["ts"] == pytest.approx(data["traceEvents"][0]["dur"])


def test_the_reference_target_has_no_kernels_to_profile():
    m = minidlc.compile(build_model("mlp"))
    with pytest.raises(ValueError, match="use llvm, numba or cuda"):
        profile(m, m.random_inputs())


def test_peaks_are_measured_once_per_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    calls = []
    monkeypatch.setattr(machine, "measure", lambda: calls.append(1) or {**PEAKS, "cpu": cpu.describe()})
    assert machine.peaks()["gflops"] == 100.0 and machine.peaks()["gbps"] == 20.0
    assert len(calls) == 1
    (tmp_path / "machine.json").write_text("{damaged")
    machine.peaks()
    assert len(calls) == 2


def test_run_profile_on_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(machine, "peaks", lambda remeasure=False: PEAKS)
    path = tmp_path / "mlp.onnx"
    path.write_bytes(build_model("mlp").SerializeToString())
    out_json = tmp_path / "p.json"
    assert main(["run", str(path), "--target", "llvm", "--random-inputs", "--profile",
                 "--profile-json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "k_fused_gemm_relu" in out and "total" in out
    assert json.loads(out_json.read_text())["machine"] == PEAKS


def test_bench_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(machine, "peaks", lambda remeasure=False: PEAKS)
    path = tmp_path / "mlp.onnx"
    path.write_bytes(build_model("mlp").SerializeToString())
    assert main(["bench", str(path), "--target", "llvm", "--compare", "reference", "--repeat", "3", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "runner/minidlc" in out and "k_fused_gemm_relu" in out
