"""Converters for ATen ops that make a tensor from their arguments alone:
full, zeros, arange, scalar_tensor, and the *_like ops (which read only
their input's shape). They become Constant nodes, computed by PyTorch now.
Attention masks (`torch.triu(torch.ones(s, s))`, causal SDPA) use them.
"""
from __future__ import annotations

import numpy as np

from ...ir.types import DTYPES
from .converters import Ctx, converter


@converter("aten.full.default", "aten.zeros.default", "aten.ones.default", "aten.arange.default",
           "aten.arange.start", "aten.arange.start_step", "aten.scalar_tensor.default")
def factory(ctx: Ctx, *args, **kwargs):
    return ctx.const(ctx.node.target(*args, **kwargs).numpy(), hint=ctx.name)


@converter("aten.full_like.default")
def full_like(ctx: Ctx, x, fill_value, **options):
    return ctx.const(np.full(ctx.out_shape, fill_value, DTYPES[ctx.out_dtype]), hint=ctx.name)


@converter("aten.zeros_like.default")
def zeros_like(ctx: Ctx, x, **options):
    return full_like(ctx, x, 0)


@converter("aten.ones_like.default")
def ones_like(ctx: Ctx, x, **options):
    return full_like(ctx, x, 1)
