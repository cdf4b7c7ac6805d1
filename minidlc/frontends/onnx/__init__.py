"""ONNX frontend: an ONNX model becomes a typed graph IR.

    graph = load_onnx("model.onnx", input_shapes={"x": (1, 3, 224, 224)})

Steps: read and check the file; bind every input to a static shape; list every
op with its opset and whether we support it (all problems reported at once,
before any work); then convert node by node. Each ONNX op has a converter
(see `converters.py` and the family modules beside it) that maps the op, at
the model's opset, onto the registry's op of the same name (latest-opset
semantics); attributes that older opsets had and newer ones take as inputs are
normalized there. Initializers become Constant nodes.
"""
from .loader import ModelLoadError, UnsupportedOpError, load_onnx, op_support_table

__all__ = ["load_onnx", "op_support_table", "ModelLoadError", "UnsupportedOpError"]
