"""The agent's model store: content-addressed package files, size-capped with LRU eviction.

Layout under the store folder::

    models/<sha256>.rkfm    complete, verified packages (the only ones ever loaded)
    partial/<sha256>.part   an interrupted upload, kept so the host can resume it; never loaded
    quarantine/             files that failed verification at start-up, kept for a post-mortem

An upload is written to ``partial/``, hashed as it arrives, checked as a package, then renamed into ``models/``
in one step: a crash or a cut connection never leaves a half-written model where Load can see it. At start-up
every model is re-hashed; one that does not match its name is moved to ``quarantine/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rkfarm_agent.errors import (
    StoreError,
    UnknownModelError,
    UploadConflictError,
    UploadCorruptError,
    UploadTooLargeError,
)
from rkfarm_proto.errors import PackageError
from rkfarm_proto.package import ModelPackage, StreamVerifier, unpack

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_PARTIALS = 8


def check_sha256(sha: str) -> str:
    """A valid lower-case hex sha256 (also the only file names the store ever builds)."""
    if not _SHA256.match(sha):
        raise UnknownModelError(f"{sha[:80]!r} is not a sha256 (64 lower-case hex digits)")
    return sha


@dataclass(frozen=True)
class ModelStatus:
    present: bool
    size_bytes: int
    partial_bytes: int


class Upload:
    """One in-progress upload: write chunks, then commit (verify + publish) or abort (keep the partial)."""

    def __init__(self, store: ModelStore, sha: str, total: int, offset: int) -> None:
        self._store = store
        self.sha = sha
        self.total = total
        self.path = store.partial_dir / f"{sha}.part"
        self._hash = hashlib.sha256()
        self._verifier = StreamVerifier(f"upload {sha[:12]}")
        self.received = 0
        if offset:
            existing = self.path.stat().st_size if self.path.exists() else 0
            if existing != offset:
                raise UploadConflictError(
                    f"cannot resume at byte {offset}: the agent holds {existing} bytes of this upload"
                )
            try:
                with self.path.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        self._hash.update(block)
                        self._verifier.feed(block)
            except PackageError:
                self.path.unlink(missing_ok=True)
                raise UploadConflictError(
                    "the kept part of this upload is damaged and was discarded; start again from byte 0"
                ) from None
            self._fh = self.path.open("ab")
        else:
            self._fh = self.path.open("wb")
        self.written = offset

    def write(self, data: bytes) -> None:
        if self.written + len(data) > self.total:
            raise UploadCorruptError(f"upload sends more than the announced {self.total} bytes; nothing was stored")
        try:
            self._verifier.feed(data)
        except PackageError as exc:
            self._discard()
            raise StoreError(f"not a valid model package: {exc}") from None
        self._fh.write(data)
        self._hash.update(data)
        self.written += len(data)
        self.received += len(data)

    def commit(self) -> int:
        """Verify and publish; returns the size. The partial file is gone afterwards, whatever happens."""
        try:
            # No fsync: after a power cut the store is re-hashed at start-up and a damaged model is quarantined,
            # so durability costs a re-upload at worst, while fsync would halve upload speed on a board's eMMC.
            self._fh.close()
            if self.written != self.total:
                raise UploadCorruptError(
                    f"upload ended at byte {self.written} of {self.total}; send the rest (resume) or start again"
                )
            if self._hash.hexdigest() != self.sha:
                self.path.unlink(missing_ok=True)
                raise UploadCorruptError("uploaded bytes do not hash to the announced sha256; nothing was stored")
            try:  # verified as it streamed in: a package that does not check out never enters the store
                self._verifier.finish()
            except PackageError as exc:
                self.path.unlink(missing_ok=True)
                raise StoreError(f"not a valid model package: {exc}") from None
            return self._store._publish(self)
        finally:
            self._store._end_upload(self.sha)

    def _discard(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)

    def abort(self) -> None:
        """Stop; keep what arrived so the host can resume."""
        try:
            self._fh.close()
        finally:
            self._store._end_upload(self.sha)


class ModelStore:
    def __init__(self, root: Path, capacity_bytes: int, max_upload_bytes: int) -> None:
        self.root = root
        self.models_dir = root / "models"
        self.partial_dir = root / "partial"
        self.quarantine_dir = root / "quarantine"
        for d in (self.models_dir, self.partial_dir, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.capacity_bytes = capacity_bytes
        self.max_upload_bytes = max_upload_bytes
        self._lock = threading.Lock()
        self._uploading: set[str] = set()
        self._pins: dict[str, int] = {}

    # -- start-up ----------------------------------------------------------------------------------------
    def verify(self) -> tuple[int, int]:
        """Re-hash every model; quarantine mismatches and stray files. Returns (kept, quarantined)."""
        kept = quarantined = 0
        for path in sorted(self.models_dir.iterdir()):
            sha = path.name.removesuffix(".rkfm")
            ok = path.suffix == ".rkfm" and bool(_SHA256.match(sha)) and _file_sha256(path) == sha
            if ok:
                try:
                    unpack(path.read_bytes(), source=path.name)
                except PackageError:
                    ok = False
            if ok:
                kept += 1
                continue
            quarantined += 1
            target = self.quarantine_dir / f"{path.name}.{int(time.time())}"
            log.warning("store: %s failed verification; moved to %s", path.name, target)
            os.replace(path, target)
        for path in self.partial_dir.iterdir():
            if not (path.suffix == ".part" and _SHA256.match(path.stem)):
                path.unlink(missing_ok=True)
        self._trim_partials()
        return kept, quarantined

    # -- queries -----------------------------------------------------------------------------------------
    def model_path(self, sha: str) -> Path:
        return self.models_dir / f"{check_sha256(sha)}.rkfm"

    def status(self, sha: str) -> ModelStatus:
        path = self.model_path(sha)
        for _ in range(2):  # a file can move between two looks (an upload publishing, an eviction): look again
            try:
                return ModelStatus(True, path.stat().st_size, 0)
            except FileNotFoundError:
                pass
            try:
                return ModelStatus(False, 0, (self.partial_dir / f"{sha}.part").stat().st_size)
            except FileNotFoundError:
                if not path.exists():
                    return ModelStatus(False, 0, 0)
        return ModelStatus(path.exists(), 0, 0)

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.models_dir.glob("*.rkfm"))

    def load(self, sha: str) -> ModelPackage:
        """Read and verify a stored package, and mark it recently used."""
        path = self.model_path(sha)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UnknownModelError(f"model {sha[:12]}… is not on this agent: upload it first") from None
        if hashlib.sha256(data).hexdigest() != sha:
            self.quarantine(sha, "corrupt on disk")
            raise StoreError(f"stored model {sha[:12]}… was corrupt on disk and has been removed; upload it again")
        os.utime(path)  # LRU clock
        # The file hash above covers every byte, payload included: no need to hash the payload a second time.
        return unpack(data, source=f"model {sha[:12]}", verify_payload=False)

    def quarantine(self, sha: str, why: str) -> None:
        """Move a model out of the store (kept aside for a post-mortem) so it can never be loaded again."""
        path = self.model_path(sha)
        target = self.quarantine_dir / f"{path.name}.{int(time.time())}"
        with self._lock:
            if path.exists():
                os.replace(path, target)
        log.warning("store: model %s %s; moved to %s", sha[:12], why, target)

    # -- uploads -----------------------------------------------------------------------------------------
    def begin_upload(self, sha: str, total: int, offset: int) -> Upload | None:
        """An upload to write to, or None when the model is already stored (a concurrent upload of it may
        have finished between the caller's status check and now: the check is repeated under the lock)."""
        check_sha256(sha)
        if total > self.max_upload_bytes:
            raise UploadTooLargeError(
                f"upload of {total} bytes is over this agent's limit of {self.max_upload_bytes} bytes "
                "(rkfarm-agent serve --max-upload-bytes)"
            )
        if total > self.capacity_bytes:
            raise UploadTooLargeError(
                f"model of {total} bytes does not fit the store capacity of {self.capacity_bytes} bytes"
            )
        if offset > total:
            raise UploadConflictError(f"resume offset {offset} is past the model size {total}")
        with self._lock:
            if sha in self._uploading:
                raise UploadConflictError("another upload of this model is in progress; retry when it ends")
            if self.model_path(sha).exists():
                return None
            self._uploading.add(sha)
        try:
            if offset == 0:
                self._trim_partials(keep=MAX_PARTIALS - 1)
            return Upload(self, sha, total, offset)
        except BaseException:
            self._end_upload(sha)
            raise

    def _end_upload(self, sha: str) -> None:
        with self._lock:
            self._uploading.discard(sha)

    def _publish(self, upload: Upload) -> int:
        with self._lock:
            self._evict_for(upload.total)
            os.replace(upload.path, self.model_path(upload.sha))
        log.info("store: added model %s (%d bytes)", upload.sha[:12], upload.total)
        return upload.total

    def _evict_for(self, incoming: int) -> None:
        """Delete least-recently-used, unpinned models until ``incoming`` more bytes fit. Caller holds the lock."""
        models = sorted(self.models_dir.glob("*.rkfm"), key=lambda p: p.stat().st_mtime)
        used = sum(p.stat().st_size for p in models)
        for path in models:
            if used + incoming <= self.capacity_bytes:
                break
            sha = path.stem
            if self._pins.get(sha):
                continue
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            used -= size
            log.info("store: evicted model %s (%d bytes, least recently used)", sha[:12], size)
        if used + incoming > self.capacity_bytes:
            raise UploadTooLargeError(
                f"store is full: {used} of {self.capacity_bytes} bytes held by models in use; unload sessions first"
            )

    def _trim_partials(self, keep: int = MAX_PARTIALS) -> None:
        parts = sorted(self.partial_dir.glob("*.part"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in parts[keep:]:
            if path.stem not in self._uploading:
                path.unlink(missing_ok=True)

    # -- pins: models in use are never evicted -----------------------------------------------------------
    def pin(self, sha: str) -> None:
        with self._lock:
            self._pins[sha] = self._pins.get(sha, 0) + 1

    def unpin(self, sha: str) -> None:
        with self._lock:
            count = self._pins.get(sha, 0) - 1
            if count > 0:
                self._pins[sha] = count
            else:
                self._pins.pop(sha, None)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
