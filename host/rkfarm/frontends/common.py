"""What every frontend does the same way: read its source files, hash them, mark layouts, finish the graph."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import onnx

from rkfarm.errors import ModelLoadError
from rkfarm.frontends import LoadedGraph


def read_source(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of a source file; a missing, unreadable or empty file is a one-line error naming it."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{p}: no such file ({what})") from None
    except IsADirectoryError:
        raise ModelLoadError(f"{p}: is a directory, not {what}") from None
    except OSError as exc:
        raise ModelLoadError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    if not data:
        raise ModelLoadError(f"{p}: the file is empty (expected {what})")
    return data


def sources_sha256(blobs: Iterable[bytes]) -> str:
    """One digest for a model made of several files (structure + weights): sha256 over each file's sha256."""
    parts = [hashlib.sha256(b).hexdigest() for b in blobs]
    if len(parts) == 1:
        return parts[0]
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def finish(model: onnx.ModelProto, source: str | os.PathLike[str], digest: str, framework: str) -> LoadedGraph:
    """A converted graph, checked and shape-inferred exactly as a loaded ONNX file is."""
    from rkfarm.frontends.onnx import load_onnx

    loaded = load_onnx(model)
    loaded.source_name = Path(source).name
    loaded.source_sha256 = digest
    loaded.framework = framework
    return loaded
