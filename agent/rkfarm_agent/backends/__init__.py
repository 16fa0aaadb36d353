"""Execution backends, one module each, in a plain registry keyed by name."""

from __future__ import annotations

from rkfarm_agent.backends.base import Backend, LoadedModel
from rkfarm_agent.backends.onnxruntime import OnnxRuntimeBackend
from rkfarm_agent.backends.rknnrt import RknnrtBackend
from rkfarm_agent.errors import NoBackendError
from rkfarm_proto.v1 import package_pb2

BACKENDS: dict[str, type[Backend]] = {
    OnnxRuntimeBackend.name: OnnxRuntimeBackend,
    RknnrtBackend.name: RknnrtBackend,
}


def available_backends() -> list[str]:
    """Names of the backends this machine can use."""
    return [name for name, cls in BACKENDS.items() if cls.available()]


def backend_versions() -> dict[str, str]:
    """``backend.<name>`` -> what each available backend runs on (its library and version)."""
    return {f"backend.{name}": cls.version() for name, cls in BACKENDS.items() if cls.available() and cls.version()}


def backend_for(payload_kind: int, serving: bool = False) -> Backend:
    """An instance of the first available backend that runs ``payload_kind`` (``serving``: for an agent)."""
    for cls in BACKENDS.values():
        if payload_kind in cls.payload_kinds and cls.available():
            return cls(serving=serving)
    kind = package_pb2.PayloadKind.Name(payload_kind).removeprefix("PAYLOAD_KIND_").lower()
    if payload_kind == package_pb2.PAYLOAD_KIND_RKNN:
        raise NoBackendError(
            "this is a vendor .rknn model: it needs the rknnrt backend (librknnrt.so on a Rockchip board); "
            "this machine does not have it"
        )
    raise NoBackendError(f"no backend here runs {kind} payloads (available: {', '.join(available_backends())})")


__all__ = ["BACKENDS", "Backend", "LoadedModel", "available_backends", "backend_for", "backend_versions"]
