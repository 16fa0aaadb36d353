"""The agent's model store: content-addressed package files, with every byte it writes under one size cap.

Layout under the store folder::

    models/<sha256>.rkfm    complete, verified packages (the only ones ever loaded)
    partial/<sha256>.part   an interrupted upload, kept so the host can resume it; never loaded
    quarantine/             models that failed verification or decryption, kept for a post-mortem

An upload is written to ``partial/``, hashed as it arrives, checked as a package, then renamed into ``models/``
in one step: a crash or a cut connection never leaves a half-written model where Load can see it. At start-up
every model is re-hashed; one that does not match its name is moved to ``quarantine/``.

Disk use: models, partials and quarantine all count against ``capacity_bytes`` (``used_bytes()`` is their sum).
An upload reserves its full announced size when it begins, so room is made before any byte is written; a
commit is then a rename that needs none. Room is made in this order, and one line is logged for each file:

1. quarantined files, oldest first;
2. stale partials: no write for longer than ``partial_max_age_s`` (never one whose upload is in progress);
3. unpinned models, least recently used first;
4. the remaining idle partials, oldest first (a resume then starts again from byte 0), so that cut uploads
   cannot lock a store: only pinned models and uploads in progress are never pruned.

If even all of that would not free enough, nothing is deleted and the upload is refused (UploadTooLargeError).
Stale partials are also removed at start-up, and at most ``MAX_PARTIALS`` partials are kept.

Quarantine is bounded: at most ``QUARANTINE_MAX_FILES`` files and ``QUARANTINE_SHARE`` of the capacity, one
copy per model (a model quarantined again replaces its older copy); the oldest go first, and a file larger than
the whole share is deleted instead of kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rkfarm_agent.config import PARTIAL_MAX_AGE_S
from rkfarm_agent.errors import (
    CorruptModelError,
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
QUARANTINE_MAX_FILES = 4
QUARANTINE_SHARE = 0.25  # of the store capacity


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


@dataclass(frozen=True)
class _File:
    path: Path
    size: int
    mtime: float


def _files(folder: Path, pattern: str = "*") -> list[_File]:
    """Regular files in ``folder``, oldest first; a file that vanishes while looked at is left out."""
    found = []
    for path in folder.glob(pattern):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if path.is_file():
            found.append(_File(path, st.st_size, st.st_mtime))
    return sorted(found, key=lambda f: f.mtime)


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
    def __init__(
        self, root: Path, capacity_bytes: int, max_upload_bytes: int, partial_max_age_s: float = PARTIAL_MAX_AGE_S
    ) -> None:
        self.root = root
        self.models_dir = root / "models"
        self.partial_dir = root / "partial"
        self.quarantine_dir = root / "quarantine"
        for d in (self.models_dir, self.partial_dir, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.capacity_bytes = capacity_bytes
        self.max_upload_bytes = max_upload_bytes
        self.partial_max_age_s = partial_max_age_s
        self._lock = threading.Lock()
        self._uploading: dict[str, int] = {}  # sha -> announced size: the room each upload in progress holds
        self._pins: dict[str, int] = {}

    # -- start-up ----------------------------------------------------------------------------------------
    def verify(self) -> tuple[int, int]:
        """Re-hash every model; quarantine mismatches and stray files; prune stale partials and whatever is
        over the capacity. Returns (kept, quarantined)."""
        kept = quarantined = 0
        with self._lock:
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
                self._quarantine_file(path, "failed verification at start-up")
            for path in self.partial_dir.iterdir():
                if not (path.suffix == ".part" and _SHA256.match(path.stem)):
                    path.unlink(missing_ok=True)
            for stale in self._stale_partials():
                self._prune(stale, "stale partial upload", self._idle(stale))
            self._trim_partials()
            self._trim_quarantine()
            if not self._make_room():
                log.warning("store: %d bytes on disk, over the capacity of %d", self._used(), self.capacity_bytes)
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
        """Bytes on disk: models, partial uploads and quarantine."""
        return self._used()

    def load(self, sha: str) -> ModelPackage:
        """Read and verify a stored package, and mark it recently used."""
        path = self.model_path(sha)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UnknownModelError(f"model {sha[:12]}… is not on this agent: upload it first") from None
        if hashlib.sha256(data).hexdigest() != sha:
            self.quarantine(sha, "corrupt on disk")
            raise CorruptModelError(
                f"stored model {sha[:12]}… was corrupt on disk and has been removed; upload it again"
            )
        os.utime(path)  # LRU clock
        # The file hash above covers every byte, payload included: no need to hash the payload a second time.
        return unpack(data, source=f"model {sha[:12]}", verify_payload=False)

    def quarantine(self, sha: str, why: str) -> None:
        """Move a model out of the store (kept aside for a post-mortem) so it can never be loaded again."""
        path = self.model_path(sha)
        with self._lock:
            if path.exists():
                self._quarantine_file(path, why)

    # -- uploads -----------------------------------------------------------------------------------------
    def begin_upload(self, sha: str, total: int, offset: int) -> Upload | None:
        """An upload to write to, or None when the model is already stored (a concurrent upload of it may
        have finished between the caller's status check and now: the check is repeated under the lock).
        Room for all ``total`` bytes is made (or the upload refused) before anything is written."""
        check_sha256(sha)
        if total > self.max_upload_bytes:
            raise UploadTooLargeError(
                f"upload of {total} bytes is over this agent's limit of {self.max_upload_bytes} bytes "
                "(rkfarm-agent serve --max-upload)"
            )
        if total > self.capacity_bytes:
            raise UploadTooLargeError(
                f"model of {total} bytes does not fit the store capacity of {self.capacity_bytes} bytes "
                "(rkfarm-agent serve --store-capacity)"
            )
        if offset > total:
            raise UploadConflictError(f"resume offset {offset} is past the model size {total}")
        with self._lock:
            if sha in self._uploading:
                raise UploadConflictError("another upload of this model is in progress; retry when it ends")
            if self.model_path(sha).exists():
                return None
            self._uploading[sha] = total  # from here on its partial is never pruned, and counts as `total`
            if not self._make_room():
                held = self._held()
                del self._uploading[sha]
                raise UploadTooLargeError(
                    f"store is full: no room for {total} bytes, {held} of {self.capacity_bytes} bytes are held by "
                    "models in use and uploads in progress (rkfarm-agent serve --store-capacity)"
                )
            if offset == 0:
                self._trim_partials(keep=MAX_PARTIALS - 1)
        try:
            return Upload(self, sha, total, offset)
        except BaseException:
            self._end_upload(sha)
            raise

    def _end_upload(self, sha: str) -> None:
        with self._lock:
            self._uploading.pop(sha, None)

    def _publish(self, upload: Upload) -> int:
        with self._lock:  # the room was made when the upload began: a rename adds no bytes
            os.replace(upload.path, self.model_path(upload.sha))
        log.info("store: added model %s (%d bytes)", upload.sha[:12], upload.total)
        return upload.total

    # -- disk accounting and pruning (the caller holds the lock) -----------------------------------------
    def _used(self) -> int:
        return sum(f.size for d in (self.models_dir, self.partial_dir, self.quarantine_dir) for f in _files(d))

    def _occupied(self) -> int:
        """Bytes on disk, with each upload in progress counted at its announced size (the room it holds)."""
        idle = sum(f.size for f in _files(self.partial_dir) if f.path.stem not in self._uploading)
        models = sum(f.size for d in (self.models_dir, self.quarantine_dir) for f in _files(d))
        return models + idle + sum(self._uploading.values())

    def _prunable(self) -> Iterator[tuple[_File, str]]:
        """What may go to make room, in the order it goes."""
        for f in _files(self.quarantine_dir):
            yield f, "oldest quarantined file"
        stale = self._stale_partials()
        for f in stale:
            yield f, "stale partial upload"
        for f in _files(self.models_dir, "*.rkfm"):
            if not self._pins.get(f.path.stem):
                yield f, "least recently used model"
        for f in _files(self.partial_dir):
            if f.path.stem not in self._uploading and f.path not in {g.path for g in stale}:
                yield f, "oldest idle partial upload"

    def _held(self) -> int:
        return self._occupied() - sum(f.size for f, _ in self._prunable())

    def _make_room(self) -> bool:
        """Prune until what is held fits the capacity; False (and nothing pruned) if it never would."""
        over = self._occupied() - self.capacity_bytes
        if over <= 0:
            return True
        victims = list(self._prunable())
        if sum(f.size for f, _ in victims) < over:
            return False
        for f, why in victims:
            if over <= 0:
                break
            self._prune(f, why, f"to make room ({over} bytes over the capacity)")
            over -= f.size
        return True

    def _prune(self, f: _File, why: str, detail: str) -> None:
        f.path.unlink(missing_ok=True)
        log.info("store: removed %s %s (%d bytes): %s", why, f.path.name[:24], f.size, detail)

    def _stale_partials(self) -> list[_File]:
        now = time.time()
        return [
            f
            for f in _files(self.partial_dir)
            if f.path.stem not in self._uploading and now - f.mtime > self.partial_max_age_s
        ]

    def _idle(self, f: _File) -> str:
        return f"no write for {time.time() - f.mtime:.0f} s, over the {self.partial_max_age_s:.0f} s limit"

    def _trim_partials(self, keep: int = MAX_PARTIALS) -> None:
        parts = sorted(_files(self.partial_dir, "*.part"), key=lambda f: f.mtime, reverse=True)
        for f in parts[keep:]:
            if f.path.stem not in self._uploading:
                self._prune(f, "partial upload", f"more than {keep} partials kept")

    def _trim_quarantine(self, incoming: int | None = None) -> None:
        """Drop the oldest quarantined files until they, and one more file of ``incoming`` bytes, are in bound."""
        share = int(self.capacity_bytes * QUARANTINE_SHARE)
        files = _files(self.quarantine_dir)
        held = sum(f.size for f in files)
        extra, adding = (0, 0) if incoming is None else (1, incoming)
        while files and (len(files) + extra > QUARANTINE_MAX_FILES or held + adding > share):
            f = files.pop(0)
            self._prune(f, "oldest quarantined file", f"quarantine keeps {QUARANTINE_MAX_FILES} files, {share} bytes")
            held -= f.size

    def _quarantine_file(self, path: Path, why: str) -> None:
        size = path.stat().st_size
        for old in _files(self.quarantine_dir):  # one copy per model: the newest
            if old.path.name.startswith(path.name + "."):
                self._prune(old, "older quarantined copy", f"{path.name[:12]} quarantined again")
        share = int(self.capacity_bytes * QUARANTINE_SHARE)
        if size > share:
            path.unlink(missing_ok=True)
            log.warning("store: %s %s; deleted, not kept (%d bytes > quarantine bound %d)", path.name, why, size, share)
            return
        self._trim_quarantine(size)
        target = self.quarantine_dir / f"{path.name}.{int(time.time())}"
        os.replace(path, target)
        now = time.time_ns()
        os.utime(target, ns=(now, now))  # the quarantine clock: oldest first
        log.warning("store: %s %s; moved to %s", path.name, why, target)

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
