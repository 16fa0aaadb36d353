"""What both demo kinds share: the output folder (overwrite rules, the manifest of generated files), reading the
inputs the demo will be fed, and file names.

A demo folder holds ``.rkfarm-codegen.json``, the list of the files codegen wrote. Regenerating with
``overwrite=True`` first removes those files (and folders they leave empty), so no stale model, input or
expected output of an earlier generation survives; files the user added are left alone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rkfarm import __version__
from rkfarm.errors import InputError, RkfarmError
from rkfarm.images import IMAGE_SUFFIXES, read_array, read_image

log = logging.getLogger(__name__)

MANIFEST = ".rkfarm-codegen.json"

Array = npt.NDArray[np.generic]
InputPaths = Sequence[str | os.PathLike[str]] | str | os.PathLike[str] | None


class CodegenError(RkfarmError):
    """The demo project cannot be written (folder in the way, unusable input, unsupported package)."""


def safe_name(name: str) -> str:
    """A tensor name as a file-name part, byte by byte as the C++ demo's main.cc does it: ASCII letters, digits
    and ``-_.`` kept, every other byte ``_``, at most 80."""
    return "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-_.") else "_" for b in name.encode()
    )[:80]


def output_file(index: int, name: str) -> str:
    return f"output_{index}_{safe_name(name)}.npy"


def model_stem(name: str, fallback: str = "model") -> str:
    stem = safe_name(Path(name).stem).strip("._")
    return stem or fallback


class Project:
    """Files written into one demo folder, recorded in its manifest."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: list[str] = []

    def write_text(self, relative: str, text: str, executable: bool = False) -> None:
        path = self._target(relative)
        path.write_text(text, encoding="utf-8")
        if executable:
            path.chmod(0o755)

    def write_bytes(self, relative: str, data: bytes) -> None:
        self._target(relative).write_bytes(data)

    def save_array(self, relative: str, array: Array) -> None:
        with self._target(relative).open("wb") as fh:
            np.save(fh, array, allow_pickle=False)

    def _target(self, relative: str) -> Path:
        path = self.folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        self.files.append(relative)
        return path

    def finish(self, kind: str) -> None:
        record = {"generator": f"rkfarm {__version__}", "kind": kind, "files": sorted(self.files)}
        (self.folder / MANIFEST).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def prepare_folder(output_path: str | os.PathLike[str], overwrite: bool, replace_demo: bool = False) -> Path:
    """The demo folder, created if needed. An existing non-empty folder is refused unless ``overwrite`` (or,
    with ``replace_demo``, unless it holds an earlier rkfarm demo); the files an earlier generation wrote are
    removed first."""
    folder = Path(output_path)
    if folder.exists() and not folder.is_dir():
        raise CodegenError(f"codegen: {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        previous = folder / MANIFEST
        if not overwrite and not (replace_demo and previous.is_file()):
            hint = "pass overwrite=True (rkfarm codegen --overwrite) to replace it"
            if replace_demo:
                hint = "it is not an earlier rkfarm demo; move it away or pick another export folder"
            raise CodegenError(f"codegen: {folder} exists and is not empty; {hint}")
        _remove_previous(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _remove_previous(folder: Path) -> None:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8")).get("files", [])
    except (ValueError, OSError, AttributeError):
        log.warning("codegen: %s is unreadable; generated files are written over the old ones", manifest)
        return
    root = folder.resolve()
    parents: set[Path] = set()
    for relative in listed:
        path = (folder / str(relative)).resolve()
        if root not in path.parents or not path.is_file():
            continue  # never touch anything outside the folder
        path.unlink()
        parents.update(p for p in path.parents if root in p.parents)
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
    manifest.unlink()
    log.info("codegen: removed the %d file(s) of the earlier demo in %s", len(listed), folder)


def input_paths(inputs: InputPaths) -> list[Path]:
    if inputs is None:
        return []
    if isinstance(inputs, (str, os.PathLike)):
        return [Path(inputs)]
    return [Path(p) for p in inputs]


def read_inputs(paths: Sequence[Path], sizes_hw: Sequence[tuple[int, int] | None] | None = None) -> list[Array]:
    """Each file as the array the demo is fed: a .npy as it is (little-endian, C order), an image decoded to
    RGB uint8 NHWC with a batch of one (resized to ``sizes_hw[i]`` when known)."""
    arrays: list[Array] = []
    for i, path in enumerate(paths):
        if not path.is_file():
            raise InputError(f"codegen: input {path}: no such file")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            arr: Array = read_array(path)
        elif suffix in IMAGE_SUFFIXES:
            size = sizes_hw[i] if sizes_hw is not None and i < len(sizes_hw) else None
            arr = read_image(path, size)[np.newaxis]
        else:
            raise InputError(f"codegen: input {path}: unsupported file type {suffix or '(none)'}; use .npy or jpg/png")
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        arrays.append(np.ascontiguousarray(arr))
    return arrays
