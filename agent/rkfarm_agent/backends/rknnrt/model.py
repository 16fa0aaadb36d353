"""A vendor .rknn opened in librknnrt: inputs handed over as the user gave them, outputs fetched as float.

A context is not used from two threads at once.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rkfarm_agent.backends.base import Array, LoadedModel
from rkfarm_agent.backends.rknnrt import capi
from rkfarm_agent.backends.rknnrt.perf_detail import parse_perf_detail
from rkfarm_agent.errors import BackendError
from rkfarm_agent.inputs import per_input
from rkfarm_proto.errors import InputError
from rkfarm_proto.records import LayerProfile, LoadOptions, MemoryReport
from rkfarm_proto.tensors import shape_str
from rkfarm_proto.v1 import common_pb2, package_pb2


@dataclass(frozen=True)
class RawFeed:
    """An input as the user gave it; librknnrt converts it (its dtype, layout and pass-through flag)."""

    array: Array
    fmt: int
    pass_through: bool


class RawAdapter:
    """Checks counts and sizes against the model's input attributes; leaves conversion to librknnrt."""

    def __init__(self, attrs: Sequence[capi.TensorAttr]) -> None:
        self._attrs = list(attrs)

    def __call__(
        self,
        arrays: Sequence[npt.ArrayLike],
        data_format: str | Sequence[str | None] | None = None,
        pass_through: Sequence[int | bool] | None = None,
    ) -> list[Any]:
        if len(arrays) != len(self._attrs):
            names = ", ".join(a.name.decode(errors="replace") for a in self._attrs)
            raise InputError(f"model takes {len(self._attrs)} input(s) ({names}), got {len(arrays)}")
        formats = per_input(data_format, len(self._attrs), "data_format")
        passes = per_input(pass_through, len(self._attrs), "inputs_pass_through")
        feeds: list[Any] = []
        for attr, value, fmt, passes_through in zip(self._attrs, arrays, formats, passes):
            arr = np.ascontiguousarray(value)
            name = attr.name.decode(errors="replace")
            if arr.dtype not in capi.TYPE_OF:
                raise InputError(f"input {name!r}: dtype {arr.dtype} is not supported by librknnrt")
            if arr.size != attr.n_elems:
                dims = list(attr.dims[: attr.n_dims])
                raise InputError(
                    f"input {name!r}: expected {shape_str(dims)} ({attr.n_elems} values), got {shape_str(arr.shape)}"
                )
            code = capi.FMT_NCHW if fmt == "nchw" else capi.FMT_NHWC if arr.ndim == 4 else capi.FMT_UNDEFINED
            feeds.append(RawFeed(arr, code, bool(passes_through)))
        return feeds


class RknnrtModel(LoadedModel):
    def __init__(self, lib: ctypes.CDLL, payload: bytes, options: LoadOptions) -> None:
        self._lib = lib
        self._ctx = capi.Context(0)
        self._lock = threading.Lock()
        self._model_buf = ctypes.create_string_buffer(payload, len(payload))
        flags = capi.FLAG_COLLECT_PERF if options.perf_debug else 0
        self._check(lib.rknn_init(ctypes.byref(self._ctx), self._model_buf, len(payload), flags, None), "rknn_init")
        self._perf = bool(flags)
        try:
            if options.core_mask and hasattr(lib, "rknn_set_core_mask"):
                self._check(lib.rknn_set_core_mask(self._ctx, options.core_mask), "rknn_set_core_mask")
            counts = capi.InOutNum()
            self._query(capi.QUERY_IN_OUT_NUM, counts)
            self.inputs = [self._attr(capi.QUERY_INPUT_ATTR, i) for i in range(counts.n_input)]
            self.outputs = [self._attr(capi.QUERY_OUTPUT_ATTR, i) for i in range(counts.n_output)]
            self.input_count = len(self.inputs)
            capi.note_version(self.versions())
        except BaseException:
            self.close()
            raise

    # -- plumbing ----------------------------------------------------------------------------------------
    @staticmethod
    def _check(ret: int, call: str) -> None:
        if ret < 0:
            raise BackendError(f"librknnrt {call} failed with code {ret}")

    def _query(self, cmd: int, info: ctypes.Structure) -> None:
        self._check(self._lib.rknn_query(self._ctx, cmd, ctypes.byref(info), ctypes.sizeof(info)), f"rknn_query({cmd})")

    def _attr(self, cmd: int, index: int) -> capi.TensorAttr:
        attr = capi.TensorAttr()
        attr.index = index
        self._query(cmd, attr)
        return attr

    # -- LoadedModel -------------------------------------------------------------------------------------
    def make_adapter(self, header: package_pb2.PackageHeader) -> RawAdapter:
        return RawAdapter(self.inputs)

    def describe_io(self) -> tuple[list[package_pb2.InputSpec], list[common_pb2.TensorSpec]]:
        def spec(attr: capi.TensorAttr) -> common_pb2.TensorSpec:
            layout = {capi.FMT_NCHW: common_pb2.LAYOUT_NCHW, capi.FMT_NHWC: common_pb2.LAYOUT_NHWC}.get(
                attr.fmt, common_pb2.LAYOUT_UNSPECIFIED
            )
            dtype = capi.WIRE.get(capi.TYPES.get(attr.type, np.dtype(np.float32)), common_pb2.DATA_TYPE_FLOAT32)
            return common_pb2.TensorSpec(
                name=attr.name.decode(errors="replace"),
                dtype=dtype,
                shape=list(attr.dims[: attr.n_dims]),
                layout=layout,
            )

        outputs = []
        for attr in self.outputs:
            out = spec(attr)
            out.dtype = common_pb2.DATA_TYPE_FLOAT32  # outputs are fetched as float
            outputs.append(out)
        return [package_pb2.InputSpec(tensor=spec(a)) for a in self.inputs], outputs

    def _run(self, feeds: Sequence[Any]) -> list[Array]:
        """Feeds from RawAdapter, or plain arrays (eval_perf's zeros) taken as NHWC and converted."""
        raw = [f if isinstance(f, RawFeed) else RawFeed(np.ascontiguousarray(f), capi.FMT_NHWC, False) for f in feeds]
        inputs = (capi.RknnInput * len(raw))()
        for i, feed in enumerate(raw):
            inputs[i].index = i
            inputs[i].buf = feed.array.ctypes.data
            inputs[i].size = feed.array.nbytes
            inputs[i].pass_through = int(feed.pass_through)
            inputs[i].type = capi.TYPE_OF[feed.array.dtype]
            inputs[i].fmt = feed.fmt
        results = [np.empty(int(attr.n_elems), dtype=np.float32) for attr in self.outputs]
        outputs = (capi.RknnOutput * len(results))()
        for i, buf in enumerate(results):
            outputs[i].want_float = 1
            outputs[i].is_prealloc = 1
            outputs[i].index = i
            outputs[i].buf = buf.ctypes.data
            outputs[i].size = buf.nbytes
        with self._lock:
            self._check(self._lib.rknn_inputs_set(self._ctx, len(raw), inputs), "rknn_inputs_set")
            self._check(self._lib.rknn_run(self._ctx, None), "rknn_run")
            self._check(self._lib.rknn_outputs_get(self._ctx, len(results), outputs, None), "rknn_outputs_get")
            self._lib.rknn_outputs_release(self._ctx, len(results), outputs)
        return [buf.reshape(list(attr.dims[: attr.n_dims])) for buf, attr in zip(results, self.outputs)]

    def _profile(self, feeds: Sequence[Any], runs: int) -> LayerProfile:
        if not self._perf:
            raise BackendError("per-layer times need the session opened with perf_debug (RKNN_FLAG_COLLECT_PERF_MASK)")
        times = []
        for _ in range(max(1, runs)):
            self.run(feeds)
            perf = capi.PerfRun()
            self._query(capi.QUERY_PERF_RUN, perf)
            times.append(float(perf.run_duration))
        detail = capi.PerfDetail()
        self._query(capi.QUERY_PERF_DETAIL, detail)
        text = (detail.perf_data or b"")[: detail.data_len].decode(errors="replace")
        return LayerProfile(layers=parse_perf_detail(text), run_times_us=times)

    def memory(self) -> MemoryReport:
        mem = capi.MemSize()
        self._query(capi.QUERY_MEM_SIZE, mem)
        other = max(0, int(mem.total_dma_allocated_size) - mem.total_weight_size - mem.total_internal_size)
        return MemoryReport(
            weight_bytes=int(mem.total_weight_size),
            internal_bytes=int(mem.total_internal_size),
            other_bytes=other,
            method="librknnrt RKNN_QUERY_MEM_SIZE: weight and internal sizes; other = DMA allocated beyond them",
        )

    def versions(self) -> str:
        version = capi.SdkVersion()
        self._query(capi.QUERY_SDK_VERSION, version)
        return f"{version.api_version.decode(errors='replace')} / driver {version.drv_version.decode(errors='replace')}"

    def close(self) -> None:
        with self._lock:
            if self._ctx.value:
                self._lib.rknn_destroy(self._ctx)
                self._ctx = capi.Context(0)
