"""librknnrt's C API as ctypes sees it: constants, struct layouts, and finding and declaring the library.

The layouts follow the documented ``rknn_api.h`` (rknn_tensor_attr, rknn_input, rknn_output, rknn_perf_run,
rknn_perf_detail, rknn_mem_size, rknn_sdk_version). The library is looked up as ``RKFARM_RKNNRT_LIB`` (a path),
else ``librknnrt.so`` on the loader path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from typing import Any

import numpy as np

from rkfarm_proto.v1 import common_pb2

log = logging.getLogger(__name__)

MAX_DIMS = 16
MAX_NAME = 256
QUERY_IN_OUT_NUM, QUERY_INPUT_ATTR, QUERY_OUTPUT_ATTR = 0, 1, 2
QUERY_PERF_DETAIL, QUERY_PERF_RUN, QUERY_SDK_VERSION, QUERY_MEM_SIZE = 3, 4, 5, 6
FLAG_COLLECT_PERF = 0x08
FMT_NCHW, FMT_NHWC, FMT_UNDEFINED = 0, 1, 3
# rknn_tensor_type <-> numpy
TYPES: dict[int, np.dtype[Any]] = {
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
TYPE_OF = {dt: code for code, dt in TYPES.items()}
WIRE = {
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
                declare(lib)
                _lib_cache[path] = lib
            except (OSError, AttributeError) as exc:
                log.warning("cannot use %s: %s", path, exc)
                _lib_cache[path] = None
        return _lib_cache[path]


def declare(lib: ctypes.CDLL) -> None:
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


_seen: dict[str, str] = {}


def note_version(version: str) -> None:
    """Remember the runtime and driver version librknnrt reported (it tells only through a model's context)."""
    _seen["version"] = version


def seen_version() -> str:
    return _seen.get("version", "")
