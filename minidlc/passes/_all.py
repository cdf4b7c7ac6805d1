"""Imports every pass module so each registers itself with the manager."""
from . import cse, dce, fold, fuse, fuse_layers, integer_ops, mixed_precision, quantize, simplify  # noqa: F401
