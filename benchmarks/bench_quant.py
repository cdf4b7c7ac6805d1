"""int8 against f32, minidlc against onnxruntime, in one process.

    python benchmarks/bench_quant.py [--models convnet,mlp,tfblock] [--threads N] [--rounds 20]

For each demo model: minidlc llvm f32; minidlc llvm int8 (minidlc.quantize,
per-channel weights, u8 activations); onnxruntime f32; and onnxruntime int8,
running onnxruntime's own static QDQ quantization of the same model
(`onnxruntime.quantization.quantize_static`, per channel, QInt8 weights,
QUInt8 activations). Both quantizers calibrate on the same batches of random
inputs: the demo models have random weights and no data, so this measures
speed only. Accuracy on real data is tests/test_quantize.py's job (the
digits CNN).

Prints ms per run and the ratios that matter: minidlc int8 speed-up over
its f32, onnxruntime's int8 speed-up, and ort int8 / minidlc int8 (above 1:
minidlc's int8 is faster). Then weight bytes: f32, minidlc int8 (the kernels'
packed weights), and the factor.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
import numpy as np  # noqa: E402
import onnx  # noqa: E402

import minidlc  # noqa: E402
from minidlc import cpu  # noqa: E402
from minidlc.benchmarking import onnxruntime_session, time_interleaved  # noqa: E402
from minidlc.demo_models import build_model  # noqa: E402
from minidlc.quantization import load_calibration  # noqa: E402

CALIBRATION_BATCHES = 4


def ort_int8(model: onnx.ModelProto, batches: list[dict], path: Path) -> bytes:
    """onnxruntime's own static QDQ quantization of `model`, calibrated on `batches`."""
    from onnxruntime import quantization as q

    src, out = path / "f32.onnx", path / "int8.onnx"
    onnx.save(model, src)

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter(batches)

        def get_next(self):
            return next(self.items, None)

    q.quantize_static(str(src), str(out), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    return out.read_bytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="convnet,mlp,tfblock")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    print(f"threads: {args.threads}  cpu: {cpu.name()}  "
          f"(calibration: {CALIBRATION_BATCHES} batches of random inputs: a speed measurement only)")
    head = ["f32 ms", "int8 ms", "ort f32", "ort int8", "int8 x", "ort int8 x", "ort8/int8", "w f32 KiB",
            "w int8 KiB", "w x"]
    print(f"{'model':<9}" + "".join(f"{h:>11}" for h in head))
    ratios = []
    for name in args.models.split(","):
        model = build_model(name)
        graph = minidlc.load(model)
        batches = load_calibration(f"random:{CALIBRATION_BATCHES}", graph)
        f32 = minidlc.compile(model, target="llvm", threads=args.threads)
        int8 = minidlc.compile(minidlc.quantize(model, batches), target="llvm", threads=args.threads)
        with tempfile.TemporaryDirectory() as tmp:
            ort8 = onnxruntime_session(ort_int8(model, batches, Path(tmp)), args.threads)
        ort32 = onnxruntime_session(model.SerializeToString(), args.threads)
        feeds = batches[0]
        ms = time_interleaved({"f32": lambda: f32.run(feeds), "int8": lambda: int8.run(feeds),
                               "ort f32": lambda: ort32.run(None, feeds), "ort int8": lambda: ort8.run(None, feeds)},
                              rounds=args.rounds, budget_s=90)
        w32, w8 = f32.program.weight_bytes(), int8.program.weight_bytes()
        ratios.append(ms["ort int8"] / ms["int8"])
        row = [ms["f32"], ms["int8"], ms["ort f32"], ms["ort int8"], ms["f32"] / ms["int8"],
               ms["ort f32"] / ms["ort int8"], ms["ort int8"] / ms["int8"], w32 / 1024, w8 / 1024, w32 / w8]
        print(f"{name:<9}" + "".join(f"{x:>11.3f}" if i < 4 else f"{x:>11.2f}" for i, x in enumerate(row)))
    print(f"{'geomean':<9}" + " " * 66 + f"{math.prod(ratios) ** (1 / len(ratios)):>11.2f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
