"""Reading inputs from files: images (decoded with Pillow to RGB uint8 HWC) and .npy arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from rkfarm.errors import DatasetError, InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


def read_image(
    path: str | Path, size_hw: tuple[int, int] | None = None, rgb2bgr: bool = False
) -> npt.NDArray[np.uint8]:
    """An image as RGB (or BGR) uint8 HWC, resized (bilinear) to ``size_hw`` if given and different."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as img:
            rgb = img.convert("RGB")
            if size_hw is not None and (rgb.height, rgb.width) != tuple(size_hw):
                rgb = rgb.resize((size_hw[1], size_hw[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except UnidentifiedImageError:
        raise InputError(f"{p}: not an image Pillow can decode") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read image: {exc}") from None
    return arr[..., ::-1].copy() if rgb2bgr else arr


def read_array(path: str | Path) -> npt.NDArray[np.generic]:
    """A .npy file (pickles refused)."""
    p = Path(path)
    try:
        arr = np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except (ValueError, OSError) as exc:
        raise InputError(f"{p}: not a readable .npy array: {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{p}: expected one array, found an archive")
    return arr


def read_input(
    path: str | Path, size_hw: tuple[int, int] | None = None, rgb2bgr: bool = False
) -> npt.NDArray[np.generic]:
    """An image or .npy file, chosen by extension."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return read_array(p)
    if suffix in IMAGE_SUFFIXES:
        return read_image(p, size_hw, rgb2bgr)
    raise InputError(f"{p}: unsupported input file type {suffix or '(none)'}; use .npy or jpg/png/bmp images")


def peek_array(path: Path, where: str) -> npt.NDArray[np.generic]:
    """A .npy file's array, memory-mapped (shape and dtype without reading the data); ``DatasetError`` naming
    ``where`` if it is not one readable array."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DatasetError(f"{where}: not a readable .npy array: {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise DatasetError(f"{where}: expected one array, found an archive")
    return arr
