"""Bounds that keep one client from starving the others: model-run slots and long-lived call slots.

* ``RunLimiter``: at most N model runs at once (``--max-concurrent-runs``). A call that finds no free slot
  within its deadline, or within ``--max-run-wait-seconds``, is refused with RESOURCE_EXHAUSTED instead of
  queueing without end.
* ``StreamGuard``: the sync gRPC server gives each streaming call (InferStream, Upload) a worker thread for
  its whole life, idle or not. One guard bounds InferStream calls and another uploads, each in total and per
  client, so the worker pool — sized as streams + uploads + a reserve (``server.py``) — always has threads
  left for short calls. It also cancels a call whose client stalls it: a response send that has not
  completed for ``--stream-stall-seconds`` (HTTP/2 flow control holds it), or an upload whose client sends
  no chunk for that long, would otherwise pin a worker and a slot for as long as the connection lives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import grpc

from rkfarm_proto.errors import RkfarmError
from rkfarm_proto.transport import REFUSED_RUNS, REFUSED_STREAMS

log = logging.getLogger(__name__)
T = TypeVar("T")


class AgentBusyError(RkfarmError):
    """No run slot or stream slot came free in time (RESOURCE_EXHAUSTED); retry later or use another agent.

    ``kind`` (rkfarm_proto.transport.REFUSED_*) travels in the status's trailing metadata, so hosts can tell a
    refused stream (they fall back to unary calls) from a full upload queue (they wait) without parsing words.
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class RunLimiter:
    """A counting semaphore on model runs with a bounded wait."""

    def __init__(self, slots: int, max_wait_s: float) -> None:
        if slots < 1:
            raise ValueError(f"max concurrent runs must be at least 1, not {slots}")
        self.slots = slots
        self.max_wait_s = max_wait_s
        self._sem = threading.BoundedSemaphore(slots)

    @contextmanager
    def slot(self, time_remaining_s: float | None = None) -> Iterator[None]:
        """Hold one run slot; waits at most max_wait_s, and ends a little before the call's deadline."""
        wait_s = self.max_wait_s
        if time_remaining_s is not None:
            wait_s = min(wait_s, time_remaining_s - 0.05)  # answer before the client's own deadline fires
        if not self._sem.acquire(timeout=max(0.0, wait_s)):
            raise AgentBusyError(
                f"all {self.slots} model-run slots stayed busy for {max(0.0, wait_s):.2f} s "
                "(rkfarm-agent serve --max-concurrent-runs); retry later or use another agent",
                REFUSED_RUNS,
            )
        try:
            yield
        finally:
            self._sem.release()


class StreamTicket:
    """One admitted streaming call. The handler brackets each wait on its client — a response send — with
    sending() / sent(), or reads its requests through watched()."""

    def __init__(self, peer: str, method: str, context: grpc.ServicerContext) -> None:
        self.peer = peer
        self.method = method
        self.context = context
        self.sending_since: float | None = None
        self.waiting_for = "read a response"
        self.stalled = False

    def sending(self) -> None:
        self.sending_since = time.monotonic()

    def sent(self) -> None:
        self.sending_since = None

    def watched(self, requests: Iterator[T]) -> Iterator[T]:
        """``requests``, each wait for the next one watched like a send: a client that sends nothing for the
        stall time is cancelled, so an idle upload cannot keep its slot."""
        self.waiting_for = "sent anything"
        while True:
            self.sending()
            try:
                item = next(requests)
            except StopIteration:
                return
            finally:
                self.sent()
            yield item


class StreamGuard:
    """Admits streaming calls up to a total and a per-client count; cancels ones whose client stopped reading."""

    def __init__(
        self,
        max_total: int,
        max_per_peer: int,
        stall_s: float,
        what: str = "streaming calls",
        total_flag: str = "--max-streams",
        peer_flag: str = "--max-streams-per-client",
        kind: str = REFUSED_STREAMS,
    ) -> None:
        self.what = what
        self.kind = kind
        self.total_flag = total_flag
        self.peer_flag = peer_flag
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self.stall_s = stall_s
        self._active: set[StreamTicket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="rkfarm-stream-watchdog", daemon=True)
        self._watchdog.start()

    @contextmanager
    def hold(self, peer: str, method: str, context: grpc.ServicerContext) -> Iterator[StreamTicket]:
        ticket = StreamTicket(peer, method, context)
        with self._lock:
            if len(self._active) >= self.max_total:
                raise AgentBusyError(
                    f"the agent already serves {self.max_total} {self.what} (rkfarm-agent serve {self.total_flag}); "
                    "close idle runtimes or retry later",
                    self.kind,
                )
            mine = sum(1 for t in self._active if t.peer == peer)
            if mine >= self.max_per_peer:
                raise AgentBusyError(
                    f"this client already has {mine} {self.what} open (the per-client limit, "
                    f"rkfarm-agent serve {self.peer_flag}); close some first",
                    self.kind,
                )
            self._active.add(ticket)
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                with self._lock:
                    self._active.discard(ticket)

        context.add_callback(release)  # also when the call ends without the handler noticing (cancelled)
        try:
            yield ticket
        finally:
            release()

    @property
    def active(self) -> int:
        """Calls admitted and not ended."""
        with self._lock:
            return len(self._active)

    def close(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(max(0.05, min(1.0, self.stall_s / 4))):
            now = time.monotonic()
            with self._lock:
                stuck = [
                    t for t in self._active
                    if not t.stalled and t.sending_since is not None and now - t.sending_since > self.stall_s
                ]  # fmt: skip
            for ticket in stuck:
                ticket.stalled = True
                log.warning(
                    "%s from %s: the client has not %s for %.0f s; cancelling the call",
                    ticket.method, ticket.peer, ticket.waiting_for, self.stall_s,
                )  # fmt: skip
                ticket.context.cancel()  # type: ignore[no-untyped-call]
