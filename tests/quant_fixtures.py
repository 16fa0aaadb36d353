"""Helpers for the quantization tests: calibration folders, synthetic pages and scenes, fidelity measures."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from rkfarm.samples import WORDS, render_text

Image8 = npt.NDArray[np.uint8]


def write_dataset(folder: Path, images: Sequence[Image8], name: str = "dataset.txt") -> Path:
    """Save ``images`` as PNGs in ``folder`` and a vendor-style dataset file listing them (relative paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:04d}.png")
        lines.append(f"{i:04d}.png")
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def text_pages(count: int, seed: int, size: int = 480) -> list[Image8]:
    """Pages of printed words on tinted paper, for the text detector."""
    rng = random.Random(seed)
    pages = []
    for _ in range(count):
        tint = tuple(rng.randint(215, 255) for _ in range(3))
        page = Image.new("RGB", (size, size), tint)
        y = rng.randint(4, 30)
        while y < size - 40:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
            line = Image.fromarray(render_text(text, font_size=rng.randint(18, 34), height=44))
            page.paste(line.crop((0, 0, min(line.width, size - 10), line.height)), (rng.randint(0, 60), y))
            y += line.height + rng.randint(0, 30)
        pages.append(np.asarray(page, dtype=np.uint8))
    return pages


def scenes(count: int, seed: int, size: int = 320) -> list[Image8]:
    """Smooth backgrounds with ellipses and boxes in skin, cloth and random colours, for the object detector."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for _ in range(count):
        a, b = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
        t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
        background = np.clip(a + (b - a) * t, 0, 255).astype(np.uint8)
        img = Image.fromarray(background)
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = rng.integers(0, size - 40, 2)
            w, h = rng.integers(30, size // 2, 2)
            skin = rng.random() < 0.5
            colour = (
                tuple(int(v) for v in rng.normal((205, 160, 130), 25).clip(0, 255))
                if skin
                else tuple(int(v) for v in rng.integers(0, 256, 3))
            )
            shape = draw.ellipse if rng.random() < 0.6 else draw.rectangle
            shape((int(x0), int(y0), int(x0 + w), int(y0 + h)), fill=colour)
        noisy = np.asarray(img, np.float32) + rng.normal(0, 4, (size, size, 3))
        out.append(noisy.clip(0, 255).astype(np.uint8))
    return out


def cosine(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-30))


def iou(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Row-wise IoU of boxes given as (cx, cy, w, h)."""
    a0, a1 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b0, b1 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None).prod(axis=1)
    union = a[:, 2:].prod(axis=1) + b[:, 2:].prod(axis=1) - inter
    return np.asarray(inter / np.maximum(union, 1e-9), np.float64)


def yolo_box_agreement(want: npt.NDArray[np.float32], got: npt.NDArray[np.float32], top: int = 20) -> float:
    """Mean IoU between float and int8 boxes at the float model's ``top`` most confident anchors.

    YOLOv8 output is (1, 4 + classes, anchors): box (cx, cy, w, h) then class scores per anchor.
    """
    w, g = want[0].astype(np.float64), got[0].astype(np.float64)
    anchors = np.argsort(-w[4:].max(axis=0))[:top]
    return float(iou(w[:4, anchors].T, g[:4, anchors].T).mean())


def text_mask_iou(want: npt.NDArray[np.float32], got: npt.NDArray[np.float32], threshold: float = 0.3) -> float:
    """IoU of the text masks (probability > threshold) of the DB text detector, float vs int8."""
    a, b = want > threshold, got > threshold
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
