"""The PyTorch frontend: modules compile through torch.export and match PyTorch.

Every model and op case runs on every available CPU target and is compared
with what PyTorch itself computes. Without PyTorch these tests skip.
"""
from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install minidlc[torch])")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import minidlc  # noqa: E402
from minidlc.backends import get_backend  # noqa: E402
from minidlc.frontends.torch import FactoryError, import_file, is_torch_spec, load_torch_factory  # noqa: E402
from minidlc.frontends.torch.converters import ConversionError  # noqa: E402
from minidlc.frontends.torch.loader import UnsupportedOpError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = import_file(f"{ROOT}/examples/torch_models.py").MODELS
HERE = os.path.relpath(__file__)


def available_targets() -> list[str]:
    targets = ["reference"]
    for t in ("llvm",):
        try:
            get_backend(t)
            targets.append(t)
        except (ValueError, ImportError):
            pass
    return targets


TARGETS = available_targets()


def line_of(marker: str) -> int:
    """The line of this file that contains `marker` (for expected source locations)."""
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if marker in text and "line_of" not in text)


def assert_matches_torch(compiled, module, inputs, rtol=1e-4, atol=1e-5):
    names = [v.name for v in compiled.graph.inputs]
    got = list(compiled.run({n: x.numpy() for n, x in zip(names, inputs)}).values())
    with torch.no_grad():
        want = module(*inputs)
    want = list(want) if isinstance(want, (tuple, list)) else [want]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.numpy().dtype
        np.testing.assert_allclose(g, w.numpy(), rtol=rtol, atol=atol)


# ---- the demo models ---------------------------------------------------------------
@functools.cache
def _demo(name):
    """(module, input, graph): export once (the slow part), compile per target."""
    factory, shape = MODELS[name]
    module, x = factory(), torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return module, x, minidlc.load(module, (x,))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(MODELS))
def test_demo_model_matches_pytorch(name, target):
    module, x, graph = _demo(name)
    assert_matches_torch(minidlc.compile(graph, target=target), module, (x,))


@pytest.mark.parametrize("target", TARGETS)
def test_compile_takes_a_module_and_example_inputs(target):
    factory, shape = MODELS["mlp"]
    module, x = factory(), torch.randn(shape)
    compiled = minidlc.compile(module, example_inputs=(x,), target=target)
    assert_matches_torch(compiled, module, (x,))


# ---- op coverage -------------------------------------------------------------------------
class Fn(nn.Module):
    """A module whose forward is `fn(self, *inputs)`, with optional submodules."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for name, m in modules.items():
            self.add_module(name, m)

    def forward(self, *xs):
        return self.fn(self, *xs)


_GEN = torch.Generator().manual_seed(0)


def _randn(*shape):
    return torch.randn(shape, generator=_GEN)


def _bn(c, affine=True):
    bn = nn.BatchNorm2d(c, affine=affine)
    with torch.no_grad():
        bn.running_mean.copy_(_randn(c))
        bn.running_var.copy_(1 + _randn(c).abs())
        if affine:
            bn.weight.copy_(1 + 0.2 * _randn(c))
            bn.bias.copy_(_randn(c))
    return bn


# name -> (module factory, inputs factory): nothing is built at collection time.
OP_CASES: dict[str, tuple] = {}


def case(*inputs, **layers):
    """Register `fn(m, *xs)` as an op case named after it. `inputs` are shapes
    of random float inputs, or functions that make one; `layers` make m's
    submodules."""

    def deco(fn):
        def make_module():
            return Fn(fn, **{name: make() for name, make in layers.items()})

        def make_inputs():
            return tuple(x() if callable(x) else _randn(*x) for x in inputs)

        OP_CASES[fn.__name__] = (make_module, make_inputs)
        return fn

    return deco


@case((3, 8), (2, 3, 8), fc=lambda: nn.Linear(8, 5), fc_no_bias=lambda: nn.Linear(8, 5, bias=False))
def linear(m, x2, x3):
    return m.fc(x2), m.fc(x3), m.fc_no_bias(x2), m.fc_no_bias(x3)


@case((2, 4, 9, 9), conv=lambda: nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2),
      depthwise=lambda: nn.Conv2d(4, 4, (3, 1), stride=(1, 2), padding=(1, 0), groups=4, bias=False),
      same=lambda: nn.Conv2d(4, 2, (3, 5), padding="same", dilation=2), conv1d=lambda: nn.Conv1d(4, 3, 3, padding=1),
      up=lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2))
def conv(m, x):
    return m.conv(x), m.depthwise(x), m.same(x), m.conv1d(x[:, :, 0]), m.up(x)


@case((2, 3, 4, 5), bn=lambda: _bn(3), bn_no_affine=lambda: _bn(3, affine=False))
def batchnorm_eval(m, x):
    return m.bn_no_affine(m.bn(x))


@case((4, 6), silu=nn.SiLU)
def activations(m, x):
    return (F.relu(x), F.gelu(x), F.gelu(x, approximate="tanh"), F.silu(x), m.silu(x), torch.sigmoid(x),
            torch.tanh(x))


@case((4, 6))
def gelu_by_hand(m, x):
    erf_form = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    tanh_form = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return erf_form, tanh_form


@case(lambda: 3 * _randn(3, 5))
def more_activations(m, x):
    return F.softplus(x), F.relu6(x), F.hardsigmoid(x), F.hardswish(x), F.mish(x), F.leaky_relu(x, 0.2), F.elu(x)


@case((2, 5, 6), ln=lambda: nn.LayerNorm((5, 6)))
def layernorm(m, x):
    return m.ln(x), F.layer_norm(x, (6,))


@case((3, 4, 5))
def softmax(m, x):
    return x.softmax(1), F.log_softmax(x, dim=-1)


@case((2, 3, 4), (2, 4, 5), (4, 5))
def matmul_bmm(m, a, b, w):
    return torch.matmul(a, w), torch.bmm(a, b), a @ b, a[0].mm(w), F.linear(a, w.t()), F.linear(a[0], w.t(), w[0])


@case((2, 3, 4))
def views(m, x):
    return (x.view(2, -1), x.reshape(6, 4, 1), x.permute(2, 0, 1), x.transpose(0, 2), torch.flatten(x, 1),
            x.transpose(1, 2).contiguous().view(-1))


@case((2, 2, 6), (2, 4, 6))
def cat_split_chunk(m, x, y):
    return torch.cat([x, y, x], dim=1), *torch.split(y, [1, 3], dim=1), *x.chunk(2, dim=-1), *torch.split(x, 3, -1)


@case((3, 4), (4,))
def arithmetic_broadcast_scalars(m, x, y):
    return (x + y, x - 2 * y, x * y / 4, 1 - x, x / (y.abs() + 1), torch.add(x, y, alpha=3), x ** 2, -x + 0.5,
            torch.remainder(x, 0.3))


@case(lambda: torch.arange(12).reshape(3, 4))
def integer_arithmetic(m, i):
    return i + 2, i * 3 - i, i / 2, i.float() * 0.5, torch.sqrt(i), torch.logical_not(i), torch.abs(-i), i % 5, -i % 5


@case((3, 5))
def math_functions(m, x):
    return (torch.exp(x), torch.log(x.abs() + 1), torch.sqrt(x.abs()), torch.rsqrt(x.abs() + 1), torch.erf(x),
            torch.abs(x))


@case((2, 3, 4, 5))
def reductions(m, x):
    return (x.mean(dim=(2, 3)), x.sum(dim=1, keepdim=True), x.amax(dim=-1), x.mean(), x.sum(-2),
            torch.amin(x, dim=(0, 1), keepdim=True))


@case((2, 3, 4))
def var_max_argmax(m, x):
    return (x.var(-1, keepdim=True), x.std(), x.var((0, 2), correction=0), x.max(-1).values, x.max(1)[1],
            x.min(0, keepdim=True)[0], x.argmax(-1), x.argmin())


@case((2, 3, 8, 7), pool=lambda: nn.AdaptiveAvgPool2d((1, 1)))
def pools(m, x):
    return (F.max_pool2d(x, 2), F.max_pool2d(x, 3, 2, 1), F.max_pool2d(x, 2, 2, 1, ceil_mode=True),
            F.avg_pool2d(x, 2), F.avg_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
            F.avg_pool2d(x, 3, 2, 1, ceil_mode=True), F.adaptive_avg_pool2d(x, 1), m.pool(x))


@case((1, 2, 3, 4))
def pad_and_upsample(m, x):
    return (F.pad(x, (1, 2)), F.pad(x, (1, 0, 2, 1), value=3.0), F.pad(x, (-1, 1)),
            F.pad(x, (1, 2, 2, 1), mode="reflect"), F.pad(x, (1, 2, 2, 1), mode="replicate"),
            F.interpolate(x, scale_factor=2), F.interpolate(x, size=(5, 7)),
            F.interpolate(x, scale_factor=1.5, mode="bilinear"), F.interpolate(x, size=(2, 3), mode="bilinear"),
            F.interpolate(x, scale_factor=1.5, mode="bilinear", align_corners=True))


@case((4, 5), drop=lambda: nn.Dropout(0.5))
def dropout_eval(m, x):
    return m.drop(x) * 2


@case(lambda: torch.tensor([[1, 2, 9], [0, 3, 3]]), emb=lambda: nn.Embedding(10, 4))
def embedding(m, idx):
    return m.emb(idx) + 1


@case((3, 4, 5))
def index_and_slice(m, x):
    return x[:, 1:3], x[0], x[:, None], x[..., -2:], x[:, :1].squeeze(1), x.unbind(1)[2]


@case((3, 5))
def compare_where_clamp(m, x):
    return (torch.where(x > 0, x, 0.1 * x), x.clamp(-0.5, 0.5), F.hardtanh(x), (x <= 0.2).float(),
            torch.maximum(x, -x), x != 0, (x > 0).any(-1), torch.logical_and(x > 0, x < 1), (x != 0).all())


@case((1, 2, 5, 8), (1, 2, 5, 8), (1, 2, 5, 8))
def causal_attention(m, q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


@case((3, 4), lambda: torch.tensor([2, 0, 2]))
def constants_and_indexing(m, x, i):
    return (x + torch.arange(4), torch.triu(torch.ones(4, 4)) == 0, x[i] * torch.ones_like(x[i]), x[:, i],
            torch.zeros_like(x))


@functools.cache
def _op_case(name):
    """(module, inputs, graph): export once, compile for each target."""
    make_module, make_inputs = OP_CASES[name]
    module, inputs = make_module().eval(), make_inputs()
    return module, inputs, minidlc.load(module, inputs)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(OP_CASES))
def test_op_matches_pytorch(name, target):
    module, inputs, graph = _op_case(name)
    assert_matches_torch(minidlc.compile(graph, target=target), module, inputs)


# ---- what the graph looks like -------------------------------------------------------------
class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        h = self.fc(x)  # marker: fc
        return torch.relu(h) * 2  # marker: relu


def test_graph_is_high_level_with_source_lines_and_weights():
    module = TwoLayers()
    g = minidlc.load(module, (torch.randn(2, 4),))
    ops = [n.op for n in g.nodes if n.op != "Constant"]
    assert ops == ["Gemm", "Relu", "Mul"]
    by_op = {n.op: n for n in g.nodes}
    assert by_op["Gemm"].loc == f"{HERE}:{line_of('# marker: fc')}"
    assert by_op["Relu"].loc == by_op["Mul"].loc == f"{HERE}:{line_of('# marker: relu')}"
    weights = {n.outputs[0].name: n.attrs["value"] for n in g.nodes if n.op == "Constant"}
    np.testing.assert_array_equal(weights["fc.weight"], module.fc.weight.detach().numpy())
    assert "bn.running_mean" not in weights  # unused buffers are left out
    scalar = by_op["Mul"].inputs[1]
    assert scalar.type.shape == () and scalar.type.dtype == "f32"
    assert [v.name for v in g.inputs] == ["x"]
    assert module.training  # loading evaluates in eval mode, then restores the mode


class ConvBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))  # marker: conv block
        return h.flatten(1).softmax(-1) * 2  # marker: conv head


GOLDEN_CONV_BLOCK = """\
graph ConvBlock(%x: f32[1,2,3,3]) {
  %conv.weight = Constant() {value=<f32[4,2,3,3] @conv.weight>} : f32[4,2,3,3]
  %bn.weight = Constant() {value=<f32[4] [1.0, 1.0, 1.0, 1.0]>} : f32[4]
  %bn.bias = Constant() {value=<f32[4] [0.0, 0.0, 0.0, 0.0]>} : f32[4]
  %bn.running_mean = Constant() {value=<f32[4] [0.0, 0.0, 0.0, 0.0]>} : f32[4]
  %bn.running_var = Constant() {value=<f32[4] [1.0, 1.0, 1.0, 1.0]>} : f32[4]
  %conv = Conv(%x, %conv.weight) {strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1} \
: f32[1,4,3,3]  # {block}
  %bn = BatchNormalization(%conv, %bn.weight, %bn.bias, %bn.running_mean, %bn.running_var) {epsilon=1e-05} \
: f32[1,4,3,3]  # {block}
  %relu = Relu(%bn) : f32[1,4,3,3]  # {block}
  %shape = Constant() {value=<i64[2] [1, 36]>} : i64[2]  # {head}
  %view = Reshape(%relu, %shape) {allowzero=0} : f32[1,36]  # {head}
  %softmax = Softmax(%view) {axis=-1} : f32[1,36]  # {head}
  %scalar = Constant() {value=<f32[] 2.0>} : f32[]  # {head}
  %mul = Mul(%softmax, %scalar) : f32[1,36]  # {head}
  return %mul
}"""


def test_printed_graph_names_layers_and_source_lines():
    """Values are named after module paths, nodes point at the forward line."""
    g = minidlc.load(ConvBlock(), (torch.randn(1, 2, 3, 3),))
    block, head = (f"{HERE}:{line_of(f'# marker: conv {m}')}" for m in ("block", "head"))
    assert str(g) == GOLDEN_CONV_BLOCK.replace("{block}", block).replace("{head}", head)


def test_scalars_take_the_promoted_dtype():
    module = Fn(lambda m, i: (i + 2, i / 2))
    g = minidlc.load(module, (torch.arange(4),))
    add, div = (n for n in g.nodes if n.op in ("Add", "Div"))
    assert add.inputs[1].type.dtype == "i64" and add.output.type.dtype == "i64"
    assert [v.producer.op for v in div.inputs] == ["Cast", "Constant"]  # true division: in float
    assert div.output.type.dtype == "f32"


def test_batchnorm_uses_running_statistics_even_when_training():
    module = Fn(lambda m, x: m.bn(x), bn=_bn(3)).train()
    x = _randn(2, 3, 4, 4)
    compiled = minidlc.compile(module, example_inputs=(x,))
    assert module.training
    assert_matches_torch(compiled, module.eval(), (x,))


# ---- errors ----------------------------------------------------------------------------------
class Unsupported(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=1)  # marker: unsupported


def test_unsupported_op_names_the_op_and_the_source_line():
    with pytest.raises(UnsupportedOpError) as err:
        minidlc.load(Unsupported(), (torch.randn(2, 3),))
    where = f"{HERE}:{line_of('# marker: unsupported')}"
    assert "aten.cumsum.default" in str(err.value) and where in str(err.value)
    assert err.value.ops == {"aten.cumsum.default": [where]}


class UnsupportedArgument(nn.Module):
    def forward(self, x):
        return F.adaptive_avg_pool2d(x, 2)  # marker: adaptive 2x2


def test_unsupported_argument_names_the_op_and_the_source_line():
    where = f"{HERE}:{line_of('# marker: adaptive 2x2')}"
    with pytest.raises(ConversionError, match=rf"adaptive_avg_pool2d.*{where}.*only to 1x1"):
        minidlc.load(UnsupportedArgument(), (torch.randn(1, 2, 4, 4),))


def test_a_converter_bug_is_caught_by_the_type_check(monkeypatch):
    """Each result must have the type PyTorch computed, so a wrong converter
    fails at load time instead of computing wrong numbers."""
    from minidlc.frontends.torch.converters import CONVERTERS

    monkeypatch.setitem(CONVERTERS, "aten.relu.default",
                        lambda ctx, x: ctx.add("ReduceSum", [x], {"axes": [0], "keepdims": 0}))
    expected = r"aten.relu.default .*converted to f32\[3\], but PyTorch computes f32\[2,3\]"
    with pytest.raises(ConversionError, match=expected):
        minidlc.load(nn.ReLU(), (torch.randn(2, 3),))


def test_missing_example_inputs_is_a_clear_error():
    with pytest.raises(ConversionError, match="needs example_inputs"):
        minidlc.load(nn.ReLU())


def test_untraceable_model_is_a_clear_error():
    module = Fn(lambda m, x: x * 2 if x.sum() > 0 else x)  # data-dependent control flow
    with pytest.raises(ConversionError, match="torch.export could not trace Fn"):
        minidlc.load(module, (torch.randn(3),))


# ---- the factory entry point the CLI uses ------------------------------------------------------
def test_load_torch_factory_builds_random_inputs_of_the_given_shapes():
    g = load_torch_factory("examples/torch_models.py:make_convnet", [(1, 3, 16, 16)])
    assert [(v.name, v.type.shape, v.type.dtype) for v in g.inputs] == [("x", (1, 3, 16, 16), "f32")]
    assert g.outputs[0].type.shape == (1, 10)


def test_load_torch_factory_errors(tmp_path):
    with pytest.raises(FactoryError, match="has no function 'nope'.*make_mlp"):
        load_torch_factory("examples/torch_models.py:nope", [(1, 784)])
    with pytest.raises(FileNotFoundError, match="missing.py"):
        load_torch_factory("missing.py:make", [(1,)])
    (tmp_path / "model.py").write_text("def make_model():\n    return 3\n")
    with pytest.raises(FactoryError, match="returned a int, not a torch.nn.Module"):
        load_torch_factory(str(tmp_path / "model.py"), [(1,)])


def test_factory_file_may_import_its_neighbours(tmp_path):
    (tmp_path / "torch_test_neighbour.py").write_text("import torch\ndef make_model():\n    return torch.nn.ReLU()\n")
    (tmp_path / "net.py").write_text("from torch_test_neighbour import make_model\n")
    assert [n.op for n in load_torch_factory(str(tmp_path / "net.py"), [(2,)]).nodes] == ["Relu"]


def test_is_torch_spec():
    assert is_torch_spec("model.py") and is_torch_spec("dir/model.py:make_model")
    assert not is_torch_spec("model.onnx") and not is_torch_spec("py.onnx")


def test_minidlc_does_not_import_torch():
    code = ("import sys; sys.modules['torch'] = None; import minidlc; from minidlc.frontends.torch import "
            "is_torch_spec; assert is_torch_spec('m.py:f'); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "ok", out.stderr


def test_cli_compiles_and_runs_a_factory(capsys):
    from minidlc.cli import main

    spec = f"{ROOT}/examples/torch_models.py:make_mlp"
    assert main(["compile", spec, "--input-shape", "8,784", "--target", "llvm", "--emit", "fused"]) == 0
    assert "Fused(" in capsys.readouterr().out
    assert main(["run", spec, "--input-shape", "8,784", "--target", "llvm", "--random-inputs", "--check"]) == 0
    assert "check against the reference backend" in capsys.readouterr().out
    assert main(["run", spec, "--target", "llvm"]) == 2
    assert "needs --input-shape" in capsys.readouterr().err
