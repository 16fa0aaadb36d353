"""The board's exclusive hold: one client times a model while everyone else's runs are refused.

A hold is taken with the Hold call (a lease, renewed by Hold again or by any call carrying its id) or by an
exclusive Load (then it lives exactly as long as that session). While it is held, calls that would put load on
the board — Upload, Load, Infer, InferStream, EvalPerf, EvalMemory — are refused with RESOURCE_EXHAUSTED
(``rkfarm-refused: held``) naming the holder and when the hold lapses, unless they carry the hold's id
(metadata ``rkfarm-hold``) or run on a session opened under it. Info, GetModel, ListSessions, KeepAlive and
Unload always answer: other clients' sessions stay open (their leases are kept) and resume afterwards.

A holder that dies stops renewing, so a lease hold lapses after its lease (15 s by default) and an exclusive
Load's after its session's lease; nobody has to clean up. Granting a hold first waits (bounded) for calls of
other clients that are still running, so the holder's first measurement starts on a quiet board.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rkfarm_agent.limits import AgentBusyError
from rkfarm_proto.errors import RkfarmError
from rkfarm_proto.transport import REFUSED_HELD

log = logging.getLogger(__name__)

DEFAULT_HOLD_LEASE_S = 15.0  # short: a holder that died frees the board soon
DRAIN_WAIT_S = 10.0  # longest wait, when a hold is granted, for other clients' running calls to end


class HeldError(AgentBusyError):
    """Another client holds the board exclusively."""

    def __init__(self, message: str) -> None:
        super().__init__(message, REFUSED_HELD)


class UnknownHoldError(RkfarmError):
    """A hold id this agent does not hold (lapsed, released, or never taken): NOT_FOUND, unknown-hold."""


@dataclass
class Hold:
    id: str
    client: str
    lease_s: float
    session_id: str = ""  # an exclusive Load's session: the hold lives as long as it does
    renewed: float = field(default_factory=time.monotonic)

    def remaining_s(self, now: float | None = None) -> float:
        if self.session_id:
            return float("inf")
        return self.lease_s - ((time.monotonic() if now is None else now) - self.renewed)

    def expires_unix(self) -> float:
        """When it lapses unless renewed (0: when its session ends)."""
        return 0.0 if self.session_id else time.time() + max(0.0, self.remaining_s())

    def describe(self) -> str:
        if self.session_id:
            return f"{self.client} holds this board exclusively for the life of its session"
        return (
            f"{self.client} holds this board exclusively until "
            f"{time.strftime('%H:%M:%S', time.localtime(self.expires_unix()))} "
            f"({max(0.0, self.remaining_s()):.0f} s left unless renewed)"
        )


class HoldManager:
    """At most one hold at a time. ``others_busy(hold)`` counts calls of other sessions still running (to drain
    them when a hold is granted); ``on_change`` is called (outside the lock) when the holder changes."""

    def __init__(
        self,
        max_lease_s: float,
        default_lease_s: float = DEFAULT_HOLD_LEASE_S,
        others_busy: Callable[[Hold], int] = lambda hold: 0,
    ) -> None:
        self._max_lease = max_lease_s
        self._default_lease = default_lease_s
        self._others_busy = others_busy
        self._hold: Hold | None = None
        self._cond = threading.Condition()
        self.on_change: Callable[[], None] = lambda: None

    # -- reading -----------------------------------------------------------------------------------------
    def current(self) -> Hold | None:
        """The live hold (a lapsed one is dropped here), or None."""
        with self._cond:
            changed = self._expire_locked()
            hold = self._hold
        if changed:
            self.on_change()
        return hold

    def _expire_locked(self) -> bool:
        hold = self._hold
        if hold is not None and hold.remaining_s() <= 0:
            log.info("hold of %s lapsed (not renewed for %.0f s)", hold.client, hold.lease_s)
            self._hold = None
            self._cond.notify_all()
            return True
        return False

    # -- taking and giving back --------------------------------------------------------------------------
    def take(self, client: str, lease_s: float, wait_s: float = 0.0, session_id: str = "") -> tuple[Hold, int]:
        """A new hold for ``client`` (waiting up to ``wait_s`` for the current holder to release), and how many
        running calls of others it waited for; HeldError if the board stayed held."""
        lease = min(self._max_lease, lease_s if lease_s > 0 else self._default_lease)
        deadline = time.monotonic() + max(0.0, wait_s)
        with self._cond:
            while True:
                self._expire_locked()
                if self._hold is None:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HeldError(self._refusal(self._hold))
                self._cond.wait(min(left, max(0.05, self._hold.remaining_s())))
            hold = Hold(id=secrets.token_hex(12), client=client, lease_s=lease, session_id=session_id)
            self._hold = hold
        log.info("hold taken by %s (%s)", client, "session" if session_id else f"lease {lease:.0f} s")
        self.on_change()
        return hold, self._drain(hold)

    def _drain(self, hold: Hold) -> int:
        """Wait (bounded) until calls of others that were running when the hold was granted have ended."""
        busy = first = self._others_busy(hold)
        deadline = time.monotonic() + DRAIN_WAIT_S
        while busy and time.monotonic() < deadline:
            time.sleep(0.01)
            busy = self._others_busy(hold)
        if busy:
            log.warning("hold of %s: %d call(s) of others still running after %.0f s", hold.client, busy, DRAIN_WAIT_S)
        return first

    def bind(self, hold_id: str, session_id: str) -> None:
        """Make a lease hold follow a session (an exclusive Load under a hold the caller already had)."""
        with self._cond:
            if self._hold is not None and hmac.compare_digest(self._hold.id, hold_id):
                self._hold.session_id = session_id

    def renew(self, hold_id: str) -> Hold:
        with self._cond:
            self._expire_locked()
            hold = self._hold
            if hold is None or not hmac.compare_digest(hold.id, hold_id):
                raise UnknownHoldError(
                    "this agent holds no such hold (it lapsed, was released, or was never taken): Hold again"
                )
            hold.renewed = time.monotonic()
            return hold

    def release(self, hold_id: str) -> bool:
        with self._cond:
            hold = self._hold
            if hold is None or not hmac.compare_digest(hold.id, hold_id):
                return False
            self._hold = None
            self._cond.notify_all()
        log.info("hold of %s released", hold.client)
        self.on_change()
        return True

    def session_closed(self, session_id: str) -> None:
        """An exclusive session ended (unloaded, lapsed, agent stopping): its hold ends with it."""
        with self._cond:
            hold = self._hold
            if hold is None or hold.session_id != session_id:
                return
            self._hold = None
            self._cond.notify_all()
        log.info("hold of %s ended with its session", hold.client)
        self.on_change()

    # -- the check every guarded call makes --------------------------------------------------------------
    def admit(self, hold_id: str | None, session_hold: str = "") -> Hold | None:
        """Let a call through: no hold, or the call carries the hold's id (renewing it), or it runs on a session
        opened under the hold. Returns the hold the call runs under (None: none); HeldError otherwise."""
        with self._cond:
            changed = self._expire_locked()
            hold = self._hold
            inside = hold is not None and any(
                t and hmac.compare_digest(hold.id, t) for t in (hold_id or "", session_hold)
            )
            if hold is not None and inside:
                hold.renewed = time.monotonic()
        if changed:
            self.on_change()
        if hold is None:
            return None
        if not inside:
            raise HeldError(self._refusal(hold))
        return hold

    @staticmethod
    def _refusal(hold: Hold) -> str:
        return f"board held: {hold.describe()}; wait for it, or use another board"


__all__ = ["DEFAULT_HOLD_LEASE_S", "HeldError", "Hold", "HoldManager", "UnknownHoldError"]
