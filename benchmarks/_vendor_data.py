"""The models and image sets of benchmarks/vs_vendor.py, and the task measures.

Calibration images come from the clean generators the tests use (``text_lines``, ``text_pages``, ``scenes``,
seed 1). Evaluation images are made to look like what a user feeds instead: the same kind of content from
other seeds, then put through ``photographed`` — lighting gradient, exposure and contrast, a colour cast, sensor
noise, sometimes a slight blur or a small tilt — so no evaluation image is a calibration image, nor drawn from
the calibration distribution. Set A (seed 2) and the held-out set B (seed 3) differ only in the seed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from quant_fixtures import cosine, scenes, text_mask_iou, text_pages, yolo_box_agreement

from rkfarm.samples import text_lines

Image8 = npt.NDArray[np.uint8]
Generator = Callable[[int, int], list[Image8]]
EVAL_SEEDS = {"A": 2, "B": 3}  # set B is the held-out set, reported separately


def photographed(image: Image8, rng: np.random.Generator) -> Image8:
    """``image`` as a camera would give it back: uneven light, exposure, cast, noise, maybe blur or a tilt."""
    h, w = image.shape[:2]
    img = Image.fromarray(image)
    if rng.random() < 0.4:
        angle = float(rng.uniform(-2.5, 2.5))
        fill = tuple(int(v) for v in np.median(image.reshape(-1, 3), axis=0))
        img = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill)
    if rng.random() < 0.35:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.1))))
    x = np.asarray(img, np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1.0 + float(rng.uniform(-0.25, 0.25)) * (xx / w - 0.5) + float(rng.uniform(-0.25, 0.25)) * (yy / h - 0.5)
    contrast = float(rng.uniform(0.7, 1.1))
    exposure = float(rng.uniform(-25, 20))
    cast = rng.uniform(-12, 12, 3).astype(np.float32)
    x = (x - 128.0) * contrast + 128.0 + exposure
    x = x * light[..., None] + cast
    x = x + rng.normal(0.0, float(rng.uniform(1.5, 6.0)), x.shape)
    return np.asarray(np.clip(x, 0, 255).round(), np.uint8)


def _photographed(make: Generator) -> Generator:
    def generate(count: int, seed: int) -> list[Image8]:
        rng = np.random.default_rng(1000 + seed)
        out = []
        for image in make(count, seed):
            shot = photographed(image, rng)
            shot[:, ~image.any(axis=(0, 2))] = 0  # a text line's black padding is added after the camera
            out.append(shot)
        return out

    return generate


def _cls_lines(count: int, seed: int) -> list[Image8]:
    return [line.image for line in text_lines(count, seed=seed)]


def _rec_lines(count: int, seed: int) -> list[Image8]:
    return [line.image for line in text_lines(count, seed=seed, width=320)]


def _pages(count: int, seed: int) -> list[Image8]:
    pages: list[Image8] = text_pages(count, seed, size=320)
    return pages


def _top1(want: npt.NDArray[np.float32], got: npt.NDArray[np.float32]) -> float:
    return float(want.reshape(-1).argmax() == got.reshape(-1).argmax())


def _steps(want: npt.NDArray[np.float32], got: npt.NDArray[np.float32]) -> float:
    return float(np.mean(want[0].argmax(-1) == got[0].argmax(-1)))  # CTC: the best character per time step


@dataclass(frozen=True)
class Case:
    key: str  # rkfarm.zoo name
    label: str
    size: list[int]
    mean: list[float]
    std: list[float]
    calibration: Generator
    evaluation: Generator
    cal_count: int
    eval_count: int
    task: Callable[[npt.NDArray[np.float32], npt.NDArray[np.float32]], float]
    task_name: str


CASES = {
    c.key: c
    for c in (
        Case(
            "ppocr-cls", "PP-OCR cls 48x192", [1, 3, 48, 192], [127.5] * 3, [127.5] * 3,
            _cls_lines, _photographed(_cls_lines), 50, 200, _top1, "top-1 agreement",
        ),
        Case(
            "ppocr-det", "PP-OCRv4 det 320", [1, 3, 320, 320], [123.675, 116.28, 103.53], [58.395, 57.12, 57.375],
            _pages, _photographed(_pages), 16, 30, text_mask_iou, "mask IoU",
        ),
        Case(
            "ppocr-rec", "PP-OCRv4 rec 48x320", [1, 3, 48, 320], [127.5] * 3, [127.5] * 3,
            _rec_lines, _photographed(_rec_lines), 30, 100, _steps, "step argmax agreement",
        ),
        Case(
            "yolov8n-nudenet", "YOLOv8n 320", [1, 3, 320, 320], [0.0] * 3, [255.0] * 3,
            scenes, _photographed(scenes), 32, 50, yolo_box_agreement, "box IoU (top 20)",
        ),
    )
}  # fmt: skip


def preprocess(case: Case, image: Image8) -> npt.NDArray[np.float32]:
    """What the runtimes do to an NHWC uint8 image before the float model, written out here."""
    x = (image.astype(np.float32) - np.asarray(case.mean, np.float32)) / np.asarray(case.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[np.newaxis])


def fidelity(case: Case, wants: list[npt.NDArray[np.float32]], gots: list[npt.NDArray[np.float32]]) -> dict[str, float]:
    """Mean output cosine against the float model, its minimum, and the task measure."""
    cosines = [cosine(w, g) for w, g in zip(wants, gots)]
    return {
        "cosine": float(np.mean(cosines)),
        "min_cosine": float(np.min(cosines)),
        "task": float(np.mean([case.task(w, g) for w, g in zip(wants, gots)])),
    }
