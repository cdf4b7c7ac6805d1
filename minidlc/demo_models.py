"""The demo models, built with onnx.helper from fixed-seed weights (no downloads).

    mlp      784-512-512-10 perceptron, batch 64
    convnet  conv-bn-relu stem, two residual blocks (the second down-samples
             with a stride-2 conv), global average pool, linear head; 8x3x64x64
    tfblock  pre-norm transformer encoder block: d=256, 4 heads, sequence 128,
             LayerNormalization, MatMul attention, Softmax, erf-form GELU, residuals

and the CNN benchmark models (batch 1, 3x112x112 images, 100 classes), the
shapes onnxruntime is fast at and a compiler must be too:

    mobilenet   MobileNetV2 inverted residuals (depthwise 3x3) and a ShuffleNet unit
                (grouped 1x1 convs, channel shuffle as Reshape/Transpose/Reshape)
    squeezenet  SqueezeNet fire modules: 1x1 squeeze, 1x1 and 3x3 expands, Concat
    resnet      ResNet bottlenecks: 1x1 reduce, 3x3, 1x1 expand, residuals, strided projections

and two full-size layouts for compile times and the GPU: resnet50 and densenet121.

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
CNN_MODELS = ("mobilenet", "squeezenet", "resnet")  # benchmark models of classic CNN shapes, batch 1


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


# ---- CNN benchmark models, batch 1: the shapes of classic vision networks ---------------
def _conv(b: _Builder, x: str, c_in: int, c_out: int, k: int, hint: str, stride: int = 1, group: int = 1,
          relu: bool = True) -> str:
    """Conv (BatchNorm already folded into it, as exported models have it) + Relu."""
    w = b.weight(f"{hint}.weight", (c_out, c_in // group, k, k))
    bias = b.weight(f"{hint}.bias", (c_out,), scale=0.1)
    y = b.op("Conv", [x, w, bias], hint, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
             group=group)
    return b.op("Relu", [y], f"{hint}.relu") if relu else y


def _classifier(b: _Builder, x: str, c: int, classes: int = 100) -> str:
    h = b.op("Flatten", [b.op("GlobalAveragePool", [x], "pool")], "flatten", axis=1)
    return b.op("Gemm", [h, b.weight("head.weight", (classes, c)), b.weight("head.bias", (classes,), scale=0.1)],
                "head", transB=1)


def _image_model(b: _Builder, name: str, y: str, size: int, classes: int = 100, batch: int = 1) -> onnx.ModelProto:
    return b.model(name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
                   [helper.make_tensor_value_info(y, TensorProto.FLOAT, [batch, classes])])


def mobilenet() -> onnx.ModelProto:
    """MobileNetV2-style inverted residuals (1x1 expand, depthwise 3x3, 1x1
    project) and a ShuffleNet-style unit (grouped 1x1 convs around a channel
    shuffle: Reshape, Transpose, Reshape), at batch 1."""
    b = _Builder(seed=4)
    h = _conv(b, "x", 3, 16, 3, "stem", stride=2)  # 112 -> 56
    c = 16
    for i, (out, stride) in enumerate([(24, 2), (24, 1), (32, 2), (32, 1), (64, 2), (64, 1)]):
        hint = f"block{i + 1}"
        e = _conv(b, h, c, 4 * c, 1, f"{hint}.expand")
        e = _conv(b, e, 4 * c, 4 * c, 3, f"{hint}.dw", stride=stride, group=4 * c)
        e = _conv(b, e, 4 * c, out, 1, f"{hint}.project", relu=False)
        h = b.op("Add", [h, e], f"{hint}.add") if stride == 1 and out == c else e
        c = out
    # a shuffle unit: grouped 1x1, channel shuffle, depthwise 3x3, grouped 1x1, residual
    groups, side = 4, 7
    g1 = _conv(b, h, c, c, 1, "shuffle.gconv1", group=groups)
    shape = b.weight("shuffle.shape", (5,), value=np.array([1, groups, c // groups, side, side]))
    back = b.weight("shuffle.back", (4,), value=np.array([1, c, side, side]))
    t = b.op("Transpose", [b.op("Reshape", [g1, shape], "shuffle.split")], "shuffle.swap", perm=[0, 2, 1, 3, 4])
    s = b.op("Reshape", [t, back], "shuffle.merge")
    s = _conv(b, s, c, c, 3, "shuffle.dw", group=c, relu=False)
    s = _conv(b, s, c, c, 1, "shuffle.gconv2", group=groups, relu=False)
    h = b.op("Relu", [b.op("Add", [h, s], "shuffle.add")], "shuffle.relu")
    return _image_model(b, "mobilenet", _classifier(b, h, c), 112)


def squeezenet() -> onnx.ModelProto:
    """SqueezeNet-style fire modules (1x1 squeeze, then 1x1 and 3x3 expands
    joined by a Concat), max pools between them, at batch 1."""
    b = _Builder(seed=5)
    h = _conv(b, "x", 3, 64, 3, "stem", stride=2)  # 112 -> 56
    h = b.op("MaxPool", [h], "pool1", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 28
    c = 64
    for i, (squeeze, expand) in enumerate([(16, 64), (16, 64), (32, 128), (32, 128)]):
        hint = f"fire{i + 1}"
        s = _conv(b, h, c, squeeze, 1, f"{hint}.squeeze")
        h = b.op("Concat", [_conv(b, s, squeeze, expand, 1, f"{hint}.expand1"),
                            _conv(b, s, squeeze, expand, 3, f"{hint}.expand3")], f"{hint}.concat", axis=1)
        c = 2 * expand
        if i == 1:
            h = b.op("MaxPool", [h], "pool2", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 14
    return _image_model(b, "squeezenet", _classifier(b, _conv(b, h, c, 100, 1, "final"), 100), 112)


def resnet() -> onnx.ModelProto:
    """ResNet-style bottleneck blocks (1x1 reduce, 3x3, 1x1 expand, residual;
    a strided 1x1 projection where the shape changes), at batch 1."""
    b = _Builder(seed=6)
    h = _conv(b, "x", 3, 32, 3, "stem", stride=2)  # 112 -> 56
    c = 32
    for i, (mid, out, stride) in enumerate([(16, 64, 1), (16, 64, 1), (32, 128, 2), (32, 128, 1), (64, 256, 2)]):
        hint = f"block{i + 1}"
        r = _conv(b, h, c, mid, 1, f"{hint}.reduce")
        r = _conv(b, r, mid, mid, 3, f"{hint}.conv", stride=stride)
        r = _conv(b, r, mid, out, 1, f"{hint}.expand", relu=False)
        shortcut = h if stride == 1 and c == out else _conv(b, h, c, out, 1, f"{hint}.down", stride=stride, relu=False)
        h = b.op("Relu", [b.op("Add", [r, shortcut], f"{hint}.add")], f"{hint}.relu")
        c = out
    return _image_model(b, "resnet", _classifier(b, h, c), 112)


def resnet50(batch: int = 1) -> onnx.ModelProto:
    """ResNet-50's layout and size (25.5M weights, 4.1 GFLOPs per 224x224 image):
    a 7x7 stem, a max pool, and 3, 4, 6, 3 bottleneck blocks of 64-2048
    channels, batch norm folded; for the GPU benchmark."""
    b = _Builder(seed=7)
    h = _conv(b, "x", 3, 64, 7, "stem", stride=2)  # 224 -> 112
    h = b.op("MaxPool", [h], "pool1", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 56
    c = 64
    for s_, (mid, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
        for i in range(blocks):
            hint, st = f"stage{s_ + 1}.block{i + 1}", stride if i == 0 else 1
            r = _conv(b, h, c, mid, 1, f"{hint}.reduce")
            r = _conv(b, r, mid, mid, 3, f"{hint}.conv", stride=st)
            r = _conv(b, r, mid, 4 * mid, 1, f"{hint}.expand", relu=False)
            shortcut = h if i else _conv(b, h, c, 4 * mid, 1, f"{hint}.down", stride=st, relu=False)
            h = b.op("Relu", [b.op("Add", [r, shortcut], f"{hint}.add")], f"{hint}.relu")
            c = 4 * mid
    return _image_model(b, "resnet50", _classifier(b, h, c, 1000), 224, 1000, batch)


def _batch_norm(b: _Builder, x: str, c: int, hint: str) -> str:
    """BatchNormalization + Relu: a pre-activation norm, which no conv before it absorbs."""
    weights = [b.weight(f"{hint}.{name}", (c,), value=value) for name, value in (
        ("scale", 1 + 0.1 * b.rng.standard_normal(c)), ("bias", 0.1 * b.rng.standard_normal(c)),
        ("mean", 0.1 * b.rng.standard_normal(c)), ("var", b.rng.uniform(0.5, 1.5, c)))]
    return b.op("Relu", [b.op("BatchNormalization", [x, *weights], hint, epsilon=1e-5)], f"{hint}.relu")


def densenet121(batch: int = 1) -> onnx.ModelProto:
    """DenseNet-121's layout and size (8.0M weights, 2.9 GFLOPs per 224x224
    image): dense blocks of 6, 12, 24, 16 layers (BN-ReLU-1x1 conv to 128
    channels, BN-ReLU-3x3 conv to 32, concatenated onto the block's input),
    transitions (BN-ReLU-1x1 conv halving the channels, 2x2 average pool);
    each layer's second norm folded into its 1x1 conv. For compile times."""
    b = _Builder(seed=8)
    h = _conv(b, "x", 3, 64, 7, "stem", stride=2)  # 224 -> 112
    h = b.op("MaxPool", [h], "pool1", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 56
    c = 64
    for s_, layers in enumerate((6, 12, 24, 16)):
        for i in range(layers):
            hint = f"block{s_ + 1}.layer{i + 1}"
            r = _conv(b, _batch_norm(b, h, c, f"{hint}.norm1"), c, 128, 1, f"{hint}.conv1")
            h = b.op("Concat", [h, _conv(b, r, 128, 32, 3, f"{hint}.conv2", relu=False)], f"{hint}.concat", axis=1)
            c += 32
        if s_ < 3:
            hint = f"transition{s_ + 1}"
            h = _conv(b, _batch_norm(b, h, c, f"{hint}.norm"), c, c // 2, 1, f"{hint}.conv", relu=False)
            h = b.op("AveragePool", [h], f"{hint}.pool", kernel_shape=[2, 2], strides=[2, 2])
            c //= 2
    return _image_model(b, "densenet121", _classifier(b, _batch_norm(b, h, c, "norm5"), c, 1000), 224, 1000, batch)


_BUILDERS = {"mlp": mlp, "convnet": convnet, "tfblock": tfblock, "mobilenet": mobilenet, "squeezenet": squeezenet,
             "resnet": resnet, "resnet50": resnet50, "densenet121": densenet121}


_BATCH_AGNOSTIC = ("mlp", "convnet")  # no op fixes their batch: it is their input's and output's first dim


def build_model(name: str, batch: int | None = None) -> onnx.ModelProto:
    """The model `name` (one of DEMOS or CNN_MODELS, or resnet50 or
    densenet121) as an ONNX ModelProto; `batch` sets the batch size of
    resnet50, densenet121, mlp and convnet (the others' Reshapes fix theirs)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown demo model {name!r}; choose one of: {', '.join(_BUILDERS)}")
    if batch is None:
        return _BUILDERS[name]()
    if name in _BATCH_AGNOSTIC:
        model = _BUILDERS[name]()
        for vi in (model.graph.input[0], model.graph.output[0]):
            vi.type.tensor_type.shape.dim[0].dim_value = batch
        return model
    if name not in ("resnet50", "densenet121"):
        raise ValueError(f"demo model {name!r} has a fixed batch size")
    return _BUILDERS[name](batch)


def example_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed-seed float32 inputs for a demo model."""
    rng = np.random.default_rng(seed)
    return {vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim]).astype(np.float32)
            for vi in model.graph.input}
