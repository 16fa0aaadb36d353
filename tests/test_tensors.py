"""Tensor codec: raw bytes + dtype + shape, for every dtype the wire carries."""

from __future__ import annotations

import numpy as np
import pytest

from rkfarm_proto.errors import InputError
from rkfarm_proto.tensors import from_numpy_dtype, from_tensor, to_tensor

DTYPES = [
    "float32",
    "float16",
    "float64",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "bool",
]


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip(dtype: str) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.random((2, 3, 5)) * 100).astype(dtype)
    back = from_tensor(to_tensor(arr, "t"))
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)


def test_big_endian_and_non_contiguous_inputs() -> None:
    arr = np.arange(12, dtype=">f4").reshape(3, 4).T
    back = from_tensor(to_tensor(arr))
    np.testing.assert_array_equal(back, arr.astype("<f4"))


def test_bytes_that_do_not_match_shape() -> None:
    t = to_tensor(np.zeros((2, 2), np.float32), "x")
    t.shape[:] = [3, 3]
    with pytest.raises(InputError, match=r"'x'.*do not match"):
        from_tensor(t)


def test_unsupported_dtype() -> None:
    with pytest.raises(InputError, match="not supported"):
        from_numpy_dtype(np.complex64)
    with pytest.raises(InputError):
        to_tensor(np.array(["a"]))


def test_hostile_shapes_do_not_overflow() -> None:
    t = to_tensor(np.zeros(4, np.float32), "x")
    t.shape[:] = [2**40, 2**40, 2**40]  # would wrap around in int64
    with pytest.raises(InputError, match="do not match"):
        from_tensor(t)
    t.shape[:] = [0, 2**62]
    t.data = b""
    with pytest.raises(InputError, match="not usable"):
        from_tensor(t)
