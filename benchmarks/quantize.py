"""int8 quantization: rkfarm vs onnxruntime.quantization.quantize_static, same model and data, in the same run.

    python benchmarks/quantize.py [--calibration 50] [--evaluation 200] [--repeat 3] [--json]

Model: the PP-OCR text-direction classifier (rapidocr-onnxruntime) at 1x3x48x192, mean/std 127.5.
Calibration: rendered text lines (seed 1); evaluation: other lines (seed 2). Fidelity is the int8 model's output
against the float ONNX model on the evaluation lines: top-1 agreement and mean output cosine.

* rkfarm: ``RKNN.load_onnx`` + ``config(quantized_algorithm=...)`` + ``build(do_quantization=True)`` from a
  dataset.txt of PNG files; the time covers the whole build (graph passes, calibration, QDQ rewrite).
* onnxruntime: ``quantize_static``, QDQ format, per-channel, uint8 activations / int8 weights, the samples fed
  as the same float arrays; the time covers ``quantize_static``. Calibrators: MinMax for ``normal``, Entropy for
  ``kl_divergence``, Percentile (99.999) for ``mmse`` (onnxruntime has no MSE search). Two inputs:
  ``source``: the model as shipped, input fixed and upgraded to opset 13 for per-channel QDQ (the issue's
  baseline); ``slim``: the graph rkfarm quantizes (onnxslim-simplified: BatchNorm folded, constants folded),
  upgraded to opset 13, which isolates the quantizer from the graph preparation.

Each build is repeated ``--repeat`` times and the median reported. The vendor's toolkit is not in this table:
``benchmarks/vs_vendor.py`` runs it on the same files in the same run (figures measured on other images are no
comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from rkfarm import RKNN, graph
from rkfarm.frontends.onnx import load_onnx
from rkfarm.quant.qdq import ensure_opset
from rkfarm.samples import text_lines
from rkfarm.zoo import packaged_model

SIZE = [1, 3, 48, 192]
ALGORITHMS = ("normal", "kl_divergence", "mmse")
TOOLS = ("rkfarm", "onnxruntime-source", "onnxruntime-slim")


def _preprocess(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(((images.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2))


def _session(payload: bytes) -> Any:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(payload, so, providers=["CPUExecutionProvider"])


def _fidelity(payload: bytes, inputs: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    session = _session(payload)
    got = np.concatenate([session.run(None, {"x": x[np.newaxis]})[0] for x in inputs])
    cos = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    return float(np.mean(got.argmax(1) == want.argmax(1))), float(np.mean(cos))


def _rkfarm_build(model: Path, dataset: Path, algorithm: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], quantized_algorithm=algorithm)
        rknn.load_onnx(str(model), input_size_list=[SIZE])
        rknn.build(do_quantization=True, dataset=str(dataset))
        assert rknn.package is not None
        payload = rknn.package.payload
    return time.perf_counter() - started, payload


def _ort_build(float_model: Path, calibration: np.ndarray, algorithm: str, out: Path) -> tuple[float, bytes]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._items = iter([{"x": x[np.newaxis]} for x in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    method = {
        "normal": CalibrationMethod.MinMax,
        "kl_divergence": CalibrationMethod.Entropy,
        "mmse": CalibrationMethod.Percentile,
    }[algorithm]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # quantize_static prints its progress
        quantize_static(
            str(float_model),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
        )
    return time.perf_counter() - started, out.read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", type=int, default=50)
    parser.add_argument("--evaluation", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization warns on the root logger

    model = packaged_model("ppocr-cls").path()
    calibration_images = np.stack([line.image for line in text_lines(args.calibration, seed=1)])
    evaluation = _preprocess(np.stack([line.image for line in text_lines(args.evaluation, seed=2)]))
    reference = _session(model.read_bytes())
    want = np.concatenate([reference.run(None, {"x": x[np.newaxis]})[0] for x in evaluation])
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, image in enumerate(calibration_images):
            Image.fromarray(image).save(folder / f"{i:03d}.png")
        dataset = folder / "dataset.txt"
        dataset.write_text("".join(f"{i:03d}.png\n" for i in range(len(calibration_images))))
        loaded = load_onnx(model, None, [SIZE], None, None)
        float_models = {"source": folder / "source.onnx", "slim": folder / "slim.onnx"}
        onnx.save(ensure_opset(graph.infer_shapes(loaded.model), 13), str(float_models["source"]))
        onnx.save(ensure_opset(graph.infer_shapes(graph.simplify(loaded.model, 3)), 13), str(float_models["slim"]))
        samples = _preprocess(calibration_images)
        for algorithm in ALGORITHMS:
            builds = {"rkfarm": [_rkfarm_build(model, dataset, algorithm) for _ in range(args.repeat)]}
            for kind, path in float_models.items():
                out = folder / f"ort-{kind}-{algorithm}.onnx"
                builds[f"onnxruntime-{kind}"] = [_ort_build(path, samples, algorithm, out) for _ in range(args.repeat)]
            row: dict[str, Any] = {}
            for tool, runs in builds.items():
                top1, cos = _fidelity(runs[-1][1], evaluation, want)
                row[tool] = {
                    "build_s": statistics.median(t for t, _ in runs),
                    "top1_agreement": top1,
                    "mean_cosine": cos,
                }
            for tool in TOOLS[1:]:
                row[tool]["rkfarm_speedup"] = row[tool]["build_s"] / row["rkfarm"]["build_s"]
            rows[algorithm] = row
    results = {
        "model": "ppocr-cls 1x3x48x192",
        "calibration_samples": args.calibration,
        "evaluation_samples": args.evaluation,
        "repeat": args.repeat,
        "onnxruntime": ort.__version__,
        "algorithms": rows,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"int8 quantization, {results['model']}, {args.calibration} calibration / {args.evaluation} evaluation "
        f"lines, median of {args.repeat} builds (onnxruntime {ort.__version__})"
    )
    print(f"{'algorithm':<14}{'tool':<20}{'build s':>9}{'top-1':>8}{'cosine':>9}   rkfarm faster by")
    for algorithm, row in rows.items():
        for tool in TOOLS:
            r = row[tool]
            speed = f"{r['rkfarm_speedup']:.1f}x" if "rkfarm_speedup" in r else ""
            print(
                f"{algorithm if tool == 'rkfarm' else '':<14}{tool:<20}{r['build_s']:>9.2f}"
                f"{r['top1_agreement']:>8.1%}{r['mean_cosine']:>9.4f}   {speed}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
