"""The trained digits CNN (examples/digits_cnn.onnx, built by examples/digits.py):
minidlc computes onnxruntime's logits on real data and keeps its accuracy."""

import numpy as np
import pytest

pytest.importorskip("sklearn")
ort = pytest.importorskip("onnxruntime")

import minidlc  # noqa: E402
from digits_example import digits





@pytest.fixture(scope="module")
def split():
    return digits.load_split()


@pytest.fixture(scope="module")
def ort_logits(split):
    x_test = split[2]
    session = ort.InferenceSession(str(digits.model_path()), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"x": x_test})[0]


def test_split_is_fixed(split):
    x_train, y_train, x_test, y_test = split
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == x_test.dtype == np.float32 and y_train.dtype == y_test.dtype == np.int64
    assert 0 <= x_train.min() and x_train.max() <= 1
    assert set(np.unique(y_test)) == set(range(10))
    again = digits.load_split()
    for a, b in zip(split, again):
        np.testing.assert_array_equal(a, b)


def test_data_files(tmp_path, split):
    paths = {"calib": tmp_path / "c.npz", "test": tmp_path / "t.npz", "labels": tmp_path / "l.npy"}
    digits.write_data(paths)
    np.testing.assert_array_equal(np.load(paths["calib"])["x"], split[0][:256])
    np.testing.assert_array_equal(np.load(paths["test"])["x"], split[2])
    np.testing.assert_array_equal(np.load(paths["labels"]), split[3])


def test_committed_model_is_the_documented_one(split, ort_logits):
    """The committed model has the documented interface and the documented f32 accuracy
    (onnxruntime), and the numpy forward pass in digits.py computes the same logits."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(digits.model_path()))
    assert {n.op_type for n in model.graph.node} == {"Conv", "Relu", "Flatten", "Gemm"}
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["logits"]
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert sum(w.size for w in weights.values()) == 5978
    assert int((ort_logits.argmax(1) == split[3]).sum()) == 354  # 98.3%, as the docstring says
    np.testing.assert_allclose(digits.predict(weights, split[2]), ort_logits,
                               rtol=1e-4, atol=1e-4 * np.abs(ort_logits).max())


@pytest.mark.parametrize("target", ["reference", "llvm"])
def test_minidlc_matches_onnxruntime_and_accuracy(target, split, ort_logits):
    x_test, y_test = split[2], split[3]
    m = minidlc.compile(str(digits.model_path()), target=target, opt_level=2,
                        input_shapes={"x": x_test.shape})
    logits = m.run({"x": x_test})["logits"]
    assert logits.shape == (360, 10) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, ort_logits, rtol=1e-4, atol=1e-4 * np.abs(ort_logits).max())
    accuracy = float((logits.argmax(1) == y_test).mean())
    assert accuracy >= 0.96, f"{target}: top-1 accuracy {accuracy:.4f}"
