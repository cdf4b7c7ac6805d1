"""A small CNN trained on scikit-learn's digits (8x8 grey images, 10 classes).

Tests that judge accuracy on real data (int8 quantization, float16) use this
model: random-weight demo models say whether two backends agree, not whether a
lossy transformation still classifies correctly.

    python examples/digits.py      # train (torch, ~5 s on one core), print accuracy, write the files
    python examples/digits.py -v   # the same, printing the loss of each epoch

The model, committed as examples/digits_cnn.onnx (opset 17, written with
onnx.helper; input "x" f32[N,1,8,8] with a symbolic batch N, output "logits"
f32[N,10]; compile it with input_shapes={"x": (B, 1, 8, 8)}):

    Conv(1->8, 3x3, pad 1) Relu                 8x8x8
    Conv(8->16, 3x3, pad 1, stride 2) Relu      16x4x4
    Conv(16->16, 3x3, pad 1, stride 2) Relu     16x2x2
    Flatten                                     64
    Gemm(64->32, transB=1) Relu
    Gemm(32->10, transB=1)                      logits

5,978 parameters, about 24 KB. f32 accuracy: train 100.0% (1437 images),
test 98.3% (354 of 360 images).

The split is fixed (a RandomState(0) permutation of load_digits; the last 360
images are the test set), pixels are scaled to [0, 1] (pixel / 16). Training
is deterministic (fixed seed, torch deterministic algorithms, one thread):
rerunning the script on the same machine and torch version writes a
byte-identical model. The script writes examples/digits_cnn.onnx (committed,
because training needs torch) and, in the git-ignored examples/models/, a copy
of the model and the data files: digits_calib.npz ("x": the first 256
training images, for calibration), digits_test.npz ("x": the test images) and
digits_test_labels.npy. The data files need only scikit-learn; data_paths()
writes them when they are missing.

Importing this module has no side effects and needs neither torch nor sklearn.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL = HERE / "digits_cnn.onnx"          # committed
OUT = HERE / "models"                     # generated (git-ignored)
OPSET = 17
N_TEST = 360
N_CALIB = 256

# (name, shape) in the order of torch's state_dict for the Sequential in train()
PARAMS = (("conv1.weight", (8, 1, 3, 3)), ("conv1.bias", (8,)),
          ("conv2.weight", (16, 8, 3, 3)), ("conv2.bias", (16,)),
          ("conv3.weight", (16, 16, 3, 3)), ("conv3.bias", (16,)),
          ("fc1.weight", (32, 64)), ("fc1.bias", (32,)),
          ("fc2.weight", (10, 32)), ("fc2.bias", (10,)))


def load_split():
    """(x_train, y_train, x_test, y_test): x float32 (N, 1, 8, 8) in [0, 1], y int64.

    A fixed split: load_digits permuted by np.random.RandomState(0) (whose
    stream numpy keeps stable), the last 360 images are the test set."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.RandomState(0).permutation(len(y))
    x, y = x[order], y[order]
    n = len(y) - N_TEST
    return (np.ascontiguousarray(x[:n]), np.ascontiguousarray(y[:n]),
            np.ascontiguousarray(x[n:]), np.ascontiguousarray(y[n:]))


def build_onnx(weights: dict):
    """The model as an onnx.ModelProto (opset 17) from `weights` (name -> array, see PARAMS)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = []
    for name, shape in PARAMS:
        arr = np.ascontiguousarray(np.asarray(weights[name], dtype=np.float32))
        if arr.shape != shape:
            raise ValueError(f"weight {name!r} has shape {arr.shape}, expected {shape}")
        inits.append(numpy_helper.from_array(arr, name))

    def conv(x, layer, out, stride):
        return helper.make_node("Conv", [x, f"{layer}.weight", f"{layer}.bias"], [out], name=layer,
                                kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride])

    def relu(x, out):
        return helper.make_node("Relu", [x], [out], name=out)

    def gemm(x, layer, out):
        return helper.make_node("Gemm", [x, f"{layer}.weight", f"{layer}.bias"], [out], name=layer, transB=1)

    nodes = [conv("x", "conv1", "conv1.out", 1), relu("conv1.out", "relu1"),
             conv("relu1", "conv2", "conv2.out", 2), relu("conv2.out", "relu2"),
             conv("relu2", "conv3", "conv3.out", 2), relu("conv3.out", "relu3"),
             helper.make_node("Flatten", ["relu3"], ["flat"], name="flatten", axis=1),
             gemm("flat", "fc1", "fc1.out"), relu("fc1.out", "relu4"),
             gemm("relu4", "fc2", "logits")]
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="minidlc")
    model.ir_version = 8
    model.doc_string = "CNN on sklearn digits (8x8, 10 classes); see examples/digits.py"
    onnx.checker.check_model(model)
    return model


def _torch_model():
    from collections import OrderedDict

    from torch import nn

    return nn.Sequential(OrderedDict([  # named so that state_dict keys are PARAMS' names
        ("conv1", nn.Conv2d(1, 8, 3, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(8, 16, 3, padding=1, stride=2)), ("relu2", nn.ReLU()),
        ("conv3", nn.Conv2d(16, 16, 3, padding=1, stride=2)), ("relu3", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(64, 32)), ("relu4", nn.ReLU()),
        ("fc2", nn.Linear(32, 10))]))


def train(seed: int = 0, epochs: int = 40, batch: int = 32, lr: float = 3e-3, verbose: bool = False) -> dict:
    """Train the CNN on the training split; returns name -> float32 array (see PARAMS).

    Deterministic: fixed seed, torch deterministic algorithms, one thread (the
    previous torch settings are restored afterwards)."""
    import torch

    x_train, y_train, _, _ = load_split()
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = _torch_model()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
        loss_fn = torch.nn.CrossEntropyLoss()
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(len(yt), generator=generator)
            total = 0.0
            for i in range(0, len(perm), batch):
                idx = perm[i:i + batch]
                opt.zero_grad()
                loss = loss_fn(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            sched.step()
            if verbose:
                print(f"epoch {epoch + 1:2d}  loss {total / len(yt):.4f}")
        state = model.state_dict()
        return {name: state[name].detach().numpy().astype(np.float32).copy() for name, _ in PARAMS}
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def predict(weights: dict, x: np.ndarray) -> np.ndarray:
    """Logits of the CNN in plain numpy (float32, im2col convolutions); no torch or onnx needed."""
    h = x.astype(np.float32)
    for layer, stride in (("conv1", 1), ("conv2", 2), ("conv3", 2)):
        w, b = weights[f"{layer}.weight"], weights[f"{layer}.bias"]
        n, c, hh, ww = h.shape
        p = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
        oh, ow = (hh - 1) // stride + 1, (ww - 1) // stride + 1
        cols = np.stack([p[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
                         for i in range(3) for j in range(3)], axis=2)      # n, c, 9, oh, ow
        h = np.einsum("nckhw,ock->nohw", cols, w.reshape(w.shape[0], c, 9)) + b[:, None, None]
        h = np.maximum(h, 0).astype(np.float32)
    h = h.reshape(len(h), -1)
    h = np.maximum(h @ weights["fc1.weight"].T + weights["fc1.bias"], 0)
    return (h @ weights["fc2.weight"].T + weights["fc2.bias"]).astype(np.float32)


def model_path() -> Path:
    """The committed trained model, examples/digits_cnn.onnx."""
    return MODEL


def data_paths() -> dict:
    """{"calib": .npz, "test": .npz, "labels": .npy} under examples/models/, written on first use.

    digits_calib.npz holds "x": the first 256 training images; digits_test.npz
    "x": the 360 test images; digits_test_labels.npy their labels (int64)."""
    paths = {"calib": OUT / "digits_calib.npz", "test": OUT / "digits_test.npz",
             "labels": OUT / "digits_test_labels.npy"}
    if not all(p.exists() for p in paths.values()):
        write_data(paths)
    return paths


def write_data(paths: dict | None = None) -> dict:
    paths = paths or {"calib": OUT / "digits_calib.npz", "test": OUT / "digits_test.npz",
                      "labels": OUT / "digits_test_labels.npy"}
    x_train, _, x_test, y_test = load_split()
    OUT.mkdir(exist_ok=True)
    np.savez(paths["calib"], x=x_train[:N_CALIB])
    np.savez(paths["test"], x=x_test)
    np.save(paths["labels"], y_test)
    return paths


def main(argv=None) -> int:
    import time

    import onnx

    argv = sys.argv[1:] if argv is None else argv
    verbose = "-v" in argv
    x_train, y_train, x_test, y_test = load_split()
    start = time.perf_counter()
    weights = train(verbose=verbose)
    seconds = time.perf_counter() - start
    n_params = sum(w.size for w in weights.values())
    train_acc = float((predict(weights, x_train).argmax(1) == y_train).mean())
    test_acc = float((predict(weights, x_test).argmax(1) == y_test).mean())
    print(f"trained in {seconds:.1f} s; {n_params} parameters")
    print(f"train accuracy {train_acc:.4f} ({len(y_train)} images)")
    print(f"test accuracy  {test_acc:.4f} ({int(round(test_acc * len(y_test)))}/{len(y_test)} images)")
    model = build_onnx(weights)
    OUT.mkdir(exist_ok=True)
    for path in (MODEL, OUT / "digits_cnn.onnx"):
        onnx.save(model, path)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    for path in write_data().values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
