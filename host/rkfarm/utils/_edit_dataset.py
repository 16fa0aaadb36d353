"""The calibration dataset of ``onnx_edit``: the input transforms applied to a ``dataset.txt``'s samples.

Read as rkfarm's ``build`` reads a dataset: one sample per non-blank line (``#`` starts a comment), one file per
model input in input order, relative paths from the dataset file's folder. Written as the vendor writes it:
``dataset_for_<export stem>.txt`` beside the exported model, naming files of the folder
``dataset_for_<export stem>/`` by ``./dataset_for_<export stem>/<file>``. Files of untouched inputs are copied;
arrays of transformed inputs are re-laid out. Files keep their names (an image becomes ``<stem>.npy``); two
different sources of one name get ``_1``, ``_2``… suffixes rather than overwrite each other.

A transformed input's ``.npy`` holds the tensor in its own layout and original shape (a 4-D input also takes a
batch-free or an NHWC array, as ``build`` does). An image can feed a 4-D NCHW input of 1, 3 or 4 channels; it is
written as a uint8 array in the model layout, so ``quant_img_RGB2BGR`` no longer applies to it.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rkfarm.errors import DatasetError
from rkfarm.images import IMAGE_SUFFIXES, peek_array
from rkfarm.utils._equation import Dim, Transform

Array = npt.NDArray[np.generic]
_IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


@dataclass(frozen=True)
class _Item:
    """One file of one sample: where it is, its name in the new folder, and how it is transformed."""

    source: Path
    target: str
    transform: Transform | None
    dims: Sequence[Dim]  # the input's original shape
    where: str  # for messages: "<dataset>: line <n>: <file>"


class EditDataset:
    """A dataset file, every sample checked against the edits; ``write()`` puts the edited copy beside ``export``."""

    def __init__(
        self,
        path: Path,
        names: Sequence[str],
        dims: Sequence[Sequence[Dim]],
        transforms: Mapping[str, Transform],
        export: Path,
    ) -> None:
        self.path = path
        self.txt = export.parent / f"dataset_for_{export.stem}.txt"
        self.folder = export.parent / f"dataset_for_{export.stem}"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DatasetError(f"dataset file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"cannot read dataset file {path}: {exc}") from None
        targets: dict[tuple[Path, int], str] = {}
        used: set[str] = set()
        self.lines: list[list[_Item]] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            parts = raw.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) != len(names):
                raise DatasetError(
                    f"{path}: line {number}: {len(parts)} file(s) for a model with {len(names)} input(s) "
                    f"({', '.join(names)}); give one file per input, separated by spaces"
                )
            items = []
            for index, part in enumerate(parts):
                file = Path(part) if Path(part).is_absolute() else path.parent / part
                where = f"{path}: line {number}: {file}"
                if not file.is_file():
                    raise DatasetError(f"{where}: no such file (relative paths start at {path.parent})")
                if file.resolve().is_relative_to(self.folder.resolve()):
                    raise DatasetError(f"{where}: is inside {self.folder}, which onnx_edit writes; export elsewhere")
                transform = transforms.get(names[index])
                if transform is not None:
                    _check(file, dims[index], transform, where)
                key = (file.resolve(), index if transform is not None else -1)
                if key not in targets:
                    image = transform is not None and file.suffix.lower() in IMAGE_SUFFIXES
                    targets[key] = _unique(Path(file.stem + ".npy") if image else Path(file.name), used)
                items.append(_Item(file, targets[key], transform, dims[index], where))
            self.lines.append(items)
        if not self.lines:
            raise DatasetError(f"dataset file {path} has no samples: write one file per input on each line")

    def __len__(self) -> int:
        return len(self.lines)

    def write(self) -> Path:
        """Write the folder and the dataset file naming it; returns the dataset file's path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        written: set[str] = set()
        for item in (item for line in self.lines for item in line):
            if item.target in written:
                continue
            written.add(item.target)
            dest = self.folder / item.target
            if item.transform is None:
                shutil.copyfile(item.source, dest)
            else:
                np.save(dest, relayout(_load(item.source, item.dims, item.where), item.transform))
        rows = [" ".join(f"./{self.folder.name}/{item.target}" for item in line) for line in self.lines]
        self.txt.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
        return self.txt


def relayout(array: Array, transform: Transform) -> Array:
    """``array`` (the tensor in its original shape) in the new shape: what the edited input takes."""
    sizes = transform.concrete(array.shape)
    left, right = transform.original.letters, transform.new.letters
    atoms = array.reshape([sizes[a] for a in left]).transpose([left.index(a) for a in right])
    return np.ascontiguousarray(atoms.reshape([math.prod(sizes[a] for a in g) for g in transform.new.groups]))


def _unique(name: Path, used: set[str]) -> str:
    candidate, n = name.name, 0
    while candidate in used:
        n += 1
        candidate = f"{name.stem}_{n}{name.suffix}"
    used.add(candidate)
    return candidate


def _fits(shape: Sequence[int], dims: Sequence[Dim]) -> bool:
    return len(shape) == len(dims) and all(not isinstance(d, int) or d == s for d, s in zip(dims, shape))


def _layout(shape: tuple[int, ...], dims: Sequence[Dim]) -> tuple[bool, bool]:
    """How an array of ``shape`` becomes the input's own layout: (add a batch dim, from NHWC); ValueError if
    it cannot. The input's own (NCHW) layout wins where both would fit, as in ``build``."""
    if _fits(shape, dims):
        return False, False
    if len(dims) == 4:
        nhwc = [dims[0], dims[2], dims[3], dims[1]]
        batch_free = not isinstance(dims[0], int) or dims[0] == 1
        for add in (False, True) if batch_free else (False,):
            full = (1, *shape) if add else shape
            if _fits(full, dims):
                return add, False
            if _fits(full, nhwc):
                return add, True
    shown = "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
    raise ValueError(f"shape {list(shape)} is not the input's shape {shown}")


def _check(file: Path, dims: Sequence[Dim], transform: Transform, where: str) -> None:
    """Kind and shape of a transformed input's file, without reading its data."""
    suffix = file.suffix.lower()
    if suffix == ".npy":
        arr = peek_array(file, where)
        try:
            add, nhwc = _layout(arr.shape, dims)
        except ValueError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        shape = (1, *arr.shape) if add else tuple(arr.shape)
        model_shape = (shape[0], shape[3], shape[1], shape[2]) if nhwc else shape
    elif suffix in IMAGE_SUFFIXES:
        model_shape = _image_shape(file, dims, where)
    else:
        raise DatasetError(
            f"{where}: not a sample file; use .npy arrays or images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    try:
        transform.concrete(model_shape)
    except ValueError as exc:
        raise DatasetError(f"{where}: {exc}") from None


def _image_shape(file: Path, dims: Sequence[Dim], where: str) -> tuple[int, int, int, int]:
    from PIL import Image, UnidentifiedImageError

    channels = dims[1] if len(dims) == 4 else None
    if not isinstance(channels, int) or channels not in _IMAGE_MODES:
        raise DatasetError(f"{where}: an image can only feed a 4-D NCHW image input; give a .npy array")
    try:
        with Image.open(file) as img:
            width, height = img.size
    except UnidentifiedImageError:
        raise DatasetError(f"{where}: not an image Pillow can decode") from None
    except OSError as exc:
        raise DatasetError(f"{where}: cannot read the image: {exc}") from None
    if not _fits((1, channels, height, width), dims):
        raise DatasetError(f"{where}: the image is {width}x{height}; onnx_edit does not resize: give a .npy array")
    return 1, channels, height, width


def _load(file: Path, dims: Sequence[Dim], where: str) -> Array:
    """A checked file as the tensor in its own layout."""
    if file.suffix.lower() == ".npy":
        arr: Array = np.load(file, allow_pickle=False)
        add, nhwc = _layout(arr.shape, dims)
        arr = arr[np.newaxis] if add else arr
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2)) if nhwc else arr
    from PIL import Image

    channels = dims[1]
    assert isinstance(channels, int)
    try:
        with Image.open(file) as img:
            pixels = np.asarray(img.convert(_IMAGE_MODES[channels]), dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"{where}: cannot decode the image: {exc}") from None
    nchw: Array = pixels.reshape(pixels.shape[0], pixels.shape[1], -1).transpose(2, 0, 1)[np.newaxis]
    return np.ascontiguousarray(nchw)
