"""Demo PyTorch models for the torch frontend, each with a factory and an input shape.

    minidlc compile examples/torch_models.py:make_resnet --input-shape 1,3,32,32 --emit graph
    python examples/torch_models.py [TARGET]     # compile each, compare with PyTorch

    mlp      784-256-256-10 perceptron with dropout (the identity in eval mode)
    convnet  conv-bn-relu stem, two residual blocks (the second down-samples),
             global average pool, linear head
    tfblock  pre-norm transformer encoder block: fused qkv projection split
             with chunk, multi-head attention with matmul and softmax, GELU MLP
    resnet   ResNet-18 layout (four stages of two basic blocks, max-pool stem,
             adaptive average pool), narrowed to 16-128 channels for speed

Weights come from a fixed seed; batch norm statistics are randomized so that
eval-mode batch norm does real work.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    """Re-initialize from `seed`: weights scaled by 1/sqrt(fan-in), norm
    scales near 1, and batch norms with non-trivial running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.dim() > 1:
                p.copy_(noise / math.sqrt(p[0].numel()))
            else:  # biases near 0, norm scales near 1
                p.copy_(0.1 * noise + name.endswith("weight"))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(1 + 0.1 * torch.rand(m.num_features, generator=gen))
    return module.eval()


# ---- mlp ------------------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self, sizes=(784, 256, 256, 10), dropout: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = self.dropout(F.relu(layer(x)))
        return self.layers[-1](x)


def make_mlp() -> nn.Module:
    return _seeded(MLP(), seed=1)


# ---- convnet and resnet: residual blocks --------------------------------------------
class BasicBlock(nn.Module):
    """conv3x3-bn-relu-conv3x3-bn plus a shortcut (1x1 conv-bn when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class ConvNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = BasicBlock(16, 16)
        self.block2 = BasicBlock(16, 32, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        h = self.block2(self.block1(self.stem(x)))
        return self.head(torch.flatten(self.pool(h), 1))


def make_convnet() -> nn.Module:
    return _seeded(ConvNet(), seed=2)


class ResNet(nn.Module):
    """ResNet-18's layout: stem, max pool, four stages of two blocks, pool, fc."""

    def __init__(self, widths=(16, 32, 64, 128), classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        stages, c_in = [], widths[0]
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(c_in, c, stride), BasicBlock(c, c)))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1], classes)

    def forward(self, x):
        h = self.avgpool(self.stages(self.stem(x)))
        return self.fc(h.view(h.shape[0], -1))


def make_resnet() -> nn.Module:
    return _seeded(ResNet(), seed=4)


# ---- transformer block ------------------------------------------------------------------
class SelfAttention(nn.Module):
    """Multi-head self-attention; q, k and v come from one fused projection."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.view(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        context = torch.matmul(scores.softmax(dim=-1), v)
        return self.proj(context.transpose(1, 2).contiguous().view(b, s, d))


class TransformerBlock(nn.Module):
    def __init__(self, d: int = 64, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = SelfAttention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def make_tfblock() -> nn.Module:
    return _seeded(TransformerBlock(), seed=3)


# name -> (factory, example input shape)
MODELS = {
    "mlp": (make_mlp, (8, 784)),
    "convnet": (make_convnet, (2, 3, 32, 32)),
    "tfblock": (make_tfblock, (2, 16, 64)),
    "resnet": (make_resnet, (1, 3, 32, 32)),
}


if __name__ == "__main__":
    import sys

    import minidlc

    target = sys.argv[1] if len(sys.argv) > 1 else "reference"
    for name, (factory, shape) in MODELS.items():
        model, x = factory(), torch.randn(shape)
        compiled = minidlc.compile(model, example_inputs=(x,), target=target)
        (got,) = compiled.run({"x": x.numpy()}).values()
        err = (torch.from_numpy(got) - model(x)).abs().max().item()
        print(f"{name:8} {len(compiled.source.nodes):4} nodes  max |minidlc - torch| = {err:.2e}")
