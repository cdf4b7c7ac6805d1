"""Imports every pass module so each registers itself with the manager."""
from . import cse, dce, fold, fuse, fuse_layers, integer_ops, quantize, simplify  # noqa: F401
