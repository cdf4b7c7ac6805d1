"""What a graph costs, estimated from its types: arithmetic and memory traffic.

FLOPs count a multiply-add as two operations. The heavy ops (MatMul, Gemm,
Conv, ConvTranspose, and the integer MatMulInteger and ConvInteger, whose
"FLOPs" are integer operations) count their multiply-adds; every other op one operation
per element it reads or writes, whichever is more; ops that only move or
reinterpret data (Reshape, Transpose, Slice, ...) nothing. Intermediate bytes
are the tensors that go through memory between top-level nodes: a fused
group's inside values are not among them, which is what fusion saves.
"""
from __future__ import annotations

from math import prod

from .graph import Graph, Node
from .registry import Kind

FREE_OPS = {"Constant", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Transpose", "Slice",
            "Concat", "Split", "Gather", "Expand", "Tile", "Pad", "Shape", "Size", "Dropout"}


def node_flops(node: Node) -> int:
    if node.body is not None:
        return graph_flops(node.body)
    if node.op in FREE_OPS or node.opdef.kind == Kind.INJECTIVE:
        return 0
    out = node.outputs[0].type
    if node.op in ("MatMul", "Gemm", "MatMulInteger"):
        a = node.inputs[0].type.shape
        k = a[0] if node.op == "Gemm" and node.attrs.get("transA") else a[-1]
        return 2 * out.numel * k + (out.numel if node.op == "Gemm" and len(node.inputs) > 2 else 0)
    if node.op in ("Conv", "ConvInteger"):
        w = node.inputs[1].type.shape  # [Cout, Cin / group, k...]
        return 2 * out.numel * prod(w[1:])
    if node.op == "ConvTranspose":
        w = node.inputs[1].type.shape  # [Cin, Cout / group, k...]
        return 2 * node.inputs[0].type.numel * prod(w[1:])
    return max([out.numel] + [v.type.numel for v in node.inputs if v is not None])


def graph_flops(graph: Graph) -> int:
    return sum(node_flops(n) for n in graph.nodes)


def intermediate_bytes(graph: Graph) -> int:
    """Bytes of the tensors top-level nodes write (graph outputs included; constants not)."""
    return sum(v.type.nbytes for n in graph.nodes if n.op != "Constant" for v in n.outputs)
