"""int8 quantization of three more real models: PP-OCRv4 text detection and recognition, and a YOLOv8n detector.

Each is calibrated on synthetic images of its kind (rendered text pages, text lines, shape scenes), built with
every algorithm, run on the simulator, and compared with its float32 build on held-out images of the same kind.
``-s`` prints the figures recorded in docs/BENCHMARKS.md. Floors sit below the measured figures by a margin
that absorbs ONNX Runtime version differences, and far above what a broken quantizer gives (a wrong scale or
zero point anywhere drops these to a cosine below 0.9).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from quant_fixtures import cosine, scenes, text_mask_iou, text_pages, write_dataset, yolo_box_agreement

from rkfarm import RKNN
from rkfarm.samples import text_lines
from rkfarm.zoo import packaged_model

Images = Callable[[int, int], list[np.ndarray]]


@dataclass(frozen=True)
class Case:
    key: str
    size: list[int]
    mean: list[float]
    std: list[float]
    images: Images
    calibration: int
    floor_cosine: float
    floor_task: float  # the task measure: mask IoU, character agreement, box IoU


def _rec_lines(count: int, seed: int) -> list[np.ndarray]:
    return [line.image for line in text_lines(count, seed=seed, width=320)]


CASES = [
    Case("ppocr-det", [1, 3, 480, 480], [123.675, 116.28, 103.53], [58.395, 57.12, 57.375], text_pages, 8, 0.93, 0.85),
    Case("ppocr-rec", [1, 3, 48, 320], [127.5] * 3, [127.5] * 3, _rec_lines, 24, 0.85, 0.93),
    Case("yolov8n-nudenet", [1, 3, 320, 320], [0.0] * 3, [255.0] * 3, scenes, 16, 0.995, 0.85),
]


def _task_measure(key: str, want: np.ndarray, got: np.ndarray) -> float:
    if key == "ppocr-det":
        return text_mask_iou(want, got)
    if key == "ppocr-rec":  # CTC: the best character per time step
        return float(np.mean(want[0].argmax(-1) == got[0].argmax(-1)))
    return yolo_box_agreement(want, got)


def _build(case: Case, **kwargs: object) -> RKNN:
    rknn = RKNN(raise_errors=True)
    rknn.config(mean_values=[case.mean], std_values=[case.std], float_dtype="float32", **kwargs)
    rknn.load_onnx(str(packaged_model(case.key).path()), input_size_list=[case.size])
    return rknn


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
def test_quantized_model_stays_close_to_float(case: Case, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path, case.images(case.calibration, 1))
    held_out = case.images(4, 2)
    reference = _build(case)
    reference.build(do_quantization=False)
    reference.init_runtime()
    wants = [reference.inference([img])[0] for img in held_out]  # type: ignore[index]
    reference.release()
    for algorithm in ("normal", "kl_divergence", "mmse"):
        rknn = _build(case, quantized_algorithm=algorithm)
        rknn.build(do_quantization=True, dataset=str(dataset))
        rknn.init_runtime()
        gots = [rknn.inference([img])[0] for img in held_out]  # type: ignore[index]
        rknn.release()
        cosines = [cosine(w, g) for w, g in zip(wants, gots)]
        task = float(np.mean([_task_measure(case.key, w, g) for w, g in zip(wants, gots)]))
        report = (
            f"{case.key} {algorithm}: output cosine {np.mean(cosines):.4f} (min {min(cosines):.4f}), task {task:.3f}"
        )
        if case.key == "yolov8n-nudenet":  # the class scores alone: box coordinates dominate the raw output
            scores = float(np.mean([cosine(w[0, 4:], g[0, 4:]) for w, g in zip(wants, gots)]))
            report += f", class-score cosine {scores:.4f}"
            assert scores >= 0.85, report
        print(report)
        assert min(cosines) >= case.floor_cosine and task >= case.floor_task, report
