"""The encryption envelope of a model package: how a payload is encrypted and who can open it.

A random 256-bit content key encrypts the payload with an AEAD (AES-256-GCM by default, or
ChaCha20-Poly1305) in segments; the content key is then wrapped once per recipient:

* ``farm:<key id>`` — a farm key (a 256-bit secret file provisioned to the host and to agents). The
  key-encryption key is derived from it with the level's KDF and a per-package salt.
* ``agent:<fingerprint>`` — one agent's X25519 identity key (sealing: only that board can open the model).
  The key-encryption key comes from an ephemeral X25519 exchange and HKDF.

Every AEAD call authenticates a digest of the header (inputs, outputs, encryption parameters, ...), the
segment index and a final-segment flag, so a swapped header, reordered, dropped or truncated segments, or a
single flipped bit all fail to decrypt. The header never holds a key. Levels trade load time for strength:

=====  ==========================  =====================  ==============================================
level  farm-key KDF                segments               use
=====  ==========================  =====================  ==============================================
1      HKDF-SHA256                 one                    fastest load; the farm key is a random secret
2      scrypt n=2^15 r=8 (32 MiB)  1 MiB, own key each    slows guessing a weak key; limits data per key
3      scrypt n=2^17 r=8 (128 MiB) 64 KiB, own key each   strongest; needs >= 256 MB RAM on the board
=====  ==========================  =====================  ==============================================
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from rkfarm_proto.errors import PackageError, RkfarmError
from rkfarm_proto.package import ModelPackage, pack
from rkfarm_proto.v1 import package_pb2

ALGORITHMS = ("AES-256-GCM", "ChaCha20-Poly1305")
FARM_KEY_PREFIX = "rkfarm-farm-key-v1:"
KEY_BYTES = 32
TAG_BYTES = 16


class DecryptionError(PackageError):
    """An encrypted payload does not decrypt: altered, truncated, or encrypted under another key."""


class KeyUnavailableError(DecryptionError):
    """None of the package's recipients is a key this side holds."""


class KeyFileError(RkfarmError):
    """A key file is missing, malformed, or readable by other users."""


@dataclass(frozen=True)
class Level:
    kdf: str
    scrypt_log2_n: int
    segment_size: int


LEVELS: dict[int, Level] = {
    1: Level("hkdf-sha256", 0, 0),
    2: Level("scrypt", 15, 1 << 20),
    3: Level("scrypt", 17, 64 << 10),
}
# The envelope's parameters come from the package, before anything authenticates them, so the cost of opening
# one is bounded here, not chosen by its sender: scrypt takes 128 * r * 2^n bytes (r = 8), and a side runs at
# most MAX_CONCURRENT_KDF derivations at once.
SCRYPT_R = 8
MAX_SCRYPT_LOG2_N = max(level.scrypt_log2_n for level in LEVELS.values())
MAX_CONCURRENT_KDF = 1


def scrypt_bytes(log2_n: int) -> int:
    """Memory one scrypt derivation at cost 2^log2_n takes."""
    return 128 * SCRYPT_R * (1 << log2_n)


# -- keys --------------------------------------------------------------------------------------------------
def key_id(secret: bytes) -> str:
    """A public fingerprint of a farm key (safe to log and advertise; reveals nothing usable)."""
    return hashlib.sha256(b"rkfarm farm key id\0" + secret).hexdigest()[:16]


def public_fingerprint(public_key: bytes) -> str:
    return hashlib.sha256(b"rkfarm agent key\0" + public_key).hexdigest()[:16]


def new_farm_key() -> str:
    """The text of a new farm key file."""
    return FARM_KEY_PREFIX + base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n"


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: key file is accessible to other users (mode {oct(mode & 0o777)}); chmod 600 it")


def read_farm_key(path: str | os.PathLike[str]) -> bytes:
    """A farm key from its file (refused if group/world accessible). The error never shows the content."""
    p = Path(path)
    try:
        _check_private(p)
        text = p.read_text().strip()
    except FileNotFoundError:
        raise KeyFileError(f"{p}: no such key file (make one with `rkfarm keygen`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{p}: cannot read key file ({type(exc).__name__})") from None
    if not text.startswith(FARM_KEY_PREFIX):
        raise KeyFileError(f"{p}: not an rkfarm farm key file (make one with `rkfarm keygen`)")
    try:
        secret = base64.b64decode(text[len(FARM_KEY_PREFIX) :], validate=True)
    except ValueError:
        raise KeyFileError(f"{p}: farm key file is damaged (not base64)") from None
    if len(secret) != KEY_BYTES:
        raise KeyFileError(f"{p}: farm key file is damaged (wrong length)")
    return secret


def write_private(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only (0600), refusing to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def load_or_create_identity(path: Path) -> X25519PrivateKey:
    """An agent's X25519 identity key, kept (0600) in its store so sealed models survive restarts."""
    if path.exists():
        _check_private(path)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, X25519PrivateKey):
            raise KeyFileError(f"{path}: not an X25519 identity key")
        return key
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(path, pem)
    return key


def raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# -- the envelope ------------------------------------------------------------------------------------------
def header_digest(header: package_pb2.PackageHeader) -> bytes:
    """What every AEAD call authenticates: the header without payload size/hash and wrapped keys."""
    h = package_pb2.PackageHeader()
    h.CopyFrom(header)
    h.ClearField("payload_size")
    h.ClearField("payload_sha256")
    del h.encryption.keys[:]
    return hashlib.sha256(h.SerializeToString(deterministic=True)).digest()


def _aead(algorithm: str, key: bytes) -> AESGCM | ChaCha20Poly1305:
    if algorithm == "AES-256-GCM":
        return AESGCM(key)
    if algorithm == "ChaCha20-Poly1305":
        return ChaCha20Poly1305(key)
    raise DecryptionError(f"unknown encryption algorithm {algorithm!r}")


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(secret)


def check_envelope(enc: package_pb2.Encryption, max_scrypt_log2_n: int = MAX_SCRYPT_LOG2_N) -> Level:
    """The level an envelope declares, if its KDF and segments are exactly that level's and its cost is within
    ``max_scrypt_log2_n``; DecryptionError (before any work is done) otherwise."""
    level = LEVELS.get(int(enc.crypt_level))
    if level is None:
        raise DecryptionError(f"unknown encryption level {enc.crypt_level} (known: {sorted(LEVELS)})")
    declared = (enc.kdf, int(enc.scrypt_log2_n), int(enc.segment_size))
    if declared != (level.kdf, level.scrypt_log2_n, level.segment_size):
        raise DecryptionError(
            f"the envelope's parameters (kdf {enc.kdf!r}, cost 2^{enc.scrypt_log2_n}, segments of "
            f"{enc.segment_size} bytes) are not those of level {enc.crypt_level}: altered or not made by rkfarm"
        )
    if level.kdf == "scrypt" and level.scrypt_log2_n > max_scrypt_log2_n:
        raise DecryptionError(
            f"level {enc.crypt_level} needs scrypt at 2^{level.scrypt_log2_n} "
            f"({scrypt_bytes(level.scrypt_log2_n) >> 20} MiB); this side allows at most 2^{max_scrypt_log2_n}"
        )
    return level


_kdf_slots = threading.BoundedSemaphore(MAX_CONCURRENT_KDF)


def _farm_kek(secret: bytes, enc: package_pb2.Encryption) -> bytes:
    if enc.kdf == "hkdf-sha256":
        return _hkdf(secret, enc.salt, b"rkfarm farm kek v1")
    if enc.kdf == "scrypt":
        with _kdf_slots:
            return Scrypt(salt=enc.salt, length=KEY_BYTES, n=1 << enc.scrypt_log2_n, r=SCRYPT_R, p=1).derive(secret)
    raise DecryptionError(f"unknown key derivation {enc.kdf!r}")


def _segment_key(content_key: bytes, index: int, enc: package_pb2.Encryption) -> bytes:
    if enc.crypt_level <= 1:
        return content_key
    return _hkdf(content_key, enc.salt, b"rkfarm segment" + struct.pack(">Q", index))


def _segments(size: int, segment_size: int) -> list[tuple[int, int]]:
    if segment_size <= 0 or size == 0:
        return [(0, size)]
    return [(start, min(size, start + segment_size)) for start in range(0, size, segment_size)]


def _nonce(index: int) -> bytes:
    return struct.pack(">Q", index) + b"\0\0\0\0"


def _segment_aad(digest: bytes, index: int, last: bool) -> bytes:
    return digest + struct.pack(">QB", index, int(last))


def encrypt_package(
    package: ModelPackage,
    level: int,
    farm_key: bytes | None = None,
    agent_public_keys: Sequence[bytes] = (),
    algorithm: str = "AES-256-GCM",
) -> ModelPackage:
    """Encrypt a plain package for a farm key and/or agents' public keys."""
    if package.header.encryption.algorithm:
        raise PackageError("the package is already encrypted")
    if level not in LEVELS:
        raise PackageError(f"crypt_level must be 1, 2 or 3, got {level}")
    if algorithm not in ALGORITHMS:
        raise PackageError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    if farm_key is None and not agent_public_keys:
        raise PackageError("nobody could open this model: give a farm key or at least one agent public key")
    spec = LEVELS[level]
    header = package_pb2.PackageHeader()
    header.CopyFrom(package.header)
    enc = header.encryption
    enc.algorithm = algorithm
    enc.crypt_level = level
    enc.kdf = spec.kdf
    enc.salt = os.urandom(16)
    enc.scrypt_log2_n = spec.scrypt_log2_n
    enc.segment_size = spec.segment_size
    enc.plaintext_size = len(package.payload)
    digest = header_digest(header)

    content_key = os.urandom(KEY_BYTES)
    plaintext = memoryview(package.payload)
    spans = _segments(len(plaintext), spec.segment_size)
    parts = []
    for index, (start, end) in enumerate(spans):
        aead = _aead(algorithm, _segment_key(content_key, index, enc))
        parts.append(
            aead.encrypt(
                _nonce(index), bytes(plaintext[start:end]), _segment_aad(digest, index, index == len(spans) - 1)
            )
        )
    ciphertext = b"".join(parts)

    if farm_key is not None:
        kek = _farm_kek(farm_key, enc)
        nonce = os.urandom(12)
        enc.keys.add(
            recipient=f"farm:{key_id(farm_key)}",
            nonce=nonce,
            wrapped_key=_aead(algorithm, kek).encrypt(nonce, content_key, digest),
        )
    for public in agent_public_keys:
        ephemeral = X25519PrivateKey.generate()
        eph_public = raw_public(ephemeral)
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public))
        kek = _hkdf(shared, eph_public + public, b"rkfarm agent seal v1")
        nonce = os.urandom(12)
        enc.keys.add(
            recipient=f"agent:{public_fingerprint(public)}",
            ephemeral_public=eph_public,
            nonce=nonce,
            wrapped_key=_aead(algorithm, kek).encrypt(nonce, content_key, digest),
        )
    full, _ = pack(header, ciphertext)
    return ModelPackage(header=full, payload=ciphertext)


class Keyring:
    """The keys one side holds: farm keys, and (on an agent) its identity key."""

    def __init__(
        self,
        farm_keys: Iterable[bytes] = (),
        identity: X25519PrivateKey | None = None,
        max_scrypt_log2_n: int = MAX_SCRYPT_LOG2_N,
    ) -> None:
        self.max_scrypt_log2_n = max_scrypt_log2_n
        self._farm = {key_id(k): k for k in farm_keys}
        self._identity = identity
        self._identity_public = raw_public(identity) if identity is not None else b""

    @property
    def farm_key_ids(self) -> list[str]:
        return sorted(self._farm)

    @property
    def public_key(self) -> bytes:
        return self._identity_public

    def describe(self) -> str:
        held = [f"farm:{k}" for k in self.farm_key_ids]
        if self._identity_public:
            held.append(f"agent:{public_fingerprint(self._identity_public)}")
        return ", ".join(held) or "no keys"

    def _content_key(self, header: package_pb2.PackageHeader, digest: bytes) -> bytes:
        enc = header.encryption
        for sealed in enc.keys:
            kind, _, ident = sealed.recipient.partition(":")
            if kind == "farm" and ident in self._farm:
                kek = _farm_kek(self._farm[ident], enc)
            elif kind == "agent" and self._identity is not None and ident == public_fingerprint(self._identity_public):
                shared = self._identity.exchange(X25519PublicKey.from_public_bytes(sealed.ephemeral_public))
                kek = _hkdf(shared, sealed.ephemeral_public + self._identity_public, b"rkfarm agent seal v1")
            else:
                continue
            try:
                return _aead(enc.algorithm, kek).decrypt(sealed.nonce, sealed.wrapped_key, digest)
            except InvalidTag:
                raise DecryptionError(
                    "the model's header or key envelope was altered (authentication failed); re-export it"
                ) from None
        wanted = ", ".join(k.recipient for k in enc.keys) or "nobody"
        raise KeyUnavailableError(
            f"the model is encrypted for {wanted}; this side holds {self.describe()} "
            "(provision the farm key, or seal the model to this agent)"
        )

    def decrypt(self, package: ModelPackage) -> bytes:
        """The plaintext payload, in memory. DecryptionError if anything does not authenticate."""
        header = package.header
        enc = header.encryption
        if not enc.algorithm:
            return package.payload
        check_envelope(enc, self.max_scrypt_log2_n)
        digest = header_digest(header)
        content_key = self._content_key(header, digest)
        spans = _segments(int(enc.plaintext_size), int(enc.segment_size))
        expected = int(enc.plaintext_size) + TAG_BYTES * len(spans)
        if len(package.payload) != expected:
            raise DecryptionError(
                f"encrypted payload is {len(package.payload)} bytes, expected {expected}: truncated or altered"
            )
        out = bytearray(int(enc.plaintext_size))
        view = memoryview(package.payload)
        offset = 0
        for index, (start, end) in enumerate(spans):
            size = end - start + TAG_BYTES
            aead = _aead(enc.algorithm, _segment_key(content_key, index, enc))
            try:
                out[start:end] = aead.decrypt(
                    _nonce(index),
                    bytes(view[offset : offset + size]),
                    _segment_aad(digest, index, index == len(spans) - 1),
                )
            except InvalidTag:
                raise DecryptionError(f"segment {index} does not authenticate: the model was altered") from None
            offset += size
        return bytes(out)
