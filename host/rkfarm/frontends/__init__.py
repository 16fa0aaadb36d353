"""Frontends: each turns a source model into a standard ONNX graph with fixed input shapes.

One module per framework, registered by name. Heavy SDKs (torch, tensorflow) are imported lazily inside
their module, with a clear error naming the extra to install.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx


@dataclass
class LoadedGraph:
    """A loaded source model, as ONNX, ready for build()."""

    model: onnx.ModelProto
    source_name: str
    source_sha256: str
    framework: str
