"""Write the demo models (mlp, convnet, tfblock) and the CNN benchmark models
(mobilenet, squeezenet, resnet) as .onnx files into examples/models/.

    python examples/models.py            # all of them
    python examples/models.py convnet    # one

The builders live in minidlc/demo_models.py so that `minidlc demo` works from
any install; this script only saves them for other tools (Netron, onnxruntime).
"""
import sys
from pathlib import Path

import onnx

from minidlc.demo_models import CNN_MODELS, DEMOS, build_model

OUT = Path(__file__).with_name("models")


def model_path(name: str) -> Path:
    """The path of demo model `name`, written on first use."""
    path = OUT / f"{name}.onnx"
    if not path.exists():
        OUT.mkdir(exist_ok=True)
        onnx.save(build_model(name), path)
    return path


if __name__ == "__main__":
    for name in sys.argv[1:] or DEMOS + CNN_MODELS:
        print(model_path(name))
