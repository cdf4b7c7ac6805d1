"""An ONNX graph run by PyTorch, one torch op per ONNX node: the "PyTorch eager"
(and, wrapped in torch.compile, the torch.compile) peer of the GPU benchmark.

It knows the ops of the demo and benchmark models (minidlc/demo_models.py);
anything else is a clear error naming the node.
"""
from __future__ import annotations

import torch
from onnx import helper, numpy_helper
from torch.nn import functional as F


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv(x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), group=1, dilations=(1, 1), **_):
    half = len(pads) // 2
    if list(pads[:half]) != list(pads[half:]):
        x = F.pad(x, [p for d in reversed(range(half)) for p in (pads[d], pads[d + half])])
        pads = (0,) * len(pads)
    return F.conv2d(x, w, b, stride=tuple(strides), padding=tuple(pads[:half]), dilation=tuple(dilations),
                    groups=group)


def _gemm(a, b, c=None, transA=0, transB=0, alpha=1.0, beta=1.0, **_):
    y = alpha * ((a.T if transA else a) @ (b.T if transB else b))
    return y if c is None else y + beta * c


def _max_pool(x, kernel_shape, strides=None, pads=(0, 0, 0, 0), **_):
    half = len(pads) // 2
    x = F.pad(x, [p for d in reversed(range(half)) for p in (pads[d], pads[d + half])], value=float("-inf"))
    return F.max_pool2d(x, tuple(kernel_shape), tuple(strides or kernel_shape))


OPS = {
    "MatMul": lambda a, b: a @ b,
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div,
    "Relu": torch.relu, "Erf": torch.erf, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh,
    "Gemm": _gemm,
    "Conv": _conv,
    "MaxPool": _max_pool,
    "BatchNormalization": lambda x, s, b, m, v, epsilon=1e-5, **_: F.batch_norm(x, m, v, s, b, False, 0.0, epsilon),
    "GlobalAveragePool": lambda x: x.mean(dim=(2, 3), keepdim=True),
    "Flatten": lambda x, axis=1: x.flatten(axis),
    "Reshape": lambda x, shape, **_: x.reshape([int(d) for d in shape.tolist()]),
    "Transpose": lambda x, perm: x.permute(*perm),
    "Softmax": lambda x, axis=-1: torch.softmax(x, axis),
    "Concat": lambda *xs, axis: torch.cat(xs, axis),
    "LayerNormalization": lambda x, s, b, axis=-1, epsilon=1e-5, **_: F.layer_norm(x, x.shape[axis:], s, b, epsilon),
}


class OnnxModule(torch.nn.Module):
    """`forward(*inputs)` runs the graph's nodes in order with torch ops."""

    def __init__(self, model):
        super().__init__()
        g = model.graph
        for node in g.node:
            if node.op_type not in OPS:
                raise ValueError(f"onnx_torch: no torch op for {node.op_type} (node {node.name!r})")
        self.nodes = [(OPS[n.op_type], list(n.input), list(n.output), _attrs(n)) for n in g.node]
        self.weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in g.initializer}
        for i, (name, t) in enumerate(self.weights.items()):
            self.register_buffer(f"w{i}", t)
        self.names = list(self.weights)
        self.inputs = [vi.name for vi in g.input if vi.name not in self.weights]
        self.outputs = [vi.name for vi in g.output]

    def forward(self, *xs):
        env = {n: getattr(self, f"w{i}") for i, n in enumerate(self.names)}
        env.update(zip(self.inputs, xs))
        for fn, ins, outs, attrs in self.nodes:
            env[outs[0]] = fn(*(env[i] if i else None for i in ins), **attrs)
        return tuple(env[o] for o in self.outputs)
