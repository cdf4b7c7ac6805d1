"""LLVM aborts the process it runs in when it cannot compile what it is
given. The JIT compiles in forked children, so such a bug in our code
generation is a CompileError naming the kernel, and this process lives on.
`os.abort()` in a kernel's module builder stands in for LLVM's abort: the
same signal, from the same place (the child, between two modules)."""
import os

import numpy as np
import pytest

import minidlc
from minidlc.backends import cache
from minidlc.backends.llvm import jit, program
from minidlc.cli import main
from minidlc.ir import Graph, TensorType
from minidlc.runtime import CompileError


def two_kernels() -> Graph:
    """MatMul, then Softmax and Tanh: two kernels (k_matmul, k_fused_softmax_tanh)."""
    g = Graph()
    x = g.add_input("x", TensorType((4, 8)))
    w = g.constant(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32))
    y = g.add("Softmax", [g.add("MatMul", [x, w]).output], {"axis": -1}).output
    g.outputs = [g.add("Tanh", [y]).output]
    return g


@pytest.fixture
def aborting(tmp_path, monkeypatch):
    """Make the module builder of the kernel whose name contains `part`
    abort (or raise `error`); returns the setter. The cache is empty, so
    every kernel is compiled."""
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    build = program._kernel_module

    def set_(part: str, error: Exception | None = None):
        def builder(kernel, symbol):
            if part in kernel.name:
                if error is not None:
                    raise error
                os.abort()
            return build(kernel, symbol)
        monkeypatch.setattr(program, "_kernel_module", builder)
    return set_


@pytest.mark.parametrize("jobs,parallel", [("1", False), ("2", True)])
def test_an_llvm_abort_is_an_error_naming_the_kernel(aborting, monkeypatch, jobs, parallel):
    """In one child, or in a pool of workers (which breaks, and hands its units
    to one child to find the one that kills it)."""
    monkeypatch.setenv("MINIDLC_COMPILE_JOBS", jobs)
    if parallel:
        monkeypatch.setattr(jit, "PARALLEL_MIN_SOURCE", 0)
    aborting("softmax")
    with pytest.raises(CompileError, match=r"LLVM failed on kernel k_fused_softmax_tanh \(killed by SIGABRT\): a bug"):
        minidlc.compile(two_kernels(), target="llvm")
    aborting("no kernel has this name")  # and this process still compiles and runs models
    m = minidlc.compile(two_kernels(), target="llvm")
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(4, 8)
    want = minidlc.compile(two_kernels(), target="reference").run({"x": x})
    np.testing.assert_allclose(list(m.run({"x": x}).values())[0], list(want.values())[0], rtol=1e-5, atol=1e-6)


def test_an_exception_in_the_child_is_raised_as_itself(aborting):
    aborting("tanh", ValueError("no lowering for this"))
    with pytest.raises(ValueError, match="no lowering for this"):
        minidlc.compile(two_kernels(), target="llvm")


def test_the_command_line_reports_it_in_one_line(aborting, tmp_path, capsys):
    from minidlc.frontends.onnx.export import export_onnx
    import onnx
    path = tmp_path / "two.onnx"
    onnx.save(export_onnx(two_kernels()), path)
    aborting("matmul")
    assert main(["compile", str(path), "--target", "llvm", "--emit", "loops"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minidlc: error: LLVM failed on kernel k_matmul (killed by SIGABRT)")
