"""Synthetic inputs made on the spot: printed text lines, upright or upside down, rendered with Pillow.

They feed the demo, calibration in tests and the benchmarks, so nothing is downloaded. The PP-OCR
text-direction classifier labels them 0 (upright) or 1 (rotated 180 degrees).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "edge",
    "inference",
    "board",
    "farm",
    "rockchip",
    "neural",
    "network",
    "model",
    "quantize",
    "simulate",
    "runtime",
    "agent",
    "latency",
    "memory",
    "invoice",
    "total",
    "amount",
    "date",
    "paid",
    "receipt",
    "number",
    "street",
    "city",
    "station",
    "platform",
    "train",
    "ticket",
    "price",
    "2026",
    "42",
    "17.50",
    "no.",
    "open",
    "close",
]


@dataclass(frozen=True)
class TextLine:
    image: npt.NDArray[np.uint8]  # H x W x 3, RGB, model-sized (padded on the right like PP-OCR)
    label: int  # 0 upright, 1 upside down
    text: str


def render_text(text: str, font_size: int = 30, height: int = 48) -> npt.NDArray[np.uint8]:
    """A black-on-white RGB line of text at its natural width."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_size)
    width = int(font.getlength(text)) + 16
    img = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(img).text((8, (height - font_size) // 2 - 2), text, fill=(0, 0, 0), font=font)
    return np.asarray(img, dtype=np.uint8)


def fit_line(image: npt.NDArray[np.uint8], height: int = 48, width: int = 192) -> npt.NDArray[np.uint8]:
    """Resize to ``height`` keeping the aspect ratio, cap the width, pad right with black (PP-OCR style)."""
    from PIL import Image

    img = Image.fromarray(image)
    w = min(width, max(1, round(img.width * height / img.height)))
    resized = np.asarray(img.resize((w, height), Image.Resampling.BILINEAR), dtype=np.uint8)
    out = np.zeros((height, width, 3), dtype=np.uint8)
    out[:, :w] = resized
    return out


def text_lines(count: int, seed: int = 0, height: int = 48, width: int = 192) -> list[TextLine]:
    """``count`` lines, alternating upright / upside down, reproducible for a given seed."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        image = render_text(text, font_size=rng.randint(24, 34))
        label = i % 2
        if label:
            image = np.ascontiguousarray(image[::-1, ::-1])
        lines.append(TextLine(fit_line(image, height, width), label, text))
    return lines
