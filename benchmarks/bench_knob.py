"""One code change, measured: each demo model compiled as the code is, and with
one module attribute replaced (a constant, or a function that turns a
transformation off), timed in turns in one process.

    python benchmarks/bench_knob.py --set "minidlc.loops.gemm.K_CHUNK=2**30" [--models mlp,tfblock]
    python benchmarks/bench_knob.py --set "minidlc.backends.llvm.codegen.VectorCodegen._tile_column=lambda *a: None"
    python benchmarks/bench_knob.py --set "minidlc.loops.gemm.lower_depthwise=@6fb3465"
                                    [--target llvm] [--threads N] [--trials 3] [--rounds 30]

Prints, per model, the median ms of each (over the trials), the ratio of each
trial (ms with the attribute replaced / ms as is: above 1, the code as it is
runs faster) and their median. Every
trial compiles both anew, each into an empty cache (the caches are keyed by
the source, not by a replaced attribute), so one trial's lucky or unlucky
memory placement does not decide the result, and every other trial builds
and times them in the opposite order; the outputs of the two must agree.
Use an even number of trials with threads. This is how the README's "in one process against the code without
it" figures were measured. The value after `=` is a Python expression, or
`@REV`: the function of that name as it was at git revision REV (its code
swapped in, so that a registry holding the function runs it too; it sees the
module as it is now), to measure a change against the code before it.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
import numpy as np  # noqa: E402

import minidlc  # noqa: E402
import minidlc.compile_cache  # noqa: E402
from minidlc.backends import cache  # noqa: E402
from minidlc.benchmarking import time_interleaved  # noqa: E402
from minidlc.demo_models import build_model  # noqa: E402


def resolve(path: str):
    """(owner, attribute name) of a dotted path module.Class.attr: the longest
    importable prefix is the module."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        if not hasattr(owner, parts[-1]):
            raise SystemExit(f"--set: {'.'.join(parts[:-1])} has no attribute {parts[-1]!r}")
        return owner, parts[-1]
    raise SystemExit(f"--set: no module in {path!r}")


def function_at(revision: str, owner, name: str):
    """Function `name` of `owner` (a module, or a class: its method) as at git
    `revision`, defined in the module's present namespace (so it calls the
    present versions of the rest)."""
    module = sys.modules[owner.__module__] if isinstance(owner, type) else owner
    path = Path(module.__file__).relative_to(ROOT).as_posix()
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{path}"], capture_output=True,
                            text=True, check=True).stdout
    body = ast.parse(source).body
    if isinstance(owner, type):
        body = next((c.body for c in body if isinstance(c, ast.ClassDef) and c.name == owner.__name__), [])
    found = [f for f in body if isinstance(f, ast.FunctionDef) and f.name == name]
    if not found:
        raise SystemExit(f"--set: {path} at {revision} has no function {name!r}")
    found[0].decorator_list = []  # (a registering decorator would replace the present one everywhere)
    namespace = dict(vars(module))
    exec(compile(ast.Module(found, []), f"{path}@{revision}", "exec"), namespace)  # noqa: S102 (the repo's own code)
    return namespace[name]


def compiled(model, target: str, threads: int | None):
    cache.CACHE_DIR = Path(tempfile.mkdtemp(prefix="minidlc-knob-"))  # nothing compiled before is reused
    return minidlc.compile(model, target=target, **({"threads": threads} if threads else {}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", required=True, metavar="MODULE.ATTR=EXPR")
    ap.add_argument("--models", default="mlp,tfblock,convnet,mobilenet,squeezenet,resnet")
    ap.add_argument("--target", default="llvm")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=30, help="turns each runner takes")
    ap.add_argument("--block", type=int, default=3, help="runs per turn")
    args = ap.parse_args()
    path, _, expr = args.set.partition("=")
    owner, name = resolve(path.strip())
    original = getattr(owner, name)
    if expr.strip().startswith("@"):  # the function keeps its identity (registries hold it), its code is swapped
        earlier = function_at(expr.strip()[1:], owner, name)
        codes = {which: (f.__code__, f.__defaults__, f.__kwdefaults__)
                 for which, f in (("as is", original), ("replaced", earlier))}

        def install(which: str) -> None:
            original.__code__, original.__defaults__, original.__kwdefaults__ = codes[which]
    else:
        values = {"as is": original, "replaced": eval(expr)}  # noqa: S307 (a developer's own expression)

        def install(which: str) -> None:
            setattr(owner, name, values[which])
    minidlc.compile_cache.key = lambda *a, **k: None  # no whole-program cache either
    print(f"{path.strip()} = {expr.strip()}  (target {args.target}, threads {args.threads or 'all'})")
    print(f"{'model':<11} ms as is  ms replaced   replaced/as is per trial   median")
    for model_name in args.models.split(","):
        model = build_model(model_name)
        ratios, times = [], []
        for trial in range(args.trials):
            built = {}
            # odd trials build (and time) the replaced one first: with threads, the model
            # built second ran up to 10% faster with nothing replaced (mobilenet, two teams
            # of threads in one process), so the order must alternate for a fair median
            for which in (("as is", "replaced") if trial % 2 == 0 else ("replaced", "as is")):
                install(which)
                try:
                    built[which] = compiled(model, args.target, args.threads)
                finally:
                    install("as is")
            as_is, other = built["as is"], built["replaced"]
            feeds = as_is.random_inputs()
            for out, want in zip(other.run(feeds).values(), as_is.run(feeds).values()):
                np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5, err_msg=model_name)
            ms = time_interleaved({which: (lambda m=m: m.run(feeds)) for which, m in built.items()},
                                  rounds=args.rounds, block=args.block)
            ratios.append(ms["replaced"] / ms["as is"])
            times.append((ms["as is"], ms["replaced"]))
        as_is_ms, replaced_ms = np.median(times, axis=0)
        print(f"{model_name:<11}{as_is_ms:>9.3f}{replaced_ms:>13.3f}   {' '.join(f'{r:.3f}' for r in ratios):<26}"
              f"{float(np.median(ratios)):>7.3f}", flush=True)


if __name__ == "__main__":
    main()
