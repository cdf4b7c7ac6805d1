"""Lowering of reductions: Reduce*, Softmax/LogSoftmax, LayerNormalization,
pooling, and CumSum.

Each becomes loops over the kept axes around an accumulator loop over the
reduced axes (`acc` is a one-element local array, which LLVM keeps in a
register). Softmax makes four passes over a row (max; exponentials, stored
into the output; their sum; scaling the output by its inverse), so that exp
runs once an element; LogSoftmax three (max, sum of exponentials, write);
layer normalization three as well (mean, variance, normalize): two-pass
statistics are more accurate than one-pass sums of squares. The input
element is re-read (and its producers re-computed) in each pass instead of
being stored. CumSum is a reduction that stores its
accumulator after every step.
"""
from __future__ import annotations

import math

from ..ir import Node
from ..ir.ops.nn import einsum_terms
from ..ir.ops.norm import STASH_DTYPES
from .ir import (HIGHEST, LOWEST, Allocate, Binary, Call, Cast, Compare, Const, Expr, For, Load, LoopKind, Select, Stmt,
                 Store, Var, add, const, loop_nest, row_major, seq)
from .lower import (Lowerer, accumulate, padded_copy, pads_in_place, register_lowering, row_by_borders, unflatten,
                    window_index, with_accumulators)
from .rules import FLOATS, Unsupported


def _split_axes(lw: Lowerer, shape: tuple[int, ...], axes: set[int]):
    """Fresh variables for the kept and the reduced axes, and the input index."""
    kept = [lw.var("i") if a not in axes else None for a in range(len(shape))]
    red = [lw.var("r") if a in axes else None for a in range(len(shape))]
    idx = [k if k is not None else r for k, r in zip(kept, red)]
    return kept, red, idx


@register_lowering("ReduceSum", "ReduceMean", "ReduceProd", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL2")
def _reduce(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    rank = node.inputs[0].type.rank
    axes = {a % max(rank, 1) for a in node.attrs["axes"]} if node.attrs["axes"] else set(range(rank))
    return _reduce_axes(lw, node, node.op, axes, bool(node.attrs["keepdims"]))


@register_lowering("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    """GlobalAveragePool/GlobalMaxPool: a mean or max over the spatial axes, kept."""
    op = "ReduceMean" if node.op == "GlobalAveragePool" else "ReduceMax"
    return _reduce_axes(lw, node, op, set(range(2, node.inputs[0].type.rank)), True)


def _reduce_axes(lw: Lowerer, node: Node, op: str, axes: set[int], keepdims: bool) -> Stmt:
    x, out = node.inputs[0], node.outputs[0]
    dt = out.type.dtype
    kept, red, idx = _split_axes(lw, x.type.shape, axes)
    n = math.prod(x.type.shape[a] for a in axes)
    elem = lw.read(x, idx)
    acc_dt = dt
    if op in ("ReduceMean", "ReduceL2") and dt not in FLOATS:
        raise Unsupported(f"{op} on {dt}")
    if op == "ReduceL2":
        acc_dt, elem = "f64", Cast(elem, "f64")
    if dt == "bool" and op in BOOL_REDUCTIONS:  # Max is any, Min all
        start, combine_op = BOOL_REDUCTIONS[op]
        init, combine, finish = Const(start, dt), lambda a: Binary(combine_op, a, elem), lambda a: a
    elif dt not in LOWEST:  # bool, f16
        raise Unsupported(f"{node.op} on {dt}")
    else:
        init, combine, finish = _number_reduction(op, dt, acc_dt, elem, n)
    acc, body, result = accumulate(lw, acc_dt, init, [(r, x.type.shape[a]) for a, r in enumerate(red) if r is not None],
                                   combine, finish)
    buf = lw.buffer_for(out)
    out_idx = [k for k in kept if k is not None] if not keepdims else \
        [k if k is not None else const(0) for k in kept]
    store = Store(buf, row_major(out_idx, out.type.shape), result)
    lw.buffers[id(out)] = buf
    kept_loops = [(k, x.type.shape[a]) for a, k in enumerate(kept) if k is not None]
    return loop_nest([v for v, _ in kept_loops], [e for _, e in kept_loops],
                     with_accumulators([(acc, acc_dt)], seq(body, store)))


BOOL_REDUCTIONS = {"ReduceMax": (False, "or"), "ReduceMin": (True, "and")}  # op -> (start, combine)


def _number_reduction(op: str, dt: str, acc_dt: str, elem: Expr, n: int) -> tuple:
    """(initial value, combine, finish) of reduction `op` over numbers of `dt`
    (`n` of them), accumulated in `acc_dt`."""
    zero, one = Const(0, acc_dt), Const(1, acc_dt)
    return {
        "ReduceSum": (zero, lambda a: Binary("+", a, elem), lambda a: a),
        "ReduceMean": (zero, lambda a: Binary("+", a, elem), lambda a: Binary("/", a, Const(float(n), dt))),
        "ReduceProd": (one, lambda a: Binary("*", a, elem), lambda a: a),
        "ReduceMax": (Const(LOWEST[dt], dt), lambda a: Binary("max", a, elem), lambda a: a),
        "ReduceMin": (Const(HIGHEST[dt], dt), lambda a: Binary("min", a, elem), lambda a: a),
        "ReduceSumSquare": (zero, lambda a: Binary("+", a, Binary("*", elem, elem)), lambda a: a),
        "ReduceL2": (zero, lambda a: Binary("+", a, Binary("*", elem, elem)), lambda a: Cast(Call("sqrt", (a,)), dt)),
    }[op]


@register_lowering("ArgMax", "ArgMin")
def _arg_extreme(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    """ArgMax/ArgMin: one pass along the axis with two accumulators, the best
    value and its index, replaced together when an element is better: strictly
    (the first of ties wins) or, with select_last_index, also when equal (the
    last wins). A NaN beats every number, as NumPy's argmax has it: the first
    NaN, or the last."""
    x, out = node.inputs[0], node.outputs[0]
    dt, shape = x.type.dtype, x.type.shape
    if dt not in LOWEST:
        raise Unsupported(f"{node.op} on {dt}")
    axis, last = node.attrs["axis"] % x.type.rank, node.attrs["select_last_index"]
    kept, red, idx = _split_axes(lw, shape, {axis})
    j = red[axis]
    elem = lw.read(x, idx)
    best, where = lw.fresh("best"), lw.fresh("index")
    b = Load(best, const(0), dt)
    better = {("ArgMax", 0): ">", ("ArgMax", 1): ">=", ("ArgMin", 0): "<", ("ArgMin", 1): "<="}[node.op, last]
    wins = Compare(better, elem, b)
    if dt in FLOATS:
        nan_x, nan_b = Compare("!=", elem, elem), Compare("!=", b, b)
        wins = Binary("or", nan_x, Binary("and", wins, Binary("xor", nan_b, Const(True, "bool")))) if last else \
            Binary("or", wins, Binary("and", nan_x, Binary("xor", nan_b, Const(True, "bool"))))
    start = Const(LOWEST[dt] if node.op == "ArgMax" else HIGHEST[dt], dt)
    scan = For(j, const(shape[axis]), seq(Store(where, const(0), Select(wins, j, Load(where, const(0), "i64"))),
                                          Store(best, const(0), Select(wins, elem, b))))
    buf = lw.buffer_for(out)
    lw.buffers[id(out)] = buf
    out_idx = [k if k is not None else const(0) for k in kept] if node.attrs["keepdims"] else \
        [k for k in kept if k is not None]
    body = seq(Store(best, const(0), start), Store(where, const(0), const(0)), scan,
               Store(buf, row_major(out_idx, out.type.shape), Load(where, const(0), "i64")))
    kept_loops = [(k, shape[a]) for a, k in enumerate(kept) if k is not None]
    return loop_nest([v for v, _ in kept_loops], [e for _, e in kept_loops],
                     with_accumulators([(best, dt), (where, "i64")], body))


def _row_loops(lw: Lowerer, shape: tuple[int, ...], axes: list[int]):
    """Kept-axis variables, and a function giving the full index for fresh reduced variables."""
    kept = {a: lw.var("i") for a in range(len(shape)) if a not in axes}

    def index(red: dict[int, Var]) -> list[Expr]:
        return [kept[a] if a in kept else red[a] for a in range(len(shape))]

    def fresh_red() -> dict[int, Var]:
        return {a: lw.var("j") for a in axes}

    return kept, index, fresh_red


@register_lowering("Softmax", "LogSoftmax")
def _softmax(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    x, out = node.inputs[0], node.outputs[0]
    dt = out.type.dtype
    if dt not in FLOATS:
        raise Unsupported(f"{node.op} on {dt}")
    shape = x.type.shape
    axis = node.attrs["axis"] % len(shape)
    kept, index, fresh = _row_loops(lw, shape, [axis])
    r1, r2, r3 = fresh(), fresh(), fresh()
    m_acc, m_body, m = accumulate(lw, dt, Const(-math.inf, dt), [(r1[axis], shape[axis])],
                                  lambda a: Binary("max", a, lw.read(x, index(r1))), lambda a: a)
    # x - max, at most 0: a producer recomputed in each pass (an Exp, say) may differ
    # there by an ulp (contracted into an FMA in one pass, not in another), and an
    # ulp of 1e35 over the max would make exp() of it inf
    shifted = lambda r: Binary("min", Binary("-", lw.read(x, index(r)), m), Const(0.0, dt))  # noqa: E731
    buf = lw.buffer_for(out)
    lw.buffers[id(out)] = buf
    at = lambda r: row_major(index(r), shape)  # noqa: E731
    if node.op == "LogSoftmax":  # x - max - log(sum): each pass recomputes exp, which is cheap beside a store
        s_acc, s_body, s = accumulate(lw, dt, Const(0.0, dt), [(r2[axis], shape[axis])],
                                      lambda a: Binary("+", a, Call("exp", (shifted(r2),))), lambda a: a)
        write = For(r3[axis], const(shape[axis]), Store(buf, at(r3), Binary("-", shifted(r3), Call("log", (s,)))))
        passes = [s_body, write]
    else:  # the exponentials are stored, then summed, then scaled in place: exp runs once an element
        r4 = fresh()
        s_acc, s_body, s = accumulate(lw, dt, Const(0.0, dt), [(r3[axis], shape[axis])],
                                      lambda a: Binary("+", a, Load(buf, at(r3), dt)), lambda a: a)
        inv = Binary("/", Const(1.0, dt), s)
        passes = [For(r2[axis], const(shape[axis]), Store(buf, at(r2), Call("exp", (shifted(r2),)))), s_body,
                  For(r4[axis], const(shape[axis]), Store(buf, at(r4), Binary("*", Load(buf, at(r4), dt), inv)))]
    return loop_nest(list(kept.values()), [shape[a] for a in kept],
                     with_accumulators([(m_acc, dt), (s_acc, dt)], seq(m_body, *passes)))


@register_lowering("LayerNormalization", "InstanceNormalization")
def _layernorm(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    """Statistics over the trailing axes (from `axis`; for InstanceNormalization,
    the spatial axes of each (image, channel) plane), then scale and shift:
    LayerNormalization's broadcast against those axes, InstanceNormalization's
    per channel."""
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    dt = y.type.dtype
    instance = node.op == "InstanceNormalization"
    stash = dt if instance else STASH_DTYPES[node.attrs["stash_type"]]  # the node may have only its first output
    if dt not in FLOATS or stash != dt:
        raise Unsupported(f"{node.op} on {dt} with stash type {stash}")
    shape = x.type.shape
    axis = 2 if instance else node.attrs["axis"] % len(shape)
    axes = list(range(axis, len(shape)))
    n = math.prod(shape[axis:])
    kept, index, fresh = _row_loops(lw, shape, axes)
    r1, r2, r3 = fresh(), fresh(), fresh()
    inner = lambda r: [(r[a], shape[a]) for a in axes]  # noqa: E731
    mean_acc, mean_body, mean = accumulate(lw, dt, Const(0.0, dt), inner(r1),
                                           lambda a: Binary("+", a, lw.read(x, index(r1))),
                                           lambda a: Binary("/", a, Const(float(n), dt)))
    centered = lambda r: Binary("-", lw.read(x, index(r)), mean)  # noqa: E731
    var_acc, var_body, var = accumulate(lw, dt, Const(0.0, dt), inner(r2),
                                        lambda a: Binary("+", a, Binary("*", centered(r2), centered(r2))),
                                        lambda a: Binary("/", a, Const(float(n), dt)))
    inv_std = Binary("/", Const(1.0, dt), Call("sqrt", (Binary("+", var, Const(node.attrs["epsilon"], dt)),)))

    def param(p, r):  # scale and bias broadcast against the normalized axes (or per channel)
        if instance:
            return lw.read(p, [kept[1]])
        tail = [r[a] for a in axes]
        return lw.read(p, tail[len(tail) - p.type.rank:] if p.type.rank else [])

    # the statistics of a row are stored once into a two-element local, then reused
    stats = lw.fresh("stats")
    mean_l, inv_l = Load(stats, const(0), dt), Load(stats, const(1), dt)
    value = Binary("*", Binary("*", Binary("-", lw.read(x, index(r3)), mean_l), inv_l), param(scale, r3))
    if bias is not None:
        value = Binary("+", value, param(bias, r3))
    outs: list[Stmt] = []
    ybuf = lw.buffer_for(y)
    outs.append(loop_nest([r3[a] for a in axes], [shape[a] for a in axes],
                          Store(ybuf, row_major(index(r3), shape), value)))
    lw.buffers[id(y)] = ybuf
    row = [kept[a] for a in kept] + [const(0)] * len(axes)
    for v, e in zip(node.outputs[1:], (mean_l, inv_l)):
        if lw.needed(v):
            buf = lw.buffer_for(v)
            outs.append(Store(buf, row_major(row, v.type.shape), e))
            lw.buffers[id(v)] = buf
    body = seq(mean_body, Store(stats, const(0), mean), var_body, Store(stats, const(1), inv_std), *outs)
    body = Allocate(stats, dt, 2, with_accumulators([(mean_acc, dt), (var_acc, dt)], body))
    return loop_nest(list(kept.values()), [shape[a] for a in kept], body)


STENCIL_MAX_CELLS = 64  # larger pooling windows loop over the window instead of writing out every cell


def _max_pool(lw: Lowerer, node: Node) -> Stmt:
    """MaxPool as a stencil: each output element is the max of its window's
    cells as one expression, with no accumulator, vectorized along the output
    row. The padding (-inf, or an integer dtype's least value; also past the
    end for ceil_mode's extra cells) is read in place on a CPU, as a
    depthwise conv's: the rows' middles read with no test, the borders test
    (lower.row_by_borders); otherwise the input is copied padded once. (Windows of more than STENCIL_MAX_CELLS cells take
    _window_pool's loop.)"""
    from itertools import product

    from ..ir.ops.windows import Window

    x, out = node.inputs[0], node.outputs[0]
    a, dt = node.attrs, out.type.dtype
    win = Window.of(a["kernel_shape"], a["strides"], a["dilations"], a["pads"])
    spatial, out_sp = x.type.shape[2:], out.type.shape[2:]
    n = len(spatial)
    reach = [(out_sp[d] - 1) * win.strides[d] + (win.kernel[d] - 1) * win.dilations[d] + 1 for d in range(n)]
    after = [max(win.pads[n + d], reach[d] - win.pads[d] - spatial[d]) for d in range(n)]
    padded = Window.of(win.kernel, win.strides, win.dilations, list(win.pads[:n]) + after)
    pad = Const(LOWEST[dt], dt)  # (-inf for floats)
    read_src, _, prologue = (None, None, None) if pads_in_place(lw, x, padded) else padded_copy(lw, x, padded, pad)
    plane, o = lw.var("p"), lw.vars(n, "o")
    lead = unflatten(plane, x.type.shape[:2])
    buf = lw.buffer_for(out)
    lw.buffers[id(out)] = buf

    def stretch(index: list[Expr], start: int, stop: int, read) -> Stmt | None:
        """Output pixels [start, stop) of the row at `index`, their windows read with `read`."""
        if stop <= start:
            return None
        at = index + [add(o[-1], const(start)) if start else o[-1]]
        cells = [read(lead + window_index(win, at, [const(c) for c in r])) for r in product(*(range(k) for k in win.kernel))]
        while len(cells) > 1:  # a balanced tree of maxes: independent operations, a short dependency chain
            cells = [Binary("max", *cells[i:i + 2]) if i + 1 < len(cells) else cells[i] for i in range(0, len(cells), 2)]
        return For(o[-1], const(stop - start), Store(buf, row_major(lead + at, out.type.shape), cells[0]),
                   LoopKind.VECTORIZED)

    row = row_by_borders(lw, x, padded, pad, out_sp, list(o[:-1]), stretch) if read_src is None else \
        stretch(list(o[:-1]), 0, out_sp[-1], read_src)
    planes = math.prod(out.type.shape[:2])
    return seq(prologue, For(plane, const(planes), loop_nest(list(o[:-1]), list(out_sp[:-1]), row),
                             LoopKind.PARALLEL if out.type.numel * math.prod(win.kernel) >= (1 << 16) else LoopKind.SERIAL))


@register_lowering("MaxPool", "AveragePool")
def _window_pool(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    """MaxPool/AveragePool: loops over the output, an accumulator over the window.
    Cells outside the input (pads, ceil_mode's extra cells) are skipped by a
    select; AveragePool also counts the cells its divisor includes. (MaxPool
    with a small window is a stencil: _max_pool.)"""
    from ..ir.ops.windows import Window

    x, out = node.inputs[0], node.outputs[0]
    dt = out.type.dtype
    numbers = LOWEST if node.op == "MaxPool" else FLOATS  # (MaxPool takes i8 and u8 too)
    if dt not in numbers:
        raise Unsupported(f"{node.op} on {dt}")
    indices = len(node.outputs) > 1 and lw.needed(node.outputs[1])
    a = node.attrs
    if node.op == "MaxPool" and math.prod(a["kernel_shape"]) <= STENCIL_MAX_CELLS and not indices:
        return _max_pool(lw, node)
    win = Window.of(a["kernel_shape"], a["strides"], a["dilations"], a["pads"])
    spatial = x.type.shape[2:]
    n = len(spatial)
    o = lw.vars(2 + n, "i")
    r = lw.vars(n, "r")
    pos = [Binary("+", Binary("-", Binary("*", o[2 + d], const(win.strides[d])), const(win.pads[d])),
                  Binary("*", r[d], const(win.dilations[d]))) for d in range(n)]

    def within(lo: list[int], hi: list[int]) -> Expr:
        cond: Expr = Const(True, "bool")
        for d, p in enumerate(pos):
            cond = Binary("and", cond, Binary("and", Compare(">=", p, const(lo[d])), Compare("<", p, const(hi[d]))))
        return cond
    inside = within([0] * n, list(spatial))
    clamped = [Binary("max", Binary("min", p, const(spatial[d] - 1)), const(0)) for d, p in enumerate(pos)]
    value = lw.read(x, list(o[:2]) + clamped)
    window = list(zip(r, win.kernel))
    if indices:
        return _max_pool_with_indices(lw, node, o, pos, inside, value, window)
    if node.op == "MaxPool":
        acc, body, result = accumulate(lw, dt, Const(LOWEST[dt], dt), window,
                                       lambda acc: Select(inside, Binary("max", acc, value), acc), lambda acc: acc)
        accs = [(acc, dt)]
    else:
        zero = Const(0.0, dt)
        counted = within([-p for p in win.pads[:n]], [s + p for s, p in zip(spatial, win.pads[n:])]) \
            if a["count_include_pad"] else inside
        acc, body, total = accumulate(lw, dt, zero, window, lambda acc: Binary("+", acc, Select(inside, value, zero)),
                                      lambda acc: acc)
        cnt, cbody, count = accumulate(lw, dt, zero, window,
                                       lambda acc: Binary("+", acc, Select(counted, Const(1.0, dt), zero)),
                                       lambda acc: acc)
        body, result = seq(body, cbody), Binary("/", total, Binary("max", count, Const(1.0, dt)))
        accs = [(acc, dt), (cnt, dt)]
    buf = lw.buffer_for(out)
    lw.buffers[id(out)] = buf
    store = Store(buf, row_major(list(o), out.type.shape), result)
    return loop_nest(list(o), list(out.type.shape), with_accumulators(accs, seq(body, store)))


def _max_pool_with_indices(lw: Lowerer, node: Node, o: list[Var], pos: list[Expr], inside: Expr, value: Expr,
                           window: list[tuple[Var, int]]) -> Stmt:
    """MaxPool's two outputs: a scan of the window (as ArgMax's) keeps the best
    value and the flat input index of its cell, which replaces them when it is
    inside the input and either the first such cell, larger, or the first NaN
    (ties go to the first cell, as in the reference and onnxruntime). The index
    is row-major over the input, or column-major over its spatial axes with
    storage_order=1."""
    x, (out, where_out) = node.inputs[0], node.outputs
    dt, spatial = out.type.dtype, x.type.shape[2:]
    best, where, wins = lw.fresh("best"), lw.fresh("index"), lw.fresh("wins")
    b, w = Load(best, const(0), dt), Load(where, const(0), "i64")
    better = Compare(">", value, b)
    if dt in FLOATS:
        better = Binary("or", better, Binary("and", Compare("!=", value, value), Compare("==", b, b)))
    order = list(range(len(spatial)))[::1 if node.attrs["storage_order"] == 0 else -1]
    flat = row_major(list(o[:2]) + [pos[a] for a in order], x.type.shape[:2] + tuple(spatial[a] for a in order))
    scan = loop_nest([v for v, _ in window], [k for _, k in window], seq(
        Store(wins, const(0), Binary("and", inside, Binary("or", Compare("<", w, const(0)), better))),
        Store(where, const(0), Select(Load(wins, const(0), "bool"), flat, w)),
        Store(best, const(0), Select(Load(wins, const(0), "bool"), value, b))))
    stores = []
    for v, e in ((out, b), (where_out, w)):
        buf = lw.buffer_for(v)
        lw.buffers[id(v)] = buf
        stores.append(Store(buf, row_major(list(o), v.type.shape), e))
    body = seq(Store(best, const(0), Const(LOWEST[dt], dt)), Store(where, const(0), const(-1)), scan, *stores)
    return loop_nest(list(o), list(out.type.shape),
                     with_accumulators([(best, dt), (where, "i64"), (wins, "bool")], body))


@register_lowering("CumSum")
def _cumsum(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    """Loops over the other axes around one walk along `axis` (backwards if
    reverse), adding into an accumulator and storing it after each element
    (before it, if exclusive)."""
    x, out = node.inputs[0], node.outputs[0]
    dt = out.type.dtype
    if dt == "bool":
        raise Unsupported("CumSum on bool")
    shape = x.type.shape
    axis = node.attrs["axis"] % len(shape)
    kept, index, fresh = _row_loops(lw, shape, [axis])
    j = fresh()[axis]
    pos = Binary("-", const(shape[axis] - 1), j) if node.attrs["reverse"] else j
    idx = index({axis: pos})
    acc = lw.fresh("acc")
    total = Load(acc, const(0), dt)
    buf = lw.buffer_for(out)
    lw.buffers[id(out)] = buf
    take = Store(acc, const(0), Binary("+", total, lw.read(x, idx)))
    store = Store(buf, row_major(idx, shape), total)
    step = seq(store, take) if node.attrs["exclusive"] else seq(take, store)
    body = seq(Store(acc, const(0), Const(0.0 if dt in FLOATS else 0, dt)), loop_nest([j], [shape[axis]], step))
    return loop_nest(list(kept.values()), [shape[a] for a in kept], with_accumulators([(acc, dt)], body))


@register_lowering("Einsum")
def _einsum(lw: Lowerer, node: Node, done: set[int]) -> Stmt:
    """A sum of products: loops over the output's indices, an accumulator over
    the indices summed away (letters in no output position); a letter repeated
    within a term reads a diagonal, and the '...' axes broadcast as NumPy's do."""
    xs, y = list(node.inputs), node.outputs[0]
    dt = y.type.dtype
    if dt == "bool":
        raise Unsupported("Einsum on bool")
    terms, rhs = einsum_terms(node.attrs["equation"], len(xs))
    dots = max(x.type.rank - len(t.replace("...", "")) for t, x in zip(terms, xs))
    ellipsis = [str(i) for i in range(dots)]  # the '...' axes as tokens no letter can be

    def tokens(term: str, rank: int) -> list[str]:
        head, has_dots, tail = term.partition("...")
        k = rank - len(head) - len(tail) if has_dots else 0
        return list(head) + ellipsis[dots - k:] + list(tail)
    operands = [tokens(t, x.type.rank) for t, x in zip(terms, xs)]
    out = tokens(rhs, y.type.rank)
    sizes: dict[str, int] = {}
    for toks, x in zip(operands, xs):
        for tok, d in zip(toks, x.type.shape):
            sizes[tok] = max(sizes.get(tok, 1), d)
    var = {tok: lw.var("o") for tok in out}
    summed = [tok for tok in dict.fromkeys(t for toks in operands for t in toks) if tok not in var]
    var.update({tok: lw.var("s") for tok in summed})
    product = None
    for toks, x in zip(operands, xs):  # an axis of size 1 against a larger one broadcasts
        value = lw.read(x, [var[t] if d == sizes[t] else const(0) for t, d in zip(toks, x.type.shape)])
        product = value if product is None else Binary("*", product, value)
    acc, body, total = accumulate(lw, dt, Const(0, dt), [(var[t], sizes[t]) for t in summed],
                                  lambda s: Binary("+", s, product), lambda s: s)
    buf = lw.buffer_for(y)
    lw.buffers[id(y)] = buf
    index = [var[t] for t in out]
    return loop_nest(index, list(y.type.shape),
                     with_accumulators([(acc, dt)], seq(body, Store(buf, row_major(index, y.type.shape), total))))
