"""The demo models, built with onnx.helper from fixed-seed weights (no downloads).

    mlp      784-512-512-10 perceptron, batch 64
    convnet  conv-bn-relu stem, two residual blocks (the second down-samples
             with a stride-2 conv), global average pool, linear head; 8x3x64x64
    tfblock  pre-norm transformer encoder block: d=256, 4 heads, sequence 128,
             LayerNormalization, MatMul attention, Softmax, erf-form GELU, residuals

They live in the package (not only in examples/) so `minidlc demo` works from
any install; `examples/models.py` writes them to .onnx files.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
DEMOS = ("mlp", "convnet", "tfblock")


class _Builder:
    """Accumulates nodes and initializers; names every value uniquely."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def weight(self, hint: str, shape, scale: float | None = None, value=None) -> str:
        if value is None:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            scale = scale if scale is not None else 1 / math.sqrt(fan_in)
            value = self.rng.standard_normal(shape) * scale
        arr = np.asarray(value, dtype=np.float32 if np.asarray(value).dtype.kind == "f" else np.int64)
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs, hint: str | None = None, **attrs) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def model(self, name: str, inputs, outputs) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="minidlc")
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def _dense(b: _Builder, x: str, n_in: int, n_out: int, hint: str) -> str:
    w = b.weight(f"{hint}.weight", (n_in, n_out), scale=1 / math.sqrt(n_in))
    bias = b.weight(f"{hint}.bias", (n_out,), scale=0.1)
    return b.op("Add", [b.op("MatMul", [x, w], f"{hint}.matmul"), bias], f"{hint}.add")


def mlp() -> onnx.ModelProto:
    b = _Builder(seed=1)
    h = "x"
    for i, (n_in, n_out) in enumerate([(784, 512), (512, 512)]):
        h = b.op("Relu", [_dense(b, h, n_in, n_out, f"fc{i + 1}")], f"relu{i + 1}")
    y = _dense(b, h, 512, 10, "fc3")
    return b.model("mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 784])],
                   [helper.make_tensor_value_info(y, TensorProto.FLOAT, [64, 10])])


def _conv_bn(b: _Builder, x: str, c_in: int, c_out: int, k: int, stride: int, hint: str, relu: bool) -> str:
    w = b.weight(f"{hint}.weight", (c_out, c_in, k, k))
    y = b.op("Conv", [x, w], f"{hint}.conv", kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
    bn = [b.weight(f"{hint}.bn.scale", (c_out,), value=1 + 0.1 * b.rng.standard_normal(c_out)),
          b.weight(f"{hint}.bn.bias", (c_out,), value=0.1 * b.rng.standard_normal(c_out)),
          b.weight(f"{hint}.bn.mean", (c_out,), value=0.1 * b.rng.standard_normal(c_out)),
          b.weight(f"{hint}.bn.var", (c_out,), value=1 + 0.1 * b.rng.random(c_out))]
    y = b.op("BatchNormalization", [y, *bn], f"{hint}.bn", epsilon=1e-5)
    return b.op("Relu", [y], f"{hint}.relu") if relu else y


def _residual_block(b: _Builder, x: str, c_in: int, c_out: int, stride: int, hint: str) -> str:
    h = _conv_bn(b, x, c_in, c_out, 3, stride, f"{hint}.conv1", relu=True)
    h = _conv_bn(b, h, c_out, c_out, 3, 1, f"{hint}.conv2", relu=False)
    shortcut = x if stride == 1 and c_in == c_out else _conv_bn(b, x, c_in, c_out, 1, stride, f"{hint}.down", False)
    return b.op("Relu", [b.op("Add", [h, shortcut], f"{hint}.add")], f"{hint}.relu")


def convnet() -> onnx.ModelProto:
    b = _Builder(seed=2)
    h = _conv_bn(b, "x", 3, 16, 3, 1, "stem", relu=True)
    h = _residual_block(b, h, 16, 16, 1, "block1")
    h = _residual_block(b, h, 16, 32, 2, "block2")
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h], "pool")], "flatten", axis=1)
    y = b.op("Gemm", [h, b.weight("head.weight", (10, 32)), b.weight("head.bias", (10,), scale=0.1)],
             "head", transB=1)
    return b.model("convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 3, 64, 64])],
                   [helper.make_tensor_value_info(y, TensorProto.FLOAT, [8, 10])])


def tfblock(seq: int = 128, d: int = 256, heads: int = 4) -> onnx.ModelProto:
    b = _Builder(seed=3)
    hd = d // heads

    def layernorm(x, hint):
        scale = b.weight(f"{hint}.scale", (d,), value=1 + 0.1 * b.rng.standard_normal(d))
        bias = b.weight(f"{hint}.bias", (d,), value=0.1 * b.rng.standard_normal(d))
        return b.op("LayerNormalization", [x, scale, bias], hint, axis=-1, epsilon=1e-5)

    def split_heads(x, hint):  # [1, seq, d] -> [1, heads, seq, hd]
        shape = b.weight(f"{hint}.shape", (4,), value=np.array([1, seq, heads, hd]))
        return b.op("Transpose", [b.op("Reshape", [x, shape], f"{hint}.reshape")], f"{hint}.transpose",
                    perm=[0, 2, 1, 3])

    h = layernorm("x", "ln1")
    q, k, v = (split_heads(_dense(b, h, d, d, f"attn.{n}"), f"attn.{n}.heads") for n in "qkv")
    kt = b.op("Transpose", [k], "attn.kT", perm=[0, 1, 3, 2])
    scores = b.op("Mul", [b.op("MatMul", [q, kt], "attn.scores"),
                          b.weight("attn.scale", (), value=np.float32(1 / math.sqrt(hd)))], "attn.scaled")
    probs = b.op("Softmax", [scores], "attn.softmax", axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, v], "attn.context")], "attn.merge", perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", [ctx, b.weight("attn.merge.shape", (3,), value=np.array([1, seq, d]))], "attn.merged")
    x1 = b.op("Add", ["x", _dense(b, ctx, d, d, "attn.out")], "residual1")
    h = _dense(b, layernorm(x1, "ln2"), d, 4 * d, "ffn.up")
    # GELU in its erf form: 0.5 * h * (1 + erf(h / sqrt(2)))
    erf = b.op("Erf", [b.op("Div", [h, b.weight("gelu.sqrt2", (), value=np.float32(math.sqrt(2)))], "gelu.div")],
               "gelu.erf")
    one = b.weight("gelu.one", (), value=np.float32(1))
    half = b.weight("gelu.half", (), value=np.float32(0.5))
    gelu = b.op("Mul", [b.op("Mul", [h, half], "gelu.half_x"), b.op("Add", [erf, one], "gelu.add")], "gelu")
    y = b.op("Add", [x1, _dense(b, gelu, 4 * d, d, "ffn.down")], "residual2")
    return b.model("tfblock", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, d])],
                   [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, seq, d])])


_BUILDERS = {"mlp": mlp, "convnet": convnet, "tfblock": tfblock}


def build_model(name: str) -> onnx.ModelProto:
    """The demo model `name` (one of DEMOS) as an ONNX ModelProto."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown demo model {name!r}; choose one of: {', '.join(DEMOS)}")
    return _BUILDERS[name]()


def example_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed-seed float32 inputs for a demo model."""
    rng = np.random.default_rng(seed)
    return {vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim]).astype(np.float32)
            for vi in model.graph.input}
