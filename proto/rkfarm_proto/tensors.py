"""Tensor codec: numpy arrays <-> `rkfarm.v1.Tensor` (raw little-endian bytes + dtype + shape)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from rkfarm_proto.errors import InputError
from rkfarm_proto.v1 import common_pb2

DataType = common_pb2.DataType

_TO_NUMPY: dict[common_pb2.DataType, np.dtype[np.generic]] = {
    common_pb2.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    common_pb2.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    common_pb2.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    common_pb2.DATA_TYPE_INT8: np.dtype("i1"),
    common_pb2.DATA_TYPE_UINT8: np.dtype("u1"),
    common_pb2.DATA_TYPE_INT16: np.dtype("<i2"),
    common_pb2.DATA_TYPE_UINT16: np.dtype("<u2"),
    common_pb2.DATA_TYPE_INT32: np.dtype("<i4"),
    common_pb2.DATA_TYPE_UINT32: np.dtype("<u4"),
    common_pb2.DATA_TYPE_INT64: np.dtype("<i8"),
    common_pb2.DATA_TYPE_UINT64: np.dtype("<u8"),
    common_pb2.DATA_TYPE_BOOL: np.dtype("?"),
}
_FROM_NUMPY: dict[str, common_pb2.DataType] = {
    dt.newbyteorder("=").str.lstrip("<>|="): code for code, dt in _TO_NUMPY.items()
}
_NAMES: dict[int, str] = {code: dt.name for code, dt in _TO_NUMPY.items()}


def to_numpy_dtype(dtype: int) -> np.dtype[np.generic]:
    """The numpy dtype of a wire DataType; InputError for an unknown or unspecified one."""
    try:
        return _TO_NUMPY[dtype]  # type: ignore[index]
    except KeyError:
        raise InputError(f"unsupported tensor data type code {dtype}") from None


def from_numpy_dtype(dtype: npt.DTypeLike) -> common_pb2.DataType:
    """The wire DataType of a numpy dtype; InputError if the wire cannot carry it."""
    dt = np.dtype(dtype)
    code = _FROM_NUMPY.get(dt.newbyteorder("=").str.lstrip("<>|="))
    if code is None:
        supported = ", ".join(sorted(_NAMES.values()))
        raise InputError(f"dtype {dt} is not supported; use one of: {supported}")
    return code


def dtype_name(dtype: int) -> str:
    """A readable name ('float32') for a wire DataType."""
    return _NAMES.get(dtype, f"unknown({dtype})")


def to_tensor(array: npt.ArrayLike, name: str = "") -> common_pb2.Tensor:
    """Encode an array as a Tensor message (one copy into the message's bytes)."""
    arr = np.asarray(array)
    code = from_numpy_dtype(arr.dtype)
    wire = _TO_NUMPY[code]
    if arr.dtype != wire:  # big-endian input: convert to the little-endian wire order
        arr = arr.astype(wire)
    return common_pb2.Tensor(name=name, dtype=code, shape=arr.shape, data=np.ascontiguousarray(arr).tobytes())


def from_tensor(tensor: common_pb2.Tensor) -> npt.NDArray[np.generic]:
    """Decode a Tensor message without copying; InputError if its bytes do not match dtype and shape."""
    dt = to_numpy_dtype(tensor.dtype)
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise InputError(f"tensor {tensor.name[:80]!r}: negative dimension in shape {list(shape)}")
    expected = math.prod(shape) * dt.itemsize  # Python ints: a hostile shape cannot overflow
    if len(tensor.data) != expected:
        raise InputError(
            f"tensor {tensor.name[:80]!r}: {len(tensor.data)} data bytes do not match "
            f"{dt.name}{list(shape)} ({expected} bytes)"
        )
    try:
        return np.frombuffer(tensor.data, dtype=dt).reshape(shape)
    except ValueError as exc:  # e.g. a zero-size tensor with a dimension numpy cannot index
        raise InputError(f"tensor {tensor.name[:80]!r}: shape {list(shape)} is not usable: {exc}") from None


def shape_str(shape: Sequence[int]) -> str:
    """Format a shape the way error messages show it: [1, 3, 48, 192], with '?' for dynamic dims."""
    return "[" + ", ".join("?" if d is None or d < 0 else str(d) for d in shape) + "]"
