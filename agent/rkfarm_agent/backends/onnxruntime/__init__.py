"""The ONNX Runtime backend: runs ONNX payloads (float, float16, QDQ int8) on any board or PC."""

from __future__ import annotations

import importlib.util
from importlib import metadata
from typing import ClassVar

from rkfarm_agent.backends.base import Backend, LoadedModel
from rkfarm_agent.backends.onnxruntime import custom_ops
from rkfarm_agent.backends.onnxruntime.model import OnnxRuntimeModel
from rkfarm_agent.backends.onnxruntime.profile import parse_ort_profile
from rkfarm_agent.backends.onnxruntime.session import open_session, single_core_mask, threads_for_core_mask
from rkfarm_proto.records import LoadOptions
from rkfarm_proto.v1 import package_pb2


class OnnxRuntimeBackend(Backend):
    name: ClassVar[str] = "onnxruntime"
    payload_kinds: ClassVar[frozenset[int]] = frozenset({package_pb2.PAYLOAD_KIND_ONNX})

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None  # imported lazily, on the first load

    @classmethod
    def version(cls) -> str:
        try:
            return f"onnxruntime {metadata.version('onnxruntime')}"
        except metadata.PackageNotFoundError:
            return ""

    def load(self, header: package_pb2.PackageHeader, payload: bytes, options: LoadOptions) -> LoadedModel:
        custom_ops.require(list(header.custom_ops))  # before any work: FAILED_PRECONDITION naming the op
        return OnnxRuntimeModel(header, payload, options, serving=self.serving)


__all__ = [
    "OnnxRuntimeBackend",
    "OnnxRuntimeModel",
    "open_session",
    "parse_ort_profile",
    "single_core_mask",
    "threads_for_core_mask",
]
