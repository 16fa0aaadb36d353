"""Frontends: each turns a source model into a standard ONNX graph with fixed input shapes.

One module per framework, registered by name in ``FRONTENDS``: the vendor's ``load_<name>`` function with the
vendor's signature and defaults, returning a ``LoadedGraph``. ``detect()`` picks the frontend for a file by its
extension and, where that is ambiguous or missing, by its first bytes. Heavy SDKs (torch, TensorFlow) are
imported inside their module, with an error naming what to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkfarm.errors import ModelLoadError

if TYPE_CHECKING:
    import onnx


@dataclass
class LoadedGraph:
    """A loaded source model, as ONNX, ready for build()."""

    model: onnx.ModelProto
    source_name: str
    source_sha256: str
    framework: str


@dataclass(frozen=True)
class Frontend:
    """One framework: where its loader lives and how its files look."""

    name: str  # the vendor's name: load_<name>
    module: str
    suffixes: tuple[str, ...]  # lower-case, with the dot
    describe: str  # what the file is, for messages
    companion: str | None = None  # the second file it reads (weights), as the CLI names the option

    def loader(self) -> Callable[..., LoadedGraph]:
        module = importlib.import_module(self.module)
        fn: Callable[..., LoadedGraph] = getattr(module, f"load_{self.name}")
        return fn


FRONTENDS: dict[str, Frontend] = {
    f.name: f
    for f in (
        Frontend("onnx", "rkfarm.frontends.onnx", (".onnx",), "an ONNX model"),
        Frontend("pytorch", "rkfarm.frontends.pytorch", (".pt", ".pth", ".torchscript"), "a TorchScript model"),
        Frontend("caffe", "rkfarm.frontends.caffe", (".prototxt",), "a Caffe prototxt", companion="--blobs"),
        Frontend("darknet", "rkfarm.frontends.darknet", (".cfg",), "a Darknet .cfg", companion="--weights"),
        Frontend("tflite", "rkfarm.frontends.tflite", (".tflite",), "a TensorFlow Lite flatbuffer"),
        Frontend("tensorflow", "rkfarm.frontends.tensorflow", (".pb",), "a frozen TensorFlow GraphDef"),
    )
}


def loader(name: str) -> Callable[..., LoadedGraph]:
    """The ``load_<name>`` function of a registered frontend."""
    try:
        return FRONTENDS[name].loader()
    except KeyError:
        raise ModelLoadError(f"no frontend named {name!r}; known: {', '.join(FRONTENDS)}") from None


def sniff(head: bytes) -> str | None:
    """The framework a file's first bytes show, or None when they show nothing certain."""
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[:4] == b"PK\x03\x04":
        return "pytorch"  # TorchScript is a zip archive
    if _is_text(head):  # Darknet's .cfg and Caffe's prototxt are text; protobuf binaries are not
        text = head.lstrip().lower()
        if text.startswith((b"[net]", b"[network]")):
            return "darknet"
        for marker in (b"layer {", b"layer{", b"layers {", b"input:", b"name:", b"input_shape"):
            if marker in head:
                return "caffe"
        return None
    if head[:3] == b"\x08\x01\x12":
        # SavedModel: schema version 1 (field 1), then a meta graph (field 2). An ONNX file starts the same
        # way only with ir_version 1, which no exporter has written since 2017; TensorFlow's loader then says
        # to freeze it (the vendor loads frozen GraphDefs only)
        return "tensorflow"
    if head[:1] == b"\x08":
        return "onnx"  # ModelProto starts with ir_version (field 1, varint)
    if head[:1] == b"\x0a":
        return "tensorflow"  # GraphDef starts with a node (field 1, message)
    return None


def _is_text(head: bytes) -> bool:
    """Printable text (UTF-8, no control bytes but tab/newline/CR): what the two text formats look like."""
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        try:
            decoded = head[:-3].decode("utf-8")  # a multi-byte character cut at the end of the head
        except UnicodeDecodeError:
            return False
    return all(c.isprintable() or c in "\t\n\r" for c in decoded)


def detect(path: str | Path) -> Frontend:
    """The frontend for a source file: by extension when it is unambiguous, by content otherwise."""
    p = Path(path)
    by_suffix = [f for f in FRONTENDS.values() if p.suffix.lower() in f.suffixes]
    if p.suffix.lower() in (".pt", ".pth", ".pb", ".txt", "") or not by_suffix:
        try:
            with p.open("rb") as fh:
                head = fh.read(4096)
        except FileNotFoundError:
            raise ModelLoadError(f"{p}: no such file") from None
        except OSError as exc:
            raise ModelLoadError(f"{p}: cannot read: {exc.strerror or exc}") from None
        found = sniff(head)
        if found is not None:
            return FRONTENDS[found]
    if by_suffix:
        return by_suffix[0]
    known = ", ".join(sorted({s for f in FRONTENDS.values() for s in f.suffixes}))
    raise ModelLoadError(f"{p}: cannot tell which framework this model is from (known extensions: {known})")


def load(path: str | Path, **options: Any) -> LoadedGraph:
    """Load any supported source file with the options its loader takes."""
    return detect(path).loader()(path, **options)
