"""The rkfarm model package: one file holding a protobuf header and a payload.

Layout (integers little-endian), as documented in ``v1/package.proto``::

    magic (8) | format version (u32) | header length (u32) | header CRC-32 (u32) | header | payload

The extension is ``.rkfm`` ("rkfarm model"). It is deliberately not ``.rknn``: a vendor ``.rknn`` file is a
different, closed format that only librknnrt runs, and tools should never confuse the two. Readers identify a
file by its magic, never by its name, so a vendor script that exports to ``model.rknn`` still works.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from rkfarm_proto.errors import ForeignFormatError, PackageError
from rkfarm_proto.v1 import package_pb2

MAGIC = b"\x89RKF\r\n\x1a\n"
FORMAT_VERSION = 1
FILE_EXTENSION = ".rkfm"
MAX_HEADER_BYTES = 16 * 1024 * 1024
_PREFIX = struct.Struct("<8sIII")

PackageHeader = package_pb2.PackageHeader

VENDOR_RKNN_MAGIC = b"RKNN"
VENDOR_RKNN_CRYPT_MAGIC = b"CYPTRKNN"


@dataclass(frozen=True)
class ModelPackage:
    """A decoded package. ``payload`` is the stored bytes (ciphertext if ``header.encryption.algorithm``)."""

    header: package_pb2.PackageHeader
    payload: bytes

    @property
    def encrypted(self) -> bool:
        return bool(self.header.encryption.algorithm)


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def detect_format(prefix: bytes) -> str:
    """Name the format of a model file from its first bytes.

    Returns ``rkfm`` (this package), ``rknn`` (vendor RKNN-Toolkit2 model), ``rknn-encrypted`` (vendor
    encrypted), ``onnx`` (a protobuf that starts like an ONNX ModelProto) or ``unknown``.
    """
    if prefix.startswith(MAGIC):
        return "rkfm"
    if prefix.startswith(VENDOR_RKNN_CRYPT_MAGIC):
        return "rknn-encrypted"
    if prefix.startswith(VENDOR_RKNN_MAGIC):
        return "rknn"
    # ONNX ModelProto: field 1 (ir_version, varint) almost always comes first, with a small value.
    if len(prefix) >= 2 and prefix[0] == 0x08 and 0 < prefix[1] < 0x20:
        return "onnx"
    return "unknown"


def vendor_rknn_version(data: bytes) -> int | None:
    """The file-format version stored in a vendor .rknn header (u64 at offset 8), if readable."""
    if len(data) < 16 or not data.startswith(VENDOR_RKNN_MAGIC):
        return None
    return int(struct.unpack_from("<Q", data, 8)[0])


def _foreign(source: str, kind: str, data: bytes) -> ForeignFormatError:
    if kind == "rknn":
        version = vendor_rknn_version(data)
        ver = f" (RKNN file format v{version})" if version is not None else ""
        return ForeignFormatError(
            f"{source}: this is a vendor RKNN-Toolkit2 model{ver}, not an rkfarm package. It runs only on the "
            "vendor runtime librknnrt: use load_rknn() and init_runtime(target=..., device_id=...) on a board "
            "agent with the rknnrt backend; the simulator cannot run it.",
            kind,
        )
    if kind == "rknn-encrypted":
        return ForeignFormatError(
            f"{source}: this is a vendor-encrypted RKNN model; only the vendor runtime on a board can open it.",
            kind,
        )
    if kind == "onnx":
        return ForeignFormatError(
            f"{source}: this looks like an ONNX model, not an rkfarm package: load it with load_onnx() "
            "(or `rkfarm build`) first.",
            kind,
        )
    return ForeignFormatError(f"{source}: not an rkfarm model package (unrecognised magic {data[:8]!r})", kind)


def pack(header: package_pb2.PackageHeader, payload: bytes) -> tuple[package_pb2.PackageHeader, bytes]:
    """Serialize a package. Returns the completed header (size, hash, version filled in) and the file bytes."""
    full = package_pb2.PackageHeader()
    full.CopyFrom(header)
    full.format_version = FORMAT_VERSION
    full.payload_size = len(payload)
    full.payload_sha256 = sha256_hex(payload)
    head = full.SerializeToString(deterministic=True)
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head), zlib.crc32(head))
    return full, b"".join((prefix, head, payload))


def unpack(data: bytes, source: str = "<bytes>", verify_payload: bool = True) -> ModelPackage:
    """Decode and check a package. Every problem raises PackageError naming ``source`` and the problem."""
    header = unpack_header(data, source)
    head_end = _PREFIX.size + _PREFIX.unpack_from(data, 0)[2]
    expected_end = head_end + header.payload_size
    if len(data) < expected_end:
        raise PackageError(
            f"{source}: truncated: payload needs {header.payload_size} bytes, "
            f"{len(data) - head_end} present (file is {len(data)} of {expected_end} bytes)"
        )
    if len(data) > expected_end:
        raise PackageError(f"{source}: {len(data) - expected_end} unexpected bytes after the payload")
    payload = bytes(data[head_end:expected_end])
    if verify_payload and sha256_hex(payload) != header.payload_sha256:
        raise PackageError(f"{source}: payload sha256 does not match the header; the file was altered or corrupted")
    return ModelPackage(header=header, payload=payload)


def unpack_header(data: bytes, source: str = "<bytes>") -> package_pb2.PackageHeader:
    """Check the prefix and decode the header (``data`` must hold at least prefix + header)."""
    if len(data) < _PREFIX.size:
        kind = detect_format(data)
        if kind != "rkfm":
            raise _foreign(source, kind, data)
        raise PackageError(f"{source}: truncated: {len(data)} bytes is shorter than the {_PREFIX.size}-byte prefix")
    magic, version, head_len, head_crc = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise _foreign(source, detect_format(data[:16]), data[:16])
    if version == 0 or version > FORMAT_VERSION:
        raise PackageError(
            f"{source}: package format version {version} is not supported (this rkfarm reads version "
            f"{FORMAT_VERSION}); {'upgrade rkfarm' if version > FORMAT_VERSION else 'the file is corrupt'}"
        )
    if head_len > MAX_HEADER_BYTES:
        raise PackageError(f"{source}: header length {head_len} is implausible; the file is corrupt")
    head_end = _PREFIX.size + head_len
    if len(data) < head_end:
        raise PackageError(f"{source}: truncated inside the header ({len(data)} of at least {head_end} bytes)")
    head = bytes(data[_PREFIX.size : head_end])
    if zlib.crc32(head) != head_crc:
        raise PackageError(f"{source}: header checksum mismatch; the file is corrupt")
    header = package_pb2.PackageHeader()
    try:
        header.ParseFromString(head)
    except DecodeError as exc:
        raise PackageError(f"{source}: header does not decode ({exc}); the file is corrupt") from None
    return header


class StreamVerifier:
    """Checks a package as its bytes arrive (prefix, header CRC and fields, payload size and sha256),
    so a receiver never has to read a large file back to verify it."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._buffer = bytearray()  # prefix + header, until parsed
        self._header: package_pb2.PackageHeader | None = None
        self._payload_hash = hashlib.sha256()
        self._payload_seen = 0

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if self._header is None:
            self._buffer += view
            view = self._try_header()
        if self._header is not None and len(view):
            self._payload_seen += len(view)
            if self._payload_seen > self._header.payload_size:
                raise PackageError(f"{self._source}: unexpected bytes after the payload")
            self._payload_hash.update(view)

    def _try_header(self) -> memoryview:
        if len(self._buffer) < _PREFIX.size:
            return memoryview(b"")
        _, _, head_len, _ = _PREFIX.unpack_from(self._buffer, 0)
        if head_len > MAX_HEADER_BYTES or len(self._buffer) < _PREFIX.size + head_len:
            if head_len > MAX_HEADER_BYTES:
                unpack(bytes(self._buffer), self._source)  # raises the right message
            return memoryview(b"")
        head_end = _PREFIX.size + head_len
        self._header = unpack_header(bytes(self._buffer[:head_end]), self._source)
        rest = memoryview(bytes(self._buffer[head_end:]))
        self._buffer = bytearray()
        return rest

    def finish(self) -> package_pb2.PackageHeader:
        """The verified header; PackageError if the stream was short, long or altered."""
        if self._header is None:
            unpack(bytes(self._buffer), self._source)  # raises: too short for its own header
            raise PackageError(f"{self._source}: truncated inside the header")
        if self._payload_seen != self._header.payload_size:
            raise PackageError(
                f"{self._source}: truncated: payload needs {self._header.payload_size} bytes, "
                f"{self._payload_seen} present"
            )
        if self._payload_hash.hexdigest() != self._header.payload_sha256:
            raise PackageError(
                f"{self._source}: payload sha256 does not match the header; the file was altered or corrupted"
            )
        return self._header


def read_package(path: str | os.PathLike[str], verify_payload: bool = True) -> ModelPackage:
    """Read and check a package file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise PackageError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise PackageError(f"{p}: is a directory, not a model package") from None
    except OSError as exc:
        raise PackageError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return unpack(data, source=str(p), verify_payload=verify_payload)


def write_package(
    path: str | os.PathLike[str], header: package_pb2.PackageHeader, payload: bytes
) -> package_pb2.PackageHeader:
    """Write a package atomically (temporary file + rename): a crash never leaves a half-written file."""
    full, blob = pack(header, payload)
    atomic_write(Path(path), blob)
    return full


def atomic_write(path: Path, blob: bytes) -> None:
    """Write bytes to ``path`` via a temporary file in the same folder, fsync, then rename over it."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise PackageError(f"{path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
