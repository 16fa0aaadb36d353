"""The model package format: round trip, and every way a file can be wrong."""

from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rkfarm_proto.errors import ForeignFormatError, PackageError
from rkfarm_proto.package import (
    FORMAT_VERSION,
    MAGIC,
    StreamVerifier,
    detect_format,
    pack,
    read_package,
    unpack,
    write_package,
)
from rkfarm_proto.v1 import package_pb2


def _header() -> package_pb2.PackageHeader:
    h = package_pb2.PackageHeader(source_model_name="m.onnx", payload_kind=package_pb2.PAYLOAD_KIND_ONNX)
    spec = h.inputs.add()
    spec.tensor.name = "x"
    spec.tensor.shape.extend([1, 3, 4, 4])
    spec.mean_values.extend([1.0, 2.0, 3.0])
    return h


PAYLOAD = bytes(range(256)) * 40


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "m.rkfm"
    full = write_package(path, _header(), PAYLOAD)
    pkg = read_package(path)
    assert pkg.payload == PAYLOAD
    assert pkg.header == full
    assert pkg.header.format_version == FORMAT_VERSION
    assert pkg.header.payload_size == len(PAYLOAD)
    assert list(pkg.header.inputs[0].mean_values) == [1.0, 2.0, 3.0]
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left a temporary file"


def test_write_refuses_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="does not exist"):
        write_package(tmp_path / "nope" / "m.rkfm", _header(), PAYLOAD)


@pytest.mark.parametrize("cut", [0, 5, 19, 21, 60, -1, -500])
def test_truncated_is_refused_with_position(cut: int) -> None:
    _, blob = pack(_header(), PAYLOAD)
    data = blob[:cut] if cut >= 0 else blob[: len(blob) + cut]
    with pytest.raises(PackageError) as err:
        unpack(data, source="m.rkfm")
    msg = str(err.value)
    assert msg.startswith("m.rkfm: ")
    assert "truncated" in msg or "not an rkfarm" in msg or "checksum" in msg


def test_payload_bit_flip_is_detected() -> None:
    _, blob = pack(_header(), PAYLOAD)
    tampered = bytearray(blob)
    tampered[-100] ^= 0x01
    with pytest.raises(PackageError, match="sha256 does not match"):
        unpack(bytes(tampered), source="m.rkfm")


def test_header_corruption_is_detected() -> None:
    _, blob = pack(_header(), PAYLOAD)
    tampered = bytearray(blob)
    tampered[24] ^= 0xFF
    with pytest.raises(PackageError, match="header checksum mismatch"):
        unpack(bytes(tampered))


def test_trailing_bytes_are_refused() -> None:
    _, blob = pack(_header(), PAYLOAD)
    with pytest.raises(PackageError, match="unexpected bytes after the payload"):
        unpack(blob + b"x")


def test_future_version_says_upgrade() -> None:
    _, blob = pack(_header(), PAYLOAD)
    newer = blob[:8] + struct.pack("<I", FORMAT_VERSION + 1) + blob[12:]
    with pytest.raises(PackageError, match="upgrade rkfarm"):
        unpack(newer)


def test_wrong_magic() -> None:
    with pytest.raises(ForeignFormatError, match="not an rkfarm model package"):
        unpack(b"GIF89a" + b"\0" * 64, source="pic.gif")


def test_vendor_rknn_is_recognised() -> None:
    fake = b"RKNN" + b"\0" * 4 + struct.pack("<Q", 6) + struct.pack("<Q", 10) + b"\0" * 40
    assert detect_format(fake) == "rknn"
    with pytest.raises(ForeignFormatError, match="vendor runtime librknnrt") as err:
        unpack(fake, source="yolo.rknn")
    assert err.value.kind == "rknn"
    assert "format v6" in str(err.value)


def test_onnx_is_recognised(cls_onnx: Path) -> None:
    with pytest.raises(ForeignFormatError, match="load_onnx"):
        read_package(cls_onnx)


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="no such file"):
        read_package(tmp_path / "absent.rkfm")
    with pytest.raises(PackageError, match="is a directory"):
        read_package(tmp_path)


def test_implausible_header_length() -> None:
    blob = MAGIC + struct.pack("<III", FORMAT_VERSION, 2**31, zlib.crc32(b""))
    with pytest.raises(PackageError, match="implausible"):
        unpack(blob)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(data: bytes) -> None:
    """Whatever the bytes, the reader either decodes or raises PackageError: never anything else."""
    with contextlib.suppress(PackageError):
        unpack(data)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2000), st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_is_caught(position: int, value: int) -> None:
    _, blob = pack(_header(), PAYLOAD[:1000])
    position %= len(blob)
    if blob[position] == value:
        return
    changed = bytearray(blob)
    changed[position] = value
    with pytest.raises(PackageError):
        unpack(bytes(changed))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=8))
def test_stream_verifier_accepts_any_chunking(cuts: list[int]) -> None:
    full, blob = pack(_header(), PAYLOAD)
    verifier = StreamVerifier("s")
    start = 0
    for cut in [*sorted(set(cuts)), len(blob)]:
        verifier.feed(blob[start:cut])
        start = max(start, cut)
    assert verifier.finish() == full


@pytest.mark.parametrize("damage", ["truncate", "flip", "extra", "magic"])
def test_stream_verifier_refuses_damage(damage: str) -> None:
    _, blob = pack(_header(), PAYLOAD)
    verifier = StreamVerifier("s")
    with pytest.raises(PackageError):
        if damage == "truncate":
            verifier.feed(blob[:-10])
        elif damage == "flip":
            verifier.feed(blob[:-10] + bytes([blob[-10] ^ 1]) + blob[-9:])
        elif damage == "extra":
            verifier.feed(blob + b"!")
        else:
            verifier.feed(b"GIF89a" + blob[6:])
        verifier.finish()
