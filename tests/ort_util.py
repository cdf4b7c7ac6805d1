"""What onnxruntime computes exactly on this host, for tests that compare with it."""
import llvmlite.binding as llvm

_HOST = llvm.get_host_cpu_features()

# onnxruntime's u8 x s8 kernels on x86 without VNNI add pairs of products in int16
# (vpmaddubsw), which saturates (255 x 127 x 2 > 32767): a QLinearConv on a Zen 3
# was off by up to 10 in 12% of its outputs, and exact with weights in [-63, 63].
# With AVX512-VNNI or AVX-VNNI they are exact, and elsewhere they do not take that path.
ORT_U8S8_EXACT = not _HOST.get("avx2", False) or _HOST.get("avx512vnni", False) or _HOST.get("avxvnni", False)
