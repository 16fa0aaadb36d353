"""Model files as packages: an rkfarm package read and checked, or a vendor ``.rknn`` wrapped in one."""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from pathlib import Path
from typing import Any

from rkfarm_proto.errors import ForeignFormatError
from rkfarm_proto.package import ModelPackage, pack, read_package, vendor_rknn_version
from rkfarm_proto.v1 import package_pb2

log = logging.getLogger(__name__)


_RKNN_HEADER_BYTES = 64  # magic (8), format version (u64), model length (u64), zeros; then the model
_COMPILER_VERSION = re.compile(rb"compiler version: ([0-9][^()\x00]*(?:\([^()\x00]*\))?)")


def vendor_rknn_metadata(data: bytes) -> dict[str, Any] | None:
    """What a vendor ``.rknn`` says about itself: the toolkit version, the target platform(s), the compiler
    version and the input/output tensors, from the JSON the toolkit stores after the model (as RKNN-Toolkit2
    2.x writes it: a 64-byte header whose u64 at offset 16 is the model's length, then a u64 length and the JSON).
    None when the file does not have that layout."""
    if len(data) < _RKNN_HEADER_BYTES + 8 or not data.startswith(b"RKNN"):
        return None
    end = _RKNN_HEADER_BYTES + int(struct.unpack_from("<Q", data, 16)[0])
    if end + 8 > len(data):
        return None
    length = int(struct.unpack_from("<Q", data, end)[0])
    try:
        meta = json.loads(data[end + 8 : end + 8 + length])
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    platforms = meta.get("target_platform") or []
    tensors = {t.get("tensor_id"): t for t in meta.get("norm_tensor", []) if isinstance(t, dict)}
    ends: dict[str, list[dict[str, Any]]] = {"input": [], "output": []}
    for link in meta.get("graph", []):
        side, tensor = link.get("left"), tensors.get(link.get("right_tensor_id"))
        if side in ends and tensor is not None:
            dtype = tensor.get("dtype") or {}
            ends[side].append({"name": tensor.get("url"), "shape": tensor.get("size"), "dtype": dtype.get("vx_type")})
    found = _COMPILER_VERSION.search(data[: min(len(data), 1 << 16)])
    return {
        "toolkit_version": meta.get("version"),
        "target_platforms": [platforms] if isinstance(platforms, str) else list(platforms),
        "compiler_version": found.group(1).decode("ascii", "replace") if found else None,
        "source_platform": meta.get("ori_network_platform") or meta.get("network_platform"),
        "inputs": ends["input"],
        "outputs": ends["output"],
    }


def wrap_vendor_rknn(data: bytes, name: str, *, template: package_pb2.PackageHeader | None = None) -> ModelPackage:
    """A vendor ``.rknn`` (made by RKNN-Toolkit2's compiler) as a package that only librknnrt agents run; its
    inputs and outputs come from the runtime when a board opens it. ``template`` supplies header fields (the
    vendor-compiler bridge, ``rkfarm.vendor``, says there who compiled it and with whose ranges); the target
    platform comes from the file when neither names one."""
    header = package_pb2.PackageHeader(
        producer="RKNN-Toolkit2 (vendor)", source_model_name=name, source_framework="rknn"
    )
    if template is not None:
        header.MergeFrom(template)
    header.payload_kind = package_pb2.PAYLOAD_KIND_RKNN
    if not header.target_platform:
        platforms = (vendor_rknn_metadata(data) or {}).get("target_platforms") or []
        header.target_platform = ",".join(str(p) for p in platforms)
    full, _ = pack(header, data)
    return ModelPackage(header=full, payload=data)


def load_package(path: str | os.PathLike[str]) -> ModelPackage:
    """The package in ``path``; a vendor ``.rknn`` is wrapped (with a warning: it needs a board with
    librknnrt); any other file is a PackageError naming what it is."""
    try:
        return read_package(path)
    except ForeignFormatError as exc:
        if exc.kind != "rknn":
            raise
    source = Path(path)
    data = source.read_bytes()
    log.warning(
        "%s is a vendor RKNN model (format v%s): it can run only on a board agent with librknnrt",
        source,
        vendor_rknn_version(data),
    )
    return wrap_vendor_rknn(data, source.name)
