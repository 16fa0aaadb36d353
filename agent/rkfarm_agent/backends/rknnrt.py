"""rknnrt backend: vendor ``.rknn`` models on the NPU, through librknnrt's C API (ctypes).

The library is looked up as ``RKFARM_RKNNRT_LIB`` (a path), else ``librknnrt.so`` on the loader path. Unlike
the ONNX Runtime backend, input conversion (layout, mean/std, quantization) is done by librknnrt itself, as
compiled into the model: rkfarm hands it the user's arrays with their dtype, format and pass-through flag.

Calls follow the documented RKNN API: rknn_init / rknn_query (IN_OUT_NUM, INPUT_ATTR, OUTPUT_ATTR, PERF_RUN,
PERF_DETAIL, MEM_SIZE, SDK_VERSION) / rknn_set_core_mask / rknn_inputs_set / rknn_run / rknn_outputs_get /
rknn_outputs_release / rknn_destroy. A context is not used from two threads at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from rkfarm_agent.backends.base import Array, Backend, LoadedModel
from rkfarm_agent.errors import BackendError
from rkfarm_proto.errors import InputError
from rkfarm_proto.records import LayerProfile, LayerTiming, LoadOptions, MemoryReport
from rkfarm_proto.tensors import shape_str
from rkfarm_proto.v1 import common_pb2, package_pb2

log = logging.getLogger(__name__)

MAX_DIMS = 16
MAX_NAME = 256
QUERY_IN_OUT_NUM, QUERY_INPUT_ATTR, QUERY_OUTPUT_ATTR = 0, 1, 2
QUERY_PERF_DETAIL, QUERY_PERF_RUN, QUERY_SDK_VERSION, QUERY_MEM_SIZE = 3, 4, 5, 6
FLAG_COLLECT_PERF = 0x08
FMT_NCHW, FMT_NHWC, FMT_UNDEFINED = 0, 1, 3
# rknn_tensor_type <-> numpy
_TYPES: dict[int, np.dtype[Any]] = {
    0: np.dtype(np.float32),
    1: np.dtype(np.float16),
    2: np.dtype(np.int8),
    3: np.dtype(np.uint8),
    4: np.dtype(np.int16),
    5: np.dtype(np.uint16),
    6: np.dtype(np.int32),
    7: np.dtype(np.uint32),
    8: np.dtype(np.int64),
    9: np.dtype(np.bool_),
}
_TYPE_OF = {dt: code for code, dt in _TYPES.items()}
_WIRE = {
    np.dtype(np.float32): common_pb2.DATA_TYPE_FLOAT32,
    np.dtype(np.float16): common_pb2.DATA_TYPE_FLOAT16,
    np.dtype(np.int8): common_pb2.DATA_TYPE_INT8,
    np.dtype(np.uint8): common_pb2.DATA_TYPE_UINT8,
}

Context = ctypes.c_uint64 if ctypes.sizeof(ctypes.c_void_p) == 8 else ctypes.c_uint32


class TensorAttr(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("n_dims", ctypes.c_uint32),
        ("dims", ctypes.c_uint32 * MAX_DIMS),
        ("name", ctypes.c_char * MAX_NAME),
        ("n_elems", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("fmt", ctypes.c_int),
        ("type", ctypes.c_int),
        ("qnt_type", ctypes.c_int),
        ("fl", ctypes.c_int8),
        ("zp", ctypes.c_int32),
        ("scale", ctypes.c_float),
        ("w_stride", ctypes.c_uint32),
        ("size_with_stride", ctypes.c_uint32),
        ("pass_through", ctypes.c_uint8),
        ("h_stride", ctypes.c_uint32),
    ]


class RknnInput(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("buf", ctypes.c_void_p),
        ("size", ctypes.c_uint32),
        ("pass_through", ctypes.c_uint8),
        ("type", ctypes.c_int),
        ("fmt", ctypes.c_int),
    ]


class RknnOutput(ctypes.Structure):
    _fields_ = [
        ("want_float", ctypes.c_uint8),
        ("is_prealloc", ctypes.c_uint8),
        ("index", ctypes.c_uint32),
        ("buf", ctypes.c_void_p),
        ("size", ctypes.c_uint32),
    ]


class InOutNum(ctypes.Structure):
    _fields_ = [("n_input", ctypes.c_uint32), ("n_output", ctypes.c_uint32)]


class PerfRun(ctypes.Structure):
    _fields_ = [("run_duration", ctypes.c_int64)]


class PerfDetail(ctypes.Structure):
    _fields_ = [("perf_data", ctypes.c_char_p), ("data_len", ctypes.c_uint64)]


class MemSize(ctypes.Structure):
    _fields_ = [
        ("total_weight_size", ctypes.c_uint32),
        ("total_internal_size", ctypes.c_uint32),
        ("total_dma_allocated_size", ctypes.c_uint64),
        ("total_sram_size", ctypes.c_uint32),
        ("free_sram_size", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 10),
    ]


class SdkVersion(ctypes.Structure):
    _fields_ = [("api_version", ctypes.c_char * 256), ("drv_version", ctypes.c_char * 256)]


_lib_lock = threading.Lock()
_lib_cache: dict[str, ctypes.CDLL | None] = {}


def library_path() -> str | None:
    explicit = os.environ.get("RKFARM_RKNNRT_LIB")
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    found = ctypes.util.find_library("rknnrt")
    if found:
        return found
    for candidate in ("/usr/lib/librknnrt.so", "/usr/lib64/librknnrt.so", "/usr/local/lib/librknnrt.so"):
        if os.path.isfile(candidate):
            return candidate
    return None


def load_library() -> ctypes.CDLL | None:
    """librknnrt, or None when this machine has none (every PC, and boards without the vendor runtime)."""
    path = library_path()
    if path is None:
        return None
    with _lib_lock:
        if path not in _lib_cache:
            try:
                lib = ctypes.CDLL(path)
                _declare(lib)
                _lib_cache[path] = lib
            except (OSError, AttributeError) as exc:
                log.warning("cannot use %s: %s", path, exc)
                _lib_cache[path] = None
        return _lib_cache[path]


def _declare(lib: ctypes.CDLL) -> None:
    ctx_p = ctypes.POINTER(Context)
    signatures: dict[str, list[Any]] = {
        "rknn_init": [ctx_p, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p],
        "rknn_destroy": [Context],
        "rknn_query": [Context, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32],
        "rknn_inputs_set": [Context, ctypes.c_uint32, ctypes.POINTER(RknnInput)],
        "rknn_run": [Context, ctypes.c_void_p],
        "rknn_outputs_get": [Context, ctypes.c_uint32, ctypes.POINTER(RknnOutput), ctypes.c_void_p],
        "rknn_outputs_release": [Context, ctypes.c_uint32, ctypes.POINTER(RknnOutput)],
    }
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = ctypes.c_int
    if hasattr(lib, "rknn_set_core_mask"):
        lib.rknn_set_core_mask.argtypes = [Context, ctypes.c_int]
        lib.rknn_set_core_mask.restype = ctypes.c_int


@dataclass(frozen=True)
class RawFeed:
    """An input as the user gave it; librknnrt converts it (its dtype, layout and pass-through flag)."""

    array: Array
    fmt: int
    pass_through: bool


class RawAdapter:
    """Checks counts and sizes against the model's input attributes; leaves conversion to librknnrt."""

    def __init__(self, attrs: Sequence[TensorAttr]) -> None:
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
        feeds: list[Any] = []
        for i, (attr, value) in enumerate(zip(self._attrs, arrays)):
            arr = np.ascontiguousarray(value)
            name = attr.name.decode(errors="replace")
            if arr.dtype not in _TYPE_OF:
                raise InputError(f"input {name!r}: dtype {arr.dtype} is not supported by librknnrt")
            if arr.size != attr.n_elems:
                dims = list(attr.dims[: attr.n_dims])
                raise InputError(
                    f"input {name!r}: expected {shape_str(dims)} ({attr.n_elems} values), got {shape_str(arr.shape)}"
                )
            fmt = data_format if isinstance(data_format, str) or data_format is None else data_format[i]
            passes = bool(pass_through[i]) if pass_through else False
            code = FMT_NCHW if fmt == "nchw" else FMT_NHWC if arr.ndim == 4 else FMT_UNDEFINED
            feeds.append(RawFeed(arr, code, passes))
        return feeds


class RknnrtModel(LoadedModel):
    def __init__(self, lib: ctypes.CDLL, payload: bytes, options: LoadOptions) -> None:
        self._lib = lib
        self._ctx = Context(0)
        self._lock = threading.Lock()
        self._model_buf = ctypes.create_string_buffer(payload, len(payload))
        flags = FLAG_COLLECT_PERF if options.perf_debug else 0
        self._check(lib.rknn_init(ctypes.byref(self._ctx), self._model_buf, len(payload), flags, None), "rknn_init")
        self._perf = bool(flags)
        try:
            if options.core_mask and hasattr(lib, "rknn_set_core_mask"):
                self._check(lib.rknn_set_core_mask(self._ctx, options.core_mask), "rknn_set_core_mask")
            counts = InOutNum()
            self._query(QUERY_IN_OUT_NUM, counts)
            self.inputs = [self._attr(QUERY_INPUT_ATTR, i) for i in range(counts.n_input)]
            self.outputs = [self._attr(QUERY_OUTPUT_ATTR, i) for i in range(counts.n_output)]
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

    def _attr(self, cmd: int, index: int) -> TensorAttr:
        attr = TensorAttr()
        attr.index = index
        self._query(cmd, attr)
        return attr

    # -- LoadedModel -------------------------------------------------------------------------------------
    def make_adapter(self, header: package_pb2.PackageHeader) -> RawAdapter:
        return RawAdapter(self.inputs)

    def describe_io(self) -> tuple[list[package_pb2.InputSpec], list[common_pb2.TensorSpec]]:
        def spec(attr: TensorAttr) -> common_pb2.TensorSpec:
            layout = {FMT_NCHW: common_pb2.LAYOUT_NCHW, FMT_NHWC: common_pb2.LAYOUT_NHWC}.get(
                attr.fmt, common_pb2.LAYOUT_UNSPECIFIED
            )
            dtype = _WIRE.get(_TYPES.get(attr.type, np.dtype(np.float32)), common_pb2.DATA_TYPE_FLOAT32)
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

    def run(self, feeds: Sequence[Any]) -> list[Array]:
        """Feeds from RawAdapter, or plain arrays (eval_perf's zeros) taken as NHWC and converted."""
        raw = [f if isinstance(f, RawFeed) else RawFeed(np.ascontiguousarray(f), FMT_NHWC, False) for f in feeds]
        inputs = (RknnInput * len(raw))()
        for i, feed in enumerate(raw):
            inputs[i].index = i
            inputs[i].buf = feed.array.ctypes.data
            inputs[i].size = feed.array.nbytes
            inputs[i].pass_through = int(feed.pass_through)
            inputs[i].type = _TYPE_OF[feed.array.dtype]
            inputs[i].fmt = feed.fmt
        results = [np.empty(int(attr.n_elems), dtype=np.float32) for attr in self.outputs]
        outputs = (RknnOutput * len(results))()
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

    def profile(self, feeds: Sequence[Any], runs: int) -> LayerProfile:
        if not self._perf:
            raise BackendError("per-layer times need the session opened with perf_debug (RKNN_FLAG_COLLECT_PERF_MASK)")
        times = []
        for _ in range(max(1, runs)):
            self.run(feeds)
            perf = PerfRun()
            self._query(QUERY_PERF_RUN, perf)
            times.append(float(perf.run_duration))
        detail = PerfDetail()
        self._query(QUERY_PERF_DETAIL, detail)
        text = (detail.perf_data or b"")[: detail.data_len].decode(errors="replace")
        return LayerProfile(layers=parse_perf_detail(text), run_times_us=times)

    def memory(self) -> MemoryReport:
        mem = MemSize()
        self._query(QUERY_MEM_SIZE, mem)
        other = max(0, int(mem.total_dma_allocated_size) - mem.total_weight_size - mem.total_internal_size)
        return MemoryReport(
            weight_bytes=int(mem.total_weight_size),
            internal_bytes=int(mem.total_internal_size),
            other_bytes=other,
            method="librknnrt RKNN_QUERY_MEM_SIZE: weight and internal sizes; other = DMA allocated beyond them",
        )

    def versions(self) -> str:
        version = SdkVersion()
        self._query(QUERY_SDK_VERSION, version)
        return f"{version.api_version.decode(errors='replace')} / driver {version.drv_version.decode(errors='replace')}"

    def close(self) -> None:
        with self._lock:
            if self._ctx.value:
                self._lib.rknn_destroy(self._ctx)
                self._ctx = Context(0)


def parse_perf_detail(text: str) -> list[LayerTiming]:
    """Rows of librknnrt's per-layer table: a header line naming the columns (ID, OpType, ..., Time(us),
    ..., FullName), then one row per layer with columns separated by runs of spaces."""
    lines = text.splitlines()
    header_at = next((i for i, line in enumerate(lines) if "Time(us)" in line and "OpType" in line), None)
    if header_at is None:
        return []
    columns = lines[header_at].split()
    layers = []
    for line in lines[header_at + 1 :]:
        cells = line.split()
        if len(cells) < len(columns) or not cells[0].isdigit():
            continue
        row = dict(zip(columns, cells))
        try:
            time_us = float(row.get("Time(us)", "0"))
        except ValueError:
            continue
        layers.append(
            LayerTiming(
                index=int(cells[0]) - 1,
                op_type=row.get("OpType", ""),
                data_type=row.get("DataType", ""),
                target=row.get("Target", ""),
                input_shapes=row.get("InputShape", ""),
                output_shapes=row.get("OutputShape", ""),
                time_us=time_us,
                name=cells[-1] if "FullName" in columns else "",
            )
        )
    return layers


class RknnrtBackend(Backend):
    name: ClassVar[str] = "rknnrt"
    payload_kinds: ClassVar[frozenset[int]] = frozenset({package_pb2.PAYLOAD_KIND_RKNN})

    @classmethod
    def available(cls) -> bool:
        return load_library() is not None

    def load(self, header: package_pb2.PackageHeader, payload: bytes, options: LoadOptions) -> LoadedModel:
        lib = load_library()
        if lib is None:
            raise BackendError("librknnrt is not available on this machine (set RKFARM_RKNNRT_LIB to its path)")
        return RknnrtModel(lib, payload, options)
