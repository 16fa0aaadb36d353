"""Model files as packages: an rkfarm package read and checked, or a vendor ``.rknn`` wrapped in one."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rkfarm_proto.errors import ForeignFormatError
from rkfarm_proto.package import ModelPackage, pack, read_package, vendor_rknn_version
from rkfarm_proto.v1 import package_pb2

log = logging.getLogger(__name__)


def wrap_vendor_rknn(data: bytes, name: str) -> ModelPackage:
    """A vendor ``.rknn`` (made by RKNN-Toolkit2's compiler) as a package that only librknnrt agents run; its
    inputs and outputs come from the runtime when a board opens it."""
    header = package_pb2.PackageHeader(
        producer="RKNN-Toolkit2 (vendor)",
        source_model_name=name,
        source_framework="rknn",
        payload_kind=package_pb2.PAYLOAD_KIND_RKNN,
    )
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
