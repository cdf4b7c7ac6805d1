"""Graph-to-graph passes and the pass manager that runs them.

    manager.py      Pass protocol, registry, -O levels, Pipeline (verifies between passes)
    instruments.py  print / diff / dump / time / trace rewrites / check numerics
    options.py      the command-line flags of all of the above
    rewrite.py      rules as data (pattern, check, rewrite, name) and the engine that applies them

    fold            constant folding through the ops' reference implementations
    dce, cse        dead code and common subexpression elimination
    simplify        algebraic peepholes (x*1, reshape chains, cast pairs, ...)
    fuse-layers     conv+bn, lone bn -> mul+add, matmul+add -> gemm, conv+bias
    fuse            operator fusion into Fused groups by fusion kind (TVM's FuseOps)
    integer-ops     QDQ around Conv/MatMul/Gemm -> ConvInteger/MatMulInteger (in -O2)

    opt-in, they change numerics (each declares its Tolerance):
    quantize        int8 post-training quantization, calibrated on data (calibrate.py)
    mixed-precision weights stored in f16 or bf16, compute in f32
    prune-channels  structured pruning of whole output channels
    low-rank        truncated-SVD decomposition of Conv/Gemm/MatMul weights

Adding a pass: a class with `name` and `run(graph) -> (graph, changed)`
(keyword arguments of its constructor become its options), decorated with
`@register_pass`, in a module imported by `_all.py`; a `context` attribute
receives the PassContext (target, calibration data), a `tolerance` attribute
states how far it may move results (default: lossless). Adding a peephole: a
`Rule` appended to `simplify.RULES` (or `fuse_layers.RULES`), plus a golden
test in tests/test_passes_cleanups.py; the random-graph tests then check it.
"""
