#!/bin/bash
# Everything that needs a real GPU, in one call: the GPU benchmark, then the
# tests marked gpu. The goals come first (sgemm, ResNet-50 at batch 32,
# the demo models at batch 1), in case the time runs out. The GEMM tiles of sgemm and
# of ResNet-50 at batch 32 come tuned from the records shipped for an H200
# (minidlc/backends/cuda/tuned/); on another GPU, add --tune sgemm,resnet50:32
# to BENCH_ARGS (tuning ResNet-50 took 154 s on the H200), and the records
# land in $OUT/tuning. Logs go to $OUT (default: gpu-results/), with the
# benchmark's rows in $OUT/bench.json (benchmarks/gpu_table.py makes the
# README's tables of them). Run from the repo root:
#     bash benchmarks/gpu_session.sh
# If numba.cuda cannot be imported with the installed NumPy, put a NumPy that
# Numba supports first on PYTHONPATH (wheels in .whl/, see DEVELOPING.md).
# The gpu tests compile a few kernels each (seconds apiece in Numba CUDA):
# with pytest-xdist (installed from .whl/ where missing) they run in
# $TEST_WORKERS processes sharing the GPU (default 6: each may start compile
# workers of its own).
set -o pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# numba-cuda 0.68 imports with NumPy 2.5 but fails at its first compile (np.row_stack is gone): try one
if ! python3 -c "from numba import cuda; cuda.compile_ptx(lambda a: None, 'void(float32[:])', cc=(9, 0))" \
        2>"$OUT/numba-import.log"; then
    if ls .whl/numpy-*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/numpy-*.whl
        export PYTHONPATH="/tmp/site:$PYTHONPATH"
    fi
fi
if ! python3 -c "import xdist" 2>/dev/null && ls .whl/pytest_xdist-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-xdist .whl/pytest_xdist-*.whl \
        .whl/execnet-*.whl && export PYTHONPATH="/tmp/site-xdist${PYTHONPATH:+:$PYTHONPATH}"
fi
WORKERS=$(python3 -c "import xdist, execnet" 2>/dev/null && echo "-n ${TEST_WORKERS:-6}")
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import numba, numpy, torch; print('numba', numba.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
timeout "${BENCH_S:-330}" python3 benchmarks/bench_gpu.py ${BENCH_ARGS:---models resnet50:32,mlp:1,convnet:1,tfblock:1,mlp:32,convnet:32,resnet50:1 --compile-for mlp,convnet,tfblock --profile mlp:1,resnet50:32} --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
timeout "${TEST_S:-150}" python3 -m pytest -m gpu -q -p no:cacheprovider -x $WORKERS tests/test_cuda.py tests/test_onnx_conformance.py 2>&1 | tee "$OUT/pytest.log" | tail -25
cp -r "${MINIDLC_CACHE:-$HOME/.cache/minidlc}/tuning" "$OUT/" 2>/dev/null
