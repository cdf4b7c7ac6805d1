"""Imports every pass module so each registers itself with the manager."""
from . import cse, dce, fold, fuse, fuse_layers, integer_ops, low_rank, mixed_precision, prune, quantize, simplify  # noqa: F401
