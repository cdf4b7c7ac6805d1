"""Loop IR and everything that makes and transforms it.

ir.py         the dataclasses (Kernel, For, Store, Load, ...)
printer.py    C-like text
verify.py     scoping, dtypes, provably in-bounds accesses
simplify.py   index-expression simplifier
rules.py      each op's element as an expression (operator inlining)
lower.py      a fused group -> one kernel, and the table of lowering families:
              reduce.py, gemm.py (gpu_gemm.py for a GPU), conv_transpose.py,
              resize.py and gather.py register the loops that reduce or read
              through tables or run-time indices
schedule.py   split, reorder, fuse, vectorize, parallel, unroll; the default schedule
gpu_schedule.py  every stage as a GPU launch: a thread per iteration, or a block per row
plan.py       the memory plan (offsets in one arena, reuse by liveness)
program.py    the loop program every backend builds from: steps, kernels, plan
"""
from .ir import (Allocate, Binary, Call, Cast, Compare, Const, For, If, Kernel, Load, LoopKind, Param, Select, Seq,
                 Store, Var)
from . import conv_transpose, gather, gemm, gpu_gemm, reduce, resize  # noqa: F401  (register their lowering families)
from .printer import print_kernel
from .verify import LoopIRError, verify_kernel

__all__ = ["Allocate", "Binary", "Call", "Cast", "Compare", "Const", "For", "If", "Kernel", "Load", "LoopKind", "Param",
           "Select", "Seq", "Store", "Var", "print_kernel", "verify_kernel", "LoopIRError"]
