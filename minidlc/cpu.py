"""The CPU that native code is generated for: the host's, as LLVM names it
and lists its features, or a lesser x86-64 level of it.

`MINIDLC_CPU_LEVEL=x86-64-v3` (or v2) keeps only the host features of that
level, so that an AVX-512 machine compiles and runs the AVX2 code that a Zen 1
would get: the register blocks, vector widths and instructions chosen from
the features, and LLVM's own code generation, all follow. The CI machine's
CPU changes between runs, so the tests run one model set this way too. Only
code the host can run can be asked for; the numba backend follows Numba's
own setting (`NUMBA_CPU_NAME`).

Everything that chooses code by the CPU (the GEMM blocks, the llvm backend,
the caches' keys) asks here, so one setting moves them all together.
"""
from __future__ import annotations

import functools
import os

# x86-64 microarchitecture levels (the psABI's), by LLVM's feature names: each level has its
# own and those of the levels below. A feature no level lists (AVX-512's, AMX, ...) is above v3.
_LEVELS = {
    "x86-64-v2": ("cmov", "cx8", "fxsr", "mmx", "sse", "sse2", "64bit", "cx16", "sahf", "popcnt", "sse3",
                  "sse4.1", "sse4.2", "ssse3", "crc32"),
    "x86-64-v3": ("avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"),
}
LEVEL_VARIABLE = "MINIDLC_CPU_LEVEL"


class CpuLevelError(ValueError):
    """MINIDLC_CPU_LEVEL names no level we know."""


def _level_features(level: str) -> set[str]:
    names = list(_LEVELS)
    if level not in _LEVELS:
        raise CpuLevelError(f"{LEVEL_VARIABLE}={level!r}: expected one of {', '.join(names)} (or unset: the host's CPU)")
    return {f for name in names[:names.index(level) + 1] for f in _LEVELS[name]}


@functools.lru_cache(maxsize=None)
def features() -> dict[str, bool]:
    """Feature name -> present, for the CPU code is generated for."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    host = dict(llvm.get_host_cpu_features())
    level = os.environ.get(LEVEL_VARIABLE)
    if not level:
        return host
    kept = _level_features(level)
    return {name: on and name in kept for name, on in host.items()}


def has(feature: str) -> bool:
    """Whether the target CPU has `feature` ("avx512vnni")."""
    return features().get(feature, False)


def masked_loads(bits: int) -> bool:
    """Whether a vector load of `bits`-bit elements can leave lanes unread, in one
    instruction: AVX's vmaskmovps/pd for 32 and 64 bits, AVX-512BW's for 8 and 16
    (elsewhere LLVM branches around each lane's load)."""
    return has("avx512bw") if bits < 32 else has("avx")


@functools.lru_cache(maxsize=None)
def name() -> str:
    """LLVM's name for the target CPU: the host's, or the level asked for."""
    import llvmlite.binding as llvm

    return os.environ.get(LEVEL_VARIABLE) or llvm.get_host_cpu_name()


def feature_string() -> str:
    """The features as LLVM's target machine takes them: "+avx2,-avx512f,..."."""
    return ",".join(("+" if on else "-") + f for f, on in sorted(features().items()))


@functools.lru_cache(maxsize=None)
def describe() -> str:
    """The target triple, CPU name and features: what compiled code is keyed by."""
    import llvmlite.binding as llvm

    return f"{llvm.get_process_triple()} {name()} {feature_string()}"
