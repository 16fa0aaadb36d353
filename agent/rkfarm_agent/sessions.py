"""Sessions: a loaded model with a lease. Every call renews the lease; a reaper frees expired sessions.

A session belongs to who opened it: its ``owner`` is the caller's client certificate when the agent requires
one (mTLS), else the caller's host address. Only the owner can use, renew, unload or see the id of a session,
and the id is a 96-bit random handle; to anyone else a session does not exist (NOT_FOUND), and listings show
them only what an operator needs (model, client name, backend, age, use count).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rkfarm_agent.backends import backend_for
from rkfarm_agent.backends.base import Array, LoadedModel
from rkfarm_agent.errors import TooManySessionsError, UnknownSessionError
from rkfarm_agent.store import ModelStore
from rkfarm_proto.crypto import DecryptionError, Keyring, KeyUnavailableError
from rkfarm_proto.errors import PackageError
from rkfarm_proto.records import LoadOptions
from rkfarm_proto.tensors import to_numpy_dtype
from rkfarm_proto.v1 import package_pb2

log = logging.getLogger(__name__)


@dataclass
class Session:
    id: str
    sha: str
    header: package_pb2.PackageHeader
    model: LoadedModel
    adapter: Any  # InputAdapter, or the backend's own (rknnrt)
    backend: str
    client: str
    owner: str
    lease_s: float
    created_unix: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    last_used_unix: float = field(default_factory=time.time)
    inferences: int = 0
    last_feeds: list[Array] | None = None
    active_calls: int = 0
    hold_id: str = ""  # opened under (or, exclusive, holding) the board's exclusive hold (holds.py)

    def touch(self) -> None:
        self.last_used = time.monotonic()
        self.last_used_unix = time.time()

    def remaining_s(self, now: float | None = None) -> float:
        return self.lease_s - ((now if now is not None else time.monotonic()) - self.last_used)


class SessionManager:
    def __init__(
        self,
        store: ModelStore,
        keyring: Keyring,
        max_sessions: int,
        max_per_peer: int,
        default_lease_s: float,
        max_lease_s: float,
        max_input_bytes: int | None = None,
    ) -> None:
        self._max_input_bytes = max_input_bytes
        self._store = store
        self._keyring = keyring
        self._max = max_sessions
        self._max_per_peer = max_per_peer
        self._default_lease = default_lease_s
        self._max_lease = max_lease_s
        self._sessions: dict[str, Session] = {}
        self._reserved: Counter[str] = Counter()  # sessions being opened, per owner
        self._lock = threading.Lock()
        self.calls_started = 0  # calls that ran on a session (use()), for EvalPerf's contention count
        self.on_close: Callable[[str], None] = lambda session_id: None  # a session ended (holds.py)
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="rkfarm-session-reaper", daemon=True)
        self._reaper.start()

    def open(
        self, sha: str, options: LoadOptions, lease_s: float, client: str, owner: str, hold_id: str = ""
    ) -> Session:
        """Load ``sha`` for ``owner``. The session limits count sessions being opened too, and are checked and
        reserved under one lock, so concurrent Loads cannot pass them together."""
        with self._lock:
            if len(self._sessions) + self._reserved.total() >= self._max:
                raise TooManySessionsError(
                    f"the agent already holds {self._max} sessions (rkfarm-agent serve --max-sessions); "
                    "unload one or wait for idle leases to expire"
                )
            mine = sum(1 for s in self._sessions.values() if s.owner == owner) + self._reserved[owner]
            if mine >= self._max_per_peer:
                raise TooManySessionsError(
                    f"this client already holds {mine} sessions (the per-client limit, "
                    "rkfarm-agent serve --max-sessions-per-client)"
                )
            self._reserved[owner] += 1
        try:
            package = self._store.load(sha)
            if self._max_input_bytes is not None:
                check_input_sizes(package.header, self._max_input_bytes)
            backend = backend_for(package.header.payload_kind, serving=True)
            try:  # the plaintext of an encrypted model lives in memory only, never on disk
                payload = self._keyring.decrypt(package)
            except KeyUnavailableError:
                raise
            except DecryptionError:
                self._store.quarantine(sha, "does not decrypt")
                raise
            model = backend.load(package.header, payload, options)
            del payload
            header = described_header(package.header, model)
            lease = min(self._max_lease, lease_s if lease_s > 0 else self._default_lease)
            session = Session(
                id=secrets.token_hex(12),
                sha=sha,
                header=header,
                model=model,
                adapter=model.make_adapter(header),
                backend=backend.name,
                client=client,
                owner=owner,
                lease_s=lease,
                hold_id=hold_id,
            )
            self._store.pin(sha)
            with self._lock:
                self._sessions[session.id] = session
        finally:
            with self._lock:
                self._reserved[owner] -= 1
                if self._reserved[owner] <= 0:
                    del self._reserved[owner]
        log.info(
            "session %s opened: model %s, %s, lease %.0f s, client %s",
            session.id[:8], sha[:12], backend.name, lease, client,
        )  # fmt: skip
        return session

    def get(self, session_id: str, owner: str) -> Session:
        """The live session of ``owner``; renews its lease."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or not hmac.compare_digest(session.owner, owner):
                raise UnknownSessionError(
                    f"no session {session_id[:40]!r} on this agent (never opened, unloaded, or its lease expired); "
                    "call Load again"
                )
            session.touch()
            return session

    @contextmanager
    def use(self, session_id: str, owner: str) -> Iterator[Session]:
        """The session for one call: renewed now and again at the end; never expired while in use."""
        session = self.get(session_id, owner)
        with self._lock:
            session.active_calls += 1
            self.calls_started += 1
        try:
            yield session
        finally:
            with self._lock:
                session.active_calls -= 1
                session.touch()

    def close(self, session_id: str, owner: str) -> None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and hmac.compare_digest(session.owner, owner):
                del self._sessions[session_id]
            else:
                session = None
        if session is None:
            raise UnknownSessionError(f"no session {session_id[:40]!r} on this agent")
        self._release(session, "unloaded")

    def snapshot(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def busy_outside(self, hold_id: str, except_session: str = "") -> int:
        """Calls running now on sessions not under the hold ``hold_id`` (and not ``except_session``)."""
        with self._lock:
            return sum(
                s.active_calls
                for s in self._sessions.values()
                if s.id != except_session and not (hold_id and s.hold_id == hold_id)
            )

    def expire(self, now: float | None = None) -> list[str]:
        """Free sessions whose lease ran out and that are not in a call. Returns their ids."""
        now = time.monotonic() if now is None else now
        with self._lock:
            dead = [s for s in self._sessions.values() if s.remaining_s(now) <= 0 and s.active_calls == 0]
            for s in dead:
                del self._sessions[s.id]
        for s in dead:
            self._release(s, "lease expired")
        return [s.id for s in dead]

    def close_all(self) -> None:
        self._stop.set()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            self._release(s, "agent stopping")

    def _release(self, session: Session, why: str) -> None:
        try:
            session.model.close()
        finally:
            self._store.unpin(session.sha)
            self.on_close(session.id)
        log.info("session %s closed: %s", session.id[:8], why)

    def _reap_loop(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.expire()
            except Exception:  # the reaper must never die
                log.exception("session reaper failed")


def described_header(header: package_pb2.PackageHeader, model: LoadedModel) -> package_pb2.PackageHeader:
    """A copy of a package's header for its opened ``model``: a vendor .rknn's header names no inputs or outputs
    (the runtime knows them, the header does not), so they are filled in from the runtime."""
    described = package_pb2.PackageHeader()
    described.CopyFrom(header)
    io = model.describe_io() if not described.inputs else None
    if io is not None:
        described.inputs.extend(io[0])
        described.outputs.extend(io[1])
    return described


def check_input_sizes(header: package_pb2.PackageHeader, max_bytes: int) -> None:
    """Refuse a header whose inputs could not travel in one message (``max_bytes``): every input the agent
    allocates for a model (eval_perf's zeros) is bounded by what a client could send, decided before any
    allocation."""
    for spec in header.inputs:
        tensor = spec.tensor
        count = 1
        for dim in tensor.shape:
            count *= max(1, int(dim))
        size = count * to_numpy_dtype(tensor.dtype).itemsize
        if size > max_bytes:
            raise PackageError(
                f"input {tensor.name[:64]!r} of shape {list(tensor.shape)[:8]} takes {size} bytes, more than one "
                f"message may carry ({max_bytes} bytes, rkfarm-agent serve --max-message): refused"
            )
    for index, shape_set in enumerate(header.shape_sets):  # dynamic_input: eval_perf's zeros take the largest
        for spec, shape in zip(header.inputs, shape_set.inputs):
            size = to_numpy_dtype(spec.tensor.dtype).itemsize
            for dim in shape.dims:
                size *= max(1, int(dim))
            if size > max_bytes:
                raise PackageError(
                    f"shape set {index}: input {spec.tensor.name[:64]!r} of shape {list(shape.dims)[:8]} takes "
                    f"{size} bytes, more than one message may carry ({max_bytes} bytes): refused"
                )
