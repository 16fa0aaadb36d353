"""The vendor's calibration ``dataset.txt``: one sample per line, one file per model input.

Format (as RKNN-Toolkit2 reads it): each non-blank line is one calibration sample; a model with several inputs
takes one file per input on the line, separated by spaces, in input order. Files are images (jpg, jpeg, png,
bmp; decoded with Pillow to RGB, or to grayscale for one-channel inputs) or ``.npy`` arrays. Relative paths are
relative to the folder of the dataset file. Lines starting with ``#`` are comments (an rkfarm extension).

An image of another size than the input is resized as the vendor resizes it: OpenCV's bilinear
``cv2.resize`` (``INTER_LINEAR``) of the decoded RGB image, bit for bit; rkfarm logs once per dataset that it
did. ``.npy`` arrays are in the model's layout, as the vendor reads them: NCHW for 4-D image inputs, with or
without the batch dim (rkfarm also takes an NHWC array whose shape cannot be mistaken for NCHW).

A line is one sample of the model's inputs as they are, batch dims included: inputs may differ in dim 0
(a ``[4, 48, 1, 8]`` cache beside a ``[1, 3, 224, 224]`` image). A model built with ``rknn_batch_size=N`` takes
N lines per run. Within a line, every input must hold the same share of a run.

Every sample goes through the runtime's own ``InputAdapter`` with the package's input specs, so calibration
sees exactly the numbers inference will see: layout, ``quant_img_RGB2BGR`` (images only), then
``(x - mean) / std``. Every file is checked (existence, kind, size or shape) before any calibration work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rkfarm.errors import DatasetError
from rkfarm.images import IMAGE_SUFFIXES, peek_array
from rkfarm.runtime import InputAdapter
from rkfarm_proto.errors import InputError
from rkfarm_proto.tensors import shape_str
from rkfarm_proto.v1 import common_pb2, package_pb2

log = logging.getLogger(__name__)

Array = npt.NDArray[np.generic]
_IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


@dataclass(frozen=True)
class SampleLine:
    number: int  # 1-based line number in the dataset file
    files: tuple[Path, ...]


class CalibrationDataset:
    """A parsed and checked ``dataset.txt``; iterate it for preprocessed samples (one array per input)."""

    def __init__(
        self,
        path: str | Path,
        specs: Sequence[package_pb2.InputSpec],
        samples: Sequence[Sequence[str | os.PathLike[str]]] | None = None,
        *,
        skip_unfit: bool = False,
    ) -> None:
        """Read ``path``, or, with ``samples`` (one list of files per sample, as ``accuracy_analysis`` takes
        them), use those files and name ``path`` only in messages. ``skip_unfit`` (one dynamic_input shape set of
        several): a line whose .npy arrays have another shape is left out (in ``skipped``), not an error."""
        self.path = Path(path)
        self._specs = [_batch_free(s) for s in specs]
        self.model_rows = [int(s.tensor.shape[0]) if s.tensor.shape and s.tensor.shape[0] > 0 else 1 for s in specs]
        self._adapter = InputAdapter(self._specs)
        self._resized: tuple[int, int] | None = None  # (width, height) of the first image resized, for the log
        self.line_rows: list[int] = []  # rows (dim 0) of the first input on each line
        self._nhwc_arrays = False
        self._listed = samples is not None
        self.lines: list[SampleLine] = []
        self.skipped: list[SampleLine] = []
        for line in self._parse() if samples is None else self._from_files(samples):
            try:
                self._check(line)
            except _UnfitArrayError:
                if not skip_unfit:
                    raise
                self.skipped.append(line)
                continue
            self.lines.append(line)
        if self._nhwc_arrays:
            log.info("%s: taking NHWC .npy samples for NCHW image inputs (the vendor reads only NCHW)", self.path)
        if self._resized is not None:
            log.info(
                "%s: resizing calibration images to the model's input size (first: %dx%d), bilinear as the vendor",
                self.path,
                *self._resized,
            )

    def __len__(self) -> int:
        return len(self.lines)

    def __iter__(self) -> Iterator[list[Array]]:
        for line in self.lines:
            yield self.load(line)

    def _where(self, line: SampleLine | int) -> str:
        number = line.number if isinstance(line, SampleLine) else line
        return f"{self.path}: sample {number}" if self._listed else f"{self.path}: line {number}"

    def _from_files(self, samples: Sequence[Sequence[str | os.PathLike[str]]]) -> list[SampleLine]:
        lines = []
        for number, files in enumerate(samples, start=1):
            if len(files) != len(self._specs):
                names = ", ".join(s.tensor.name for s in self._specs)
                raise DatasetError(
                    f"{self._where(number)}: {len(files)} file(s) for a model with {len(self._specs)} input(s) "
                    f"({names}); give one file per input"
                )
            lines.append(SampleLine(number, tuple(Path(f) for f in files)))
        if not lines:
            raise DatasetError(f"{self.path}: no inputs given")
        return lines

    def _parse(self) -> list[SampleLine]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DatasetError(f"dataset file {self.path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"cannot read dataset file {self.path}: {exc}") from None
        lines = []
        for number, raw in enumerate(text.splitlines(), start=1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            parts = stripped.split()
            if len(parts) != len(self._specs):
                names = ", ".join(s.tensor.name for s in self._specs)
                raise DatasetError(
                    f"{self._where(number)}: {len(parts)} file(s) for a model with {len(self._specs)} input(s) "
                    f"({names}); give one file per input, separated by spaces"
                )
            files = tuple(p if p.is_absolute() else self.path.parent / p for p in map(Path, parts))
            lines.append(SampleLine(number, files))
        if not lines:
            raise DatasetError(
                f"dataset file {self.path} has no samples: write one image or .npy path per line "
                "(several inputs: one file per input on the line)"
            )
        return lines

    def _check(self, line: SampleLine) -> None:
        """Existence, kind and size of each file, without decoding images."""
        rows: list[int] = []
        for file, spec in zip(line.files, self._specs):
            where = f"{self._where(line)}: {file}"
            if not file.is_file():
                hint = "" if self._listed else f" (relative paths start at {self.path.parent})"
                raise DatasetError(f"{where}: no such file{hint}")
            suffix = file.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                self._check_image(file, spec, where)
                n = 1
            elif suffix == ".npy":
                n = self._check_array(file, spec, where)
            else:
                raise DatasetError(
                    f"{where}: not a calibration file; use images ({', '.join(sorted(IMAGE_SUFFIXES))}) or .npy"
                )
            rows.append(n)
        self.line_rows.append(rows[0])
        # every input must hold the same share of one model run (lines are stacked along dim 0 in lockstep)
        if any(n * self.model_rows[0] != rows[0] * m for n, m in zip(rows, self.model_rows)):
            given = ", ".join(f"{s.tensor.name!r}: {n}" for s, n in zip(self._specs, rows))
            takes = ", ".join(str(m) for m in self.model_rows)
            raise DatasetError(
                f"{self._where(line)}: the inputs hold {given} rows (dim 0) but the model takes {takes}: "
                "each input must hold the same fraction of a model run"
            )

    @staticmethod
    def _image_size(spec: package_pb2.InputSpec, where: str) -> tuple[int, int, int]:
        dims = list(spec.tensor.shape)
        if len(dims) == 4 and spec.tensor.layout == common_pb2.LAYOUT_NCHW and dims[1] in _IMAGE_MODES:
            return dims[1], dims[2], dims[3]
        if len(dims) == 4 and spec.tensor.layout == common_pb2.LAYOUT_NHWC and dims[3] in _IMAGE_MODES:
            return dims[3], dims[1], dims[2]
        raise DatasetError(
            f"{where}: input {spec.tensor.name!r} {shape_str(dims)} is not an image input; give a .npy array"
        )

    def _check_image(self, file: Path, spec: package_pb2.InputSpec, where: str) -> None:
        from PIL import Image, UnidentifiedImageError

        _, height, width = self._image_size(spec, where)
        try:
            with Image.open(file) as img:
                size = img.size
        except UnidentifiedImageError:
            raise DatasetError(f"{where}: not an image Pillow can decode") from None
        except OSError as exc:
            raise DatasetError(f"{where}: cannot read the image: {exc}") from None
        if size != (width if width > 0 else size[0], height if height > 0 else size[1]) and self._resized is None:
            self._resized = size

    def _check_array(self, file: Path, spec: package_pb2.InputSpec, where: str) -> int:
        arr = peek_array(file, where)
        index = next(i for i, s in enumerate(self._specs) if s is spec)
        try:
            self._check_shape(index, arr.shape, arr.dtype)
        except InputError as exc:
            raise _UnfitArrayError(f"{where}: {exc}") from None
        if _npy_format(spec, arr.shape) is None and spec.tensor.layout == common_pb2.LAYOUT_NCHW:
            self._nhwc_arrays = True
        return int(arr.shape[0]) if arr.ndim == len(spec.tensor.shape) else 1

    def _check_shape(self, index: int, shape: tuple[int, ...], dtype: np.dtype[np.generic]) -> None:
        """Run a zero-stride array of ``shape`` through the adapter; the other inputs get placeholders."""
        arrays: list[Array] = [np.zeros([max(1, d) for d in s.tensor.shape], np.float32) for s in self._specs]
        arrays[index] = np.broadcast_to(np.zeros((), dtype), shape)
        formats: list[str | None] = ["nchw" if s.tensor.layout == common_pb2.LAYOUT_NCHW else None for s in self._specs]
        formats[index] = _npy_format(self._specs[index], shape)
        self._adapter(arrays, formats)

    def load(self, line: SampleLine) -> list[Array]:
        """The sample of one line, preprocessed: one float array per input, with a batch dim."""
        arrays: list[Array] = []
        formats: list[str | None] = []
        for file, spec in zip(line.files, self._specs):
            where = f"{self._where(line)}: {file}"
            if file.suffix.lower() == ".npy":
                try:
                    array = np.load(file, allow_pickle=False)
                except (ValueError, OSError) as exc:
                    raise DatasetError(f"{where}: not a readable .npy array: {exc}") from None
                arrays.append(array)
                formats.append(_npy_format(spec, array.shape))
            else:
                arrays.append(self._read_image(file, spec, where))
                formats.append("nhwc")
        try:
            return self._adapter(arrays, formats)
        except InputError as exc:
            raise DatasetError(f"{self._where(line)}: {exc}") from None

    def _read_image(self, file: Path, spec: package_pb2.InputSpec, where: str) -> Array:
        from PIL import Image

        channels, height, width = self._image_size(spec, where)
        try:
            with Image.open(file) as img:
                arr = np.asarray(img.convert(_IMAGE_MODES[channels]), dtype=np.uint8)
        except OSError as exc:
            raise DatasetError(f"{where}: cannot decode image: {exc}") from None
        height = height if height > 0 else arr.shape[0]  # a dynamic_input model's free dims: the image's own size
        width = width if width > 0 else arr.shape[1]
        if arr.shape[:2] != (height, width):
            arr = np.asarray(resize_bilinear(arr, height, width), dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, np.newaxis]
        if spec.quant_img_rgb2bgr and channels >= 3:
            arr = np.concatenate([arr[..., 2::-1], arr[..., 3:]], axis=-1)
        return arr


class _UnfitArrayError(DatasetError):
    """A .npy sample whose shape the model's input does not take."""


def resize_bilinear(image: Array, height: int, width: int) -> Array:
    """``image`` (uint8 HW or HWC) resized as the vendor resizes calibration images: ``cv2.resize`` with
    ``INTER_LINEAR`` (OpenCV's fixed-point bilinear, half-pixel centres), so the numbers are the vendor's."""
    try:
        import cv2
    except ImportError:
        raise DatasetError(
            "resizing calibration images needs OpenCV, as the vendor uses: pip install opencv-python-headless "
            "(or give images of the model's input size)"
        ) from None
    resized: Array = cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_LINEAR)
    return resized


def _npy_format(spec: package_pb2.InputSpec, shape: tuple[int, ...]) -> str | None:
    """'nchw' for an array in the model's NCHW layout (with or without batch), as the vendor reads .npy samples;
    None lets the adapter take an NHWC array (an rkfarm leniency where the shape cannot be mistaken)."""
    dims = tuple(spec.tensor.shape)
    if spec.tensor.layout != common_pb2.LAYOUT_NCHW or len(dims) != 4:
        return None
    body = shape[1:] if len(shape) == 4 else shape
    if len(body) == 3 and all(d < 0 or d == g for d, g in zip(dims[1:], body)):
        return "nchw"
    return None


def _batch_free(spec: package_pb2.InputSpec) -> package_pb2.InputSpec:
    """A copy of ``spec`` whose batch dim is free: samples have one row, the model may take several."""
    out = package_pb2.InputSpec()
    out.CopyFrom(spec)
    if out.tensor.shape:
        out.tensor.shape[0] = -1
    return out
