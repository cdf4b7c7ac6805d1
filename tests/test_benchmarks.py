"""The benchmark scripts that the README's figures come from still run (the
timings themselves are not tested: they are measured, not asserted)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def knob(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/bench_knob.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_bench_knob_compiles_both_ways_and_prints_a_ratio():
    r = knob("--set", "minidlc.loops.gemm.K_CHUNK=2**30", "--models", "mlp", "--trials", "1", "--rounds", "2",
             "--threads", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    row = next(line for line in r.stdout.splitlines() if line.startswith("mlp"))
    assert float(row.split()[-1]) > 0


def test_bench_knob_names_an_attribute_that_does_not_exist():
    r = knob("--set", "minidlc.loops.gemm.NO_SUCH_KNOB=1", "--models", "mlp")
    assert r.returncode != 0 and "minidlc.loops.gemm has no attribute 'NO_SUCH_KNOB'" in r.stderr


def test_bench_knob_measures_a_function_against_its_source_at_a_revision():
    r = knob("--set", "minidlc.loops.gemm.gemm_spec=@HEAD", "--models", "mlp", "--trials", "1", "--rounds", "2",
             "--threads", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(next(line for line in r.stdout.splitlines() if line.startswith("mlp")).split()[-1]) > 0
    r = knob("--set", "minidlc.loops.gemm.K_CHUNK=@HEAD", "--models", "mlp")
    assert r.returncode != 0 and "minidlc/loops/gemm.py at HEAD has no function 'K_CHUNK'" in r.stderr
