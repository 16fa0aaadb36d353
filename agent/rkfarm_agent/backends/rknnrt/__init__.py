"""The rknnrt backend: vendor ``.rknn`` models on the NPU, through librknnrt's C API (ctypes).

The library is looked up as ``RKFARM_RKNNRT_LIB`` (a path), else ``librknnrt.so`` on the loader path. Unlike
the ONNX Runtime backend, input conversion (layout, mean/std, quantization) is done by librknnrt itself, as
compiled into the model: rkfarm hands it the user's arrays with their dtype, format and pass-through flag.

Calls follow the documented RKNN API: rknn_init / rknn_query (IN_OUT_NUM, INPUT_ATTR, OUTPUT_ATTR, PERF_RUN,
PERF_DETAIL, MEM_SIZE, SDK_VERSION) / rknn_set_core_mask / rknn_inputs_set / rknn_run / rknn_outputs_get /
rknn_outputs_release / rknn_destroy. A context is not used from two threads at once.
"""

from __future__ import annotations

from typing import ClassVar

from rkfarm_agent.backends.base import Backend, LoadedModel
from rkfarm_agent.backends.rknnrt import capi
from rkfarm_agent.backends.rknnrt.capi import library_path, load_library
from rkfarm_agent.backends.rknnrt.model import RawAdapter, RawFeed, RknnrtModel
from rkfarm_agent.backends.rknnrt.perf_detail import parse_perf_detail
from rkfarm_agent.errors import BackendError
from rkfarm_proto.records import LoadOptions
from rkfarm_proto.v1 import package_pb2


class RknnrtBackend(Backend):
    name: ClassVar[str] = "rknnrt"
    payload_kinds: ClassVar[frozenset[int]] = frozenset({package_pb2.PAYLOAD_KIND_RKNN})

    @classmethod
    def available(cls) -> bool:
        return load_library() is not None

    @classmethod
    def version(cls) -> str:
        path = library_path()
        if path is None:
            return ""
        seen = capi.seen_version()
        return f"librknnrt {seen} ({path})" if seen else f"librknnrt at {path} (version known after the first load)"

    def load(self, header: package_pb2.PackageHeader, payload: bytes, options: LoadOptions) -> LoadedModel:
        lib = load_library()
        if lib is None:
            raise BackendError("librknnrt is not available on this machine (set RKFARM_RKNNRT_LIB to its path)")
        return RknnrtModel(lib, payload, options)


__all__ = ["RawAdapter", "RawFeed", "RknnrtBackend", "RknnrtModel", "library_path", "load_library", "parse_perf_detail"]
