"""Real models that ship inside PyPI packages, located without importing those packages.

rkfarm's demo, tests and benchmarks use these instead of downloading anything from a model hub.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from rkfarm.errors import ModelLoadError


@dataclass(frozen=True)
class PackagedModel:
    key: str
    distribution: str  # what to pip install
    module: str  # the import name holding the file
    relative_path: str
    input_size: tuple[int, ...]
    description: str

    def path(self) -> Path:
        """The installed file; ModelLoadError naming the pip command if it is absent."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(
                f"model {self.key!r} ships in the PyPI package {self.distribution}: "
                f"pip install --no-deps {self.distribution}"
            )
        for root in spec.submodule_search_locations:
            candidate = Path(root) / self.relative_path
            if candidate.is_file():
                return candidate
        raise ModelLoadError(f"{self.distribution} is installed but has no {self.relative_path}")


MODELS: dict[str, PackagedModel] = {
    m.key: m
    for m in (
        PackagedModel(
            "ppocr-cls",
            "rapidocr-onnxruntime",
            "rapidocr_onnxruntime",
            "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            (1, 3, 48, 192),
            "PP-OCR text-direction classifier (0 vs 180 degrees), MobileNetV3",
        ),
        PackagedModel(
            "ppocr-det",
            "rapidocr-onnxruntime",
            "rapidocr_onnxruntime",
            "models/ch_PP-OCRv4_det_infer.onnx",
            (1, 3, 480, 480),
            "PP-OCRv4 text detection (DB)",
        ),
        PackagedModel(
            "ppocr-rec",
            "rapidocr-onnxruntime",
            "rapidocr_onnxruntime",
            "models/ch_PP-OCRv4_rec_infer.onnx",
            (1, 3, 48, 320),
            "PP-OCRv4 text recognition (SVTR-LCNet, CTC)",
        ),
        PackagedModel(
            "yolov8n-nudenet",
            "nudenet",
            "nudenet",
            "320n.onnx",
            (1, 3, 320, 320),
            "YOLOv8n detector (NudeNet 3.4, 18 classes), 320x320, RGB scaled to [0, 1]",
        ),
    )
}


def packaged_model(key: str) -> PackagedModel:
    try:
        return MODELS[key]
    except KeyError:
        raise ModelLoadError(f"unknown packaged model {key!r}; known: {', '.join(MODELS)}") from None
