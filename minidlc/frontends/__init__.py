"""Frontends: import a model (ONNX file, torch.nn.Module) into the graph IR."""
