"""The JIT: an LLVM module optimized at O3 for this CPU, compiled to object
code, cached on disk, and loaded so that its functions can be called."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import llvmlite.binding as llvm
import llvmlite.ir as ir

from .. import cache

_INITIALIZED = False


def _target_machine():
    global _INITIALIZED
    if not _INITIALIZED:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _INITIALIZED = True
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
                                        opt=3, codemodel="jitdefault")


# Compiled code on disk is stale when any file of this backend (the code generator) changes, or
# the loop-IR helpers its vector code generation uses (simplify, transform).
CODEGEN_VERSION = cache.source_version(Path(__file__).parent, Path(__file__).parents[2] / "loops",
                                       ("simplify.py", "transform.py"))


class JitModule:
    """Native code for the LLVM module that `build()` makes, optimized at O3 for
    this CPU. The object code is cached on disk under a hash of `source` (the
    loop IR the module is generated from), so a cache hit skips code generation
    and LLVM entirely; the module is built only when someone asks to see it.
    A cache entry is loaded only once its digest checks out (cache.load)."""

    def __init__(self, build: Callable[[], ir.Module], source: str):
        self.tm = _target_machine()
        self._build, self._ir_text = build, None
        key = cache.cache_key(source, ".".join(map(str, llvm.llvm_version_info)), CODEGEN_VERSION)
        folder = cache.directory()
        self.cache_file = folder / f"{key}.o" if folder else None
        data = cache.load(self.cache_file, key) if folder else None  # verified, or None
        self.cached = data is not None
        if data is None:
            data = self.tm.emit_object(self._optimize())
            if folder:
                cache.store(self.cache_file, key, data)
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), self.tm)
        self.engine.add_object_file(llvm.ObjectFileRef.from_data(data))
        self.engine.finalize_object()

    def _optimize(self) -> llvm.ModuleRef:
        """Build the module and run LLVM's O3 pipeline on it; keeps its text for
        `optimized()` (code generation edits the module in place afterwards)."""
        module = self._build()
        module.triple = llvm.get_process_triple()
        module.data_layout = str(self.tm.target_data)
        mod = llvm.parse_assembly(str(module))
        mod.verify()
        pb = llvm.create_pass_builder(self.tm, llvm.create_pipeline_tuning_options(speed_level=3))
        pb.getModulePassManager().run(mod, pb)
        self._ir_text = str(mod)
        return mod

    def optimized(self) -> str:
        """The module's text after O3: what the object code is compiled from."""
        if self._ir_text is None:
            self._optimize()
        return self._ir_text

    def llvm_ir(self) -> str:
        return self.optimized()

    def asm(self) -> str:
        return self.tm.emit_assembly(llvm.parse_assembly(self.optimized()))
