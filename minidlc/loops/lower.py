"""Lowering: one fused group (or one plain node) becomes one loop-IR kernel.

Values inside a group are either *inlined* (an op with a compute rule: its
element is an expression, substituted into its consumers) or *materialized*
into a buffer: the group's outputs, and the results of reductions and
matmuls, which need loops of their own. Group inputs and weights become
kernel parameters; materialized values that are not group outputs live in
scratch parameters the runtime places in its arena.

Ops whose results need loops of their own (matmul and conv in gemm.py,
reductions and pooling in reduce.py) register a *lowering family* in
`LOWERINGS`; this module never imports them, so the families may import it.

A node with no lowering raises `Unsupported`; the loop program then runs that
group on the host with the NumPy reference (and `emit("loops")` says so).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from itertools import count
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

from .. import cpu
from ..ir import Graph, Node, Value
from .ir import (MAX_VECTOR, Allocate, Binary, Call, Cast, Compare, Const, Expr, For, If, Kernel, Load, Param, Select,
                 Stmt, Store, Var, add, const, loop_nest, mul, row_major, seq)
from .mathfns import expand_math
from .rules import MULTI_RULES, NATIVE_DTYPES, RULES, STORAGE_DTYPES, WIDENED, Unsupported, clamp_index, in_range
from .simplify import simplify_stmt
from .transform import map_stmt, rename_buffers, stmt_exprs, walk_exprs, walk_stmts


class Device(str, Enum):
    """What a kernel is lowered for. Most lowerings are the same for both; the
    GEMM family builds a different loop nest for each (gemm.py, gpu_gemm.py)."""

    CPU = "cpu"
    GPU = "gpu"


# (op, device) -> lower(lowerer, node, done) -> the statement computing it; `done`
# collects the ids of nodes the family consumed as well (e.g. a GEMM's fused epilogue).
LOWERINGS: dict[tuple[str, Device], Callable[["Lowerer", Node, set], Stmt]] = {}
# Ops whose inputs may be invalid at run time (an index out of range): CHECKS[op](lw, node)
# is a statement that sets a check flag (`Lowerer.check`) when they are, or None when
# they are known valid. A group runs its checks before anything else.
CHECKS: dict[str, Callable[["Lowerer", Node], "Stmt | None"]] = {}


def register_lowering(*ops: str, devices: tuple[Device, ...] = tuple(Device)):
    """Register a lowering family for `ops` on `devices` (a decorator)."""
    def deco(fn):
        for op in ops:
            for device in devices:
                LOWERINGS[(op, device)] = fn
        return fn
    return deco


@dataclass
class Binding:
    """What runtime buffer a kernel parameter is: a group input or output
    (by position), a constant array, scratch memory, or a check flag (an i32
    the kernel sets to 1 when its input is invalid; `message` says how)."""

    param: Param
    role: str  # "input" | "output" | "const" | "scratch" | "check"
    index: int | None = None
    array: np.ndarray | None = None
    message: str = ""


@dataclass
class LoweredGroup:
    kernel: Kernel
    bindings: list[Binding]
    gemms: tuple = ()  # on a GPU: its tiled products (gpu_gemm.TiledProduct): which tile, and why


@dataclass
class Group:
    """A group as lowering sees it: body nodes, and the body values that are
    its inputs and outputs (for a plain node, the node's own values)."""

    name: str
    nodes: list[Node]
    inputs: list[Value]
    outputs: list[Value]
    constants: dict[int, np.ndarray]  # id(input) -> its value, for inputs that are weights

    @staticmethod
    def of(node: Node) -> "Group":
        outer = [v for v in node.inputs if v is not None]
        consts = [v.producer.attrs["value"] if v.producer is not None and v.producer.op == "Constant" else None
                  for v in outer]
        if node.body is not None:
            body: Graph = node.body
            inputs = list(body.inputs)
            return Group(node.attrs.get("name") or "fused", list(body.nodes), inputs, list(body.outputs),
                         {id(v): c for v, c in zip(inputs, consts) if c is not None})
        return Group(node.op.lower(), [node], outer, list(node.outputs),
                     {id(v): c for v, c in zip(outer, consts) if c is not None})


@dataclass(frozen=True)
class CpuChoices:
    """What a CPU backend's code generator asks of the lowering (both forms of
    each compute the same nodes, so fusion's probe need not know which)."""

    # convs read their input where it lies and test reads at the borders (gemm.py);
    # True: they copy it padded once instead (numba's pipeline compiles the tested
    # form's larger kernels 4x slower and runs them 2x slower)
    copy_padding: bool = False
    # a product whose columns fill panels of 32 takes a wide register block
    # (gemm.host_wide_config): llvm ran the CNN models 5 to 11% faster in it,
    # numba 15 to 23% slower
    wide_blocks: bool = False


class Lowerer:
    """Builds one kernel; `read(value, idx)` is the heart of operator inlining."""

    def __init__(self, group: Group, name: str, unused: frozenset[int] = frozenset(), device: Device = Device.CPU,
                 cpu: CpuChoices = CpuChoices(), tiles: Mapping[str, object] = MappingProxyType({})):
        self.group = group
        self.device = device
        # on a GPU: tiles tuned for products of given shapes (GemmShape.key -> gpu_gemm.GpuTile),
        # which take the place of the heuristic's choice; the products tiled, as lowered
        self.tiles = tiles
        self.gemms: list = []
        self.cpu = cpu  # the CPU backend's choices
        self.unused = unused  # positions of outputs nobody reads: they need not be computed
        self.name = name
        self.bindings: list[Binding] = []
        self.buffers: dict[int, str] = {}  # id(value) -> parameter holding it
        self.special: dict[int, object] = {}  # id(value) -> idx -> Expr (e.g. a GEMM accumulator)
        self.users: dict[int, list[Node]] = {}
        self._names: set[str] = set()
        self._vars = count()
        for n in group.nodes:
            for v in n.inputs:
                if v is not None:
                    self.users.setdefault(id(v), []).append(n)
        for i, v in enumerate(group.inputs):
            self.buffers[id(v)] = self.param(v, "input", i).name
        self.out_index = {id(v): i for i, v in enumerate(group.outputs)}

    # ---- parameters and names ---------------------------------------------------
    def fresh(self, hint: str) -> str:
        base = re.sub(r"\W", "_", hint) or "b"
        if base[0].isdigit():
            base = "v" + base
        name, k = base, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def var(self, hint: str = "i") -> Var:
        return Var(f"{hint}{next(self._vars)}")

    def vars(self, n: int, hint: str = "i") -> list[Var]:
        return [self.var(hint) for _ in range(n)]

    def param(self, v: Value, role: str, index=None, array=None) -> Param:
        dtype = v.type.dtype
        if dtype not in NATIVE_DTYPES:
            raise Unsupported(f"dtype {dtype} of %{v.name}")
        p = Param(self.fresh(v.name), dtype, max(v.type.numel, 1))
        self.bindings.append(Binding(p, role, index, array))
        return p

    def scratch(self, hint: str, dtype: str, size: int) -> str:
        p = Param(self.fresh(hint), dtype, max(size, 1))
        self.bindings.append(Binding(p, "scratch"))
        return p.name

    def check(self, message: str) -> str:
        """A check flag: the kernel stores 1 into element 0 when its input is
        invalid, and the executable raises `message` after the run."""
        p = Param(self.fresh("invalid"), "i32", 1)
        self.bindings.append(Binding(p, "check", message=message))
        return p.name

    def constant_param(self, hint: str, array: np.ndarray, dtype: str) -> str:
        p = Param(self.fresh(hint), dtype, max(array.size, 1))
        self.bindings.append(Binding(p, "const", array=np.ascontiguousarray(array)))
        return p.name

    def needed(self, v: Value) -> bool:
        """Whether anything reads v: a node of the group, or the graph (a live output)."""
        live_out = id(v) in self.out_index and self.out_index[id(v)] not in self.unused
        return live_out or bool(self.users.get(id(v)))

    def buffer_for(self, v: Value) -> str:
        """The buffer a materialized value is stored into (a group output or scratch)."""
        if id(v) in self.out_index:
            name = self.param(v, "output", self.out_index[id(v)]).name
        else:
            if v.type.dtype not in NATIVE_DTYPES:
                raise Unsupported(f"dtype {v.type.dtype} of %{v.name}")
            name = self.scratch(v.name, v.type.dtype, v.type.numel)
        return name

    def group_const(self, v: Value) -> np.ndarray | None:
        """The array of a weight (a constant input of the group or a Constant in it)."""
        if id(v) in self.group.constants:
            return self.group.constants[id(v)]
        if v.producer is not None and v.producer.op == "Constant":
            return v.producer.attrs["value"]
        return None

    # ---- reading values -----------------------------------------------------------
    def read(self, v: Value, idx: list[Expr]) -> Expr:
        """The element of `v` at multi-index `idx`, inlining producers with a rule."""
        if id(v) in self.special:
            return self.special[id(v)](idx)
        if id(v) in self.buffers:
            scalar = self.group.constants.get(id(v))
            if scalar is not None and scalar.size == 1 and v.type.dtype not in STORAGE_DTYPES:
                return Const(scalar.reshape(()).item(), v.type.dtype)  # an immediate, not a load per element
            return Load(self.buffers[id(v)], row_major(idx, v.type.shape), v.type.dtype)
        node = v.producer
        if node is not None and node.op == "Constant":
            array = node.attrs["value"]
            if array.size == 1 and v.type.dtype in NATIVE_DTYPES and v.type.dtype not in STORAGE_DTYPES:
                return Const(array.reshape(()).item(), v.type.dtype)
            self.buffers[id(v)] = self.constant_param(v.name, array, v.type.dtype)
            return self.read(v, idx)
        operand = lambda i, ix: self.read(node.inputs[i], ix)  # noqa: E731
        if node is not None and node.op in MULTI_RULES:
            return MULTI_RULES[node.op](node, node.outputs.index(v), idx, operand)
        if node is None or node.op not in RULES or len(node.outputs) != 1:
            raise Unsupported(f"{node.op if node else '?'} has no compute rule")
        return RULES[node.op](node, idx, operand)

    def store_all(self, v: Value) -> Stmt:
        """Loops that write every element of `v` into its buffer."""
        buf = self.buffer_for(v)
        idx = self.vars(v.type.rank)
        expr = self.read(v, list(idx))
        body = loop_nest(idx, list(v.type.shape), Store(buf, row_major(list(idx), v.type.shape), expr))
        self.buffers[id(v)] = buf
        return body

    # ---- the group -------------------------------------------------------------------
    def lower(self, probe: bool = False) -> LoweredGroup:
        """The kernel (raises Unsupported). A `probe` (does it lower?) skips
        simplifying it: simplification never makes a kernel fail, nor one that
        fails succeed, except that it may remove arithmetic on f16 that
        `computes_in_storage_dtype` then no longer finds: a probe may be
        stricter than the kernel it asks about, never laxer."""
        stmts: list[Stmt] = [CHECKS[n.op](self, n) for n in self.group.nodes if n.op in CHECKS]
        done: set[int] = set()
        for node in self.group.nodes:
            if id(node) in done or node.op == "Constant":
                continue
            if (node.op, self.device) in LOWERINGS:
                stmts.append(LOWERINGS[(node.op, self.device)](self, node, done))
            elif node.op in RULES or node.op in MULTI_RULES:
                for v in node.outputs:
                    if id(v) in self.out_index and self.out_index[id(v)] not in self.unused:
                        stmts.append(self.store_all(v))
            else:
                raise Unsupported(f"{node.op} has no lowering")
        for i, v in enumerate(self.group.outputs):  # an output that is an input or a constant
            if i not in self.unused and not any(b.role == "output" and b.index == i for b in self.bindings):
                idx = self.vars(v.type.rank)
                buf = self.param(v, "output", i).name
                stmts.append(loop_nest(idx, list(v.type.shape),
                                       Store(buf, row_major(list(idx), v.type.shape), self.read(v, list(idx)))))
        dtypes = {v.type.dtype for v in self.group.inputs} | {v.type.dtype for n in self.group.nodes for v in n.outputs}
        body = seq(*stmts)
        if dtypes.intersection(WIDENED):  # (no f16 value in the group: nothing to widen)
            body = widen_f16(body)
        body = expand_math(body)
        if not probe:
            body = simplify_shared(body)
        if dtypes.intersection(STORAGE_DTYPES) and computes_in_storage_dtype(body):  # (likewise)
            raise Unsupported("arithmetic on f16 or bf16, storage dtypes that kernels only load, store and convert")
        # an input read only through its packed copy is not a parameter: the
        # kernel must not keep the unpacked weights alive beside the packed ones
        used = set(buffers_used(body))
        bindings = [b for b in self.bindings if b.role != "input" or b.param.name in used]
        return LoweredGroup(Kernel(self.name, tuple(b.param for b in bindings), body), bindings, tuple(self.gemms))


def buffers_used(body: Stmt) -> list[str]:
    """Names of the buffers a statement allocates, loads from or stores to, in order of first use."""
    names: dict[str, None] = {}
    for st in walk_stmts(body):
        if isinstance(st, (Store, Allocate)):
            names[st.buf] = None
        names.update((e.buf, None) for x in stmt_exprs(st) for e in walk_exprs(x) if isinstance(e, Load))
    return list(names)


def simplify_shared(body: Stmt) -> Stmt:
    """`simplify_stmt(body)`, simplified once for every body equal up to its
    buffer names (the kernels of a repeated layer): the body is renamed to
    positional names, looked up, and the result renamed back."""
    names = {name: f"b{i}" for i, name in enumerate(buffers_used(body))}
    simplified = _simplify_canonical(rename_buffers(body, names))
    return rename_buffers(simplified, {b: name for name, b in names.items()})


@lru_cache(maxsize=512)
def _simplify_canonical(body: Stmt) -> Stmt:
    return simplify_stmt(body)


def widen_f16(body: Stmt) -> Stmt:
    """Arithmetic, comparisons and calls on f16 computed in f32, each result
    rounded to f16: what NumPy's float16 ufuncs do, op by op (a fused group
    rounds between its ops as the unfused graph would). f16 constants become
    f32 ones of the same value. bf16 stays a storage dtype (see
    `computes_in_storage_dtype`)."""
    def f32(e: Expr) -> Expr:
        if e.dtype != "f16":
            return e
        return Const(float(np.float16(e.value)), "f32") if isinstance(e, Const) else Cast(e, "f32")

    def widen(e: Expr) -> Expr | None:
        if isinstance(e, Binary) and e.dtype == "f16":
            return Cast(Binary(e.op, f32(e.a), f32(e.b)), "f16")
        if isinstance(e, Compare) and e.a.dtype == "f16":
            return Compare(e.op, f32(e.a), f32(e.b))
        if isinstance(e, Call) and e.dtype == "f16":
            return Cast(Call(e.fn, tuple(f32(a) for a in e.args)), "f16")
        return None
    return map_stmt(body, widen)


def computes_in_storage_dtype(body: Stmt) -> bool:
    """Whether `body` computes or compares in a storage dtype (f16, bf16). Kernels
    only convert those, so that nothing computes in half precision unnoticed:
    such a group runs on NumPy instead."""
    for st in walk_stmts(body):
        for e in (x for root in stmt_exprs(st) for x in walk_exprs(root)):
            operand = e.args[0] if isinstance(e, Call) else e.a if isinstance(e, (Binary, Compare)) else None
            if operand is not None and operand.dtype in STORAGE_DTYPES:
                return True
    return False


def lower_group(node: Node, name: str, unused: frozenset[int] = frozenset(), device: Device = Device.CPU,
                probe: bool = False, cpu: CpuChoices = CpuChoices(),
                tiles: Mapping[str, object] = MappingProxyType({})) -> LoweredGroup:
    """Lower a Fused node or a plain node to one kernel for `device` (raises
    Unsupported). `unused` lists the positions of outputs that nothing reads;
    `probe`: only to see whether it lowers (see `Lowerer.lower`);
    `cpu` and `tiles`: see `Lowerer`."""
    return Lowerer(Group.of(node), name, unused, device, cpu, tiles).lower(probe)


def padded_copy(lw: Lowerer, x: Value, win, pad: Expr) -> tuple[Callable[[list[Expr]], Expr], tuple, Stmt | None]:
    """(read, shape, loops that fill it): x with its padding (the value `pad`)
    materialized once, so that the convolution reads without bounds checks
    (convolutions pad with 0 or a zero point, max pools with -inf): what the
    im2col forms of conv, integer convs, GPU reads (no copy: tests) and
    everything on numba do; on a CPU the direct conv, depthwise stencils and
    max pool stencils test reads at the borders instead (`pads_in_place`,
    `read_padded`, `row_by_borders`). `read(idx)`
    is the element at a multi-index of the padded shape (x itself, unpadded,
    when there is no padding).

    Per (image, channel) plane, the loops copy each row of x into place and
    write zeros only around it: every loop has affine indices and no
    condition, so its innermost loop vectorizes into plain vector copies.
    On a GPU there is no copy (and no loops): each read selects the pad value
    where its clamped position falls outside x, which costs less than a launch."""
    if not any(win.pads):
        return lambda idx: lw.read(x, idx), x.type.shape, None
    nd = len(x.type.shape) - 2
    before, after = win.pads[:nd], win.pads[nd:]
    shape = x.type.shape[:2] + tuple(sp + before[d] + after[d] for d, sp in enumerate(x.type.shape[2:]))
    if lw.device == Device.GPU:  # no copy: each read tests whether it falls in the padding (cheaper than a launch)
        return read_padded(lw, x, win, pad, guarded=True), shape, None
    padded = lw.scratch(x.name + "_padded", x.type.dtype, math.prod(shape))
    read = lambda idx: Load(padded, row_major(idx, shape), x.type.dtype)  # noqa: E731
    plane = lw.var("p")
    outer = unflatten(plane, shape[:2])

    def zeros(d: int, start: int, extent: int, index: list[Expr]) -> Stmt | None:
        """Padding over [start, start + extent) along spatial axis d, all of the axes after it."""
        if not extent:
            return None
        v = lw.vars(nd - d, "z")
        dst = outer + index + [add(const(start), v[0])] + list(v[1:])
        return loop_nest(v, [extent] + list(shape[3 + d:]), Store(padded, row_major(dst, shape), pad))

    def fill(d: int, src: list[Expr], dst: list[Expr]) -> Stmt:
        """Spatial axes d.. of one plane: zeros before, x's extent copied, zeros after."""
        if d == nd:
            return Store(padded, row_major(outer + dst, shape), lw.read(x, outer + src))
        i = lw.var("i")
        inside = For(i, const(x.type.shape[2 + d]), fill(d + 1, src + [i], dst + [add(i, const(before[d]))]))
        return seq(zeros(d, 0, before[d], dst), inside, zeros(d, shape[2 + d] - after[d], after[d], dst))

    return read, shape, For(plane, const(math.prod(shape[:2])), fill(0, [], []))


def read_padded(lw: Lowerer, x: Value, win, pad: Expr, guarded: bool, axes: tuple[int, ...] | None = None
                ) -> Callable[[list[Expr]], Expr]:
    """x read at a multi-index of its padded shape, with no padded copy.
    Guarded, a read anywhere (along the spatial `axes` given, all by default):
    the value `pad` where the position falls outside x (the read itself is
    clamped into x, and selected away). Not guarded, a read at a position
    known to lie inside x: no test at all (see `window_interior` for where a
    window's reads are all inside)."""
    nd = len(x.type.shape) - 2
    before = win.pads[:nd]
    tested = range(nd) if axes is None else axes

    def read(idx: list[Expr]) -> Expr:
        src, inside = list(idx[:2]), None
        for d, o in enumerate(idx[2:]):
            at = Binary("-", o, const(before[d])) if before[d] else o
            if guarded and d in tested:
                size = x.type.shape[2 + d]
                at = clamp_index(at, size)
                here = in_range(o, before[d], size)
                inside = here if inside is None else Binary("and", inside, here)
            src.append(at)
        value = lw.read(x, src)
        return value if inside is None else Select(inside, value, pad)
    return read


def window_interior(win, in_spatial: tuple[int, ...], out_spatial: tuple[int, ...]) -> list[tuple[int, int]]:
    """Per spatial axis, the output positions [lo, hi) whose whole window lies
    inside the unpadded input: there a read needs no test (lo >= hi: none)."""
    nd = len(in_spatial)
    out = []
    for d in range(nd):
        before, stride, reach = win.pads[d], win.strides[d], (win.kernel[d] - 1) * win.dilations[d]
        lo = -(-before // stride)  # o * stride >= before
        hi = (in_spatial[d] - 1 + before - reach) // stride + 1  # o * stride + reach - before <= size - 1
        out.append((min(lo, out_spatial[d]), max(0, min(hi, out_spatial[d]))))
    return out


def interior_test(index: list[Expr], interior: list[tuple[int, int]] | tuple, extents) -> tuple[Expr | None, list[Expr]]:
    """For a position `index` on the first axes of `interior` (see
    `window_interior`; `extents`: those axes' sizes): whether it lies inside
    (None: always), and the position clamped into the interior, which is the
    same where it is inside and proves reads there in bounds."""
    inside, clamped = None, list(index)
    for d, (i, (lo, hi), extent) in enumerate(zip(index, interior, extents)):
        if (lo, hi) != (0, extent):
            here = in_range(i, lo, hi - lo)
            inside = here if inside is None else Binary("and", inside, here)
            clamped[d] = clamp_index(i, hi - lo, lo)
    return inside, clamped


def pads_in_place(lw: Lowerer, x: Value, win) -> bool:
    """Whether a window op reads x's padding where x lies, testing reads at the
    borders, rather than copying x padded (`padded_copy`): on a CPU, unless the
    backend copies (`CpuChoices.copy_padding`) or x is computed in the group (a
    fused channel shuffle, copied once through its index map rather than
    mapped again on every read)."""
    return any(win.pads) and lw.device == Device.CPU and not lw.cpu.copy_padding and id(x) in lw.buffers


def row_by_borders(lw: Lowerer, x: Value, win, pad: Expr, out_spatial: tuple[int, ...], lead: list[Expr],
                   stretch: Callable[[list[Expr], int, int, Callable], Stmt | None]) -> Stmt:
    """One output row of a stencil (depthwise conv, max pool) that reads x
    padded with `pad` in place (`pads_in_place`). `lead` indexes the row (the
    output's spatial axes but the last); `stretch(index, start, stop, read)`
    computes output pixels [start, stop) of the row at `index`, reading x
    with `read`. A row inside the interior reads its middle with no test and
    tests only its two ends; the rows outside test every read. A row up to
    MAX_VECTOR wide is one stretch that tests only its reads along the row: on
    llvm, straight-line vector code whose reads off the row's ends are masked
    loads, and not scalar code peeled off either end (two thirds of a
    28-wide depthwise row's instructions), where the CPU has masked loads
    of x's element size (`cpu.masked_loads`: not i8 on AVX2)."""
    tested = read_padded(lw, x, win, pad, True)
    interior = window_interior(win, x.type.shape[2:], out_spatial)
    if any(lo >= hi for lo, hi in interior[:-1]):  # no row is inside (a map smaller than the window)
        return stretch(lead, 0, out_spatial[-1], tested)
    (lo, hi), (inside, within) = interior[-1], interior_test(lead, interior, out_spatial)
    width = out_spatial[-1]
    if width <= MAX_VECTOR and cpu.masked_loads(8 * x.type.np_dtype.itemsize):
        middle = stretch(within, 0, width, read_padded(lw, x, win, pad, True, axes=(len(out_spatial) - 1,)))
    else:
        middle = seq(stretch(within, 0, lo, tested), stretch(within, lo, hi, read_padded(lw, x, win, pad, False)),
                     stretch(within, max(lo, hi), width, tested))
    return middle if inside is None else If(inside, middle, stretch(lead, 0, out_spatial[-1], tested))


def window_index(win, out: list[Expr], cell: list[Expr]) -> list[Expr]:
    """The position, in the padded input, of window cell `cell` of output pixel
    `out` (one expression per spatial axis each)."""
    return [add(mul(o, const(win.strides[d])), mul(cell[d], const(win.dilations[d]))) for d, o in enumerate(out)]


def unflatten(flat: Expr, shape: tuple[int, ...]) -> list[Expr]:
    """The multi-index of `flat` (known to be < prod(shape)): no modulo on the first axis."""
    out, stride = [], 1
    for i, d in enumerate(reversed(shape)):
        q = Binary("/", flat, const(stride)) if stride != 1 else flat
        out.append(q if i == len(shape) - 1 else Binary("%", q, const(d)))
        stride *= d
    return out[::-1]


# Accumulation helpers shared by reductions and GEMM ------------------------------------------
def accumulate(lw: Lowerer, dtype: str, init: Expr, loops: list[tuple[Var, int]], combine, finish) -> tuple[str, Stmt, Expr]:
    """`acc = init; for loops: acc = combine(acc)`; returns (acc name, statement, finish(acc))."""
    acc = lw.fresh("acc")
    cur = Load(acc, const(0), dtype)
    body: Stmt = Store(acc, const(0), combine(cur))
    for v, n in reversed(loops):
        body = For(v, const(n), body)
    return acc, seq(Store(acc, const(0), init), body), finish(cur)


def with_accumulators(accs: list[tuple[str, str]], body: Stmt) -> Stmt:
    for name, dtype in reversed(accs):
        body = Allocate(name, dtype, 1, body)
    return body


