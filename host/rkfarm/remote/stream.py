"""A persistent InferStream for one-request-at-a-time inference (about half the overhead of unary calls)."""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from rkfarm.errors import AgentUnavailableError, InputError, RemoteError
from rkfarm.remote.status import error_from_rpc
from rkfarm_proto.transport import REFUSED_STREAMS
from rkfarm_proto.v1 import agent_pb2

log = logging.getLogger(__name__)


class LockstepStream:
    """Send a request, wait for its response, repeat, on one long-lived InferStream call.

    A watchdog cancels the call if a response takes longer than ``timeout_s``. After any error the stream is
    dead (``broken``); open a new one.

    If the agent refuses the stream because all its stream slots are taken (RESOURCE_EXHAUSTED with trailing
    metadata ``rkfarm-refused: streams``, see rkfarm_proto.transport), the request goes as a unary Infer instead
    and ``on_refused``
    is told; a stream built with ``unary_until`` in the future makes only unary calls, and reports itself
    ``broken`` once that time has passed so that the caller tries a real stream again.
    """

    def __init__(
        self,
        stub: Any,
        metadata: tuple[tuple[str, str], ...],
        timeout_s: float,
        address: str,
        map_error: Callable[..., RemoteError | InputError] | None = None,
        unary_until: float = 0.0,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self._map_error = map_error or functools.partial(error_from_rpc, address)
        self._stub = stub
        self._metadata = metadata
        self._timeout_s = timeout_s
        self._address = address
        self._unary_until = unary_until
        self._on_refused = on_refused
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self.broken = False
        self._closed = False
        self._requests: queue.SimpleQueue[agent_pb2.InferRequest | None] = queue.SimpleQueue()
        self._responses: Any = None
        if unary_until > time.monotonic():
            return
        self._responses = stub.InferStream(self._feed(), metadata=metadata)
        threading.Thread(target=self._watchdog, name="rkfarm-stream-watchdog", daemon=True).start()

    def _unary(self, request: agent_pb2.InferRequest) -> agent_pb2.InferResponse:
        try:
            response: agent_pb2.InferResponse = self._stub.Infer(
                request, timeout=self._timeout_s, metadata=self._metadata
            )
            return response
        except grpc.RpcError as exc:
            raise self._map_error(exc, inference=True) from None

    def _feed(self) -> Iterator[agent_pb2.InferRequest]:
        while True:
            item = self._requests.get()
            if item is None:
                return
            yield item

    def call(self, request: agent_pb2.InferRequest) -> agent_pb2.InferResponse:
        if self._responses is None:  # unary stand-in while the agent has no stream slot
            if time.monotonic() >= self._unary_until:
                self.broken = True
            return self._unary(request)
        with self._cond:
            self._deadline = time.monotonic() + self._timeout_s
            self._cond.notify()
        self._requests.put(request)
        try:
            response: agent_pb2.InferResponse = next(self._responses)
            return response
        except grpc.RpcError as exc:
            self.broken = True
            err = self._map_error(exc, inference=True)
            if (
                isinstance(err, RemoteError)
                and err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                and err.refused == REFUSED_STREAMS
            ):
                log.info("agent %s has no stream slot free (%s); unary calls for now", self._address, exc.details())
                if self._on_refused is not None:
                    self._on_refused()
                return self._unary(request)  # the agent refused the stream before reading this request
            raise err from None
        except StopIteration:
            self.broken = True
            raise AgentUnavailableError(f"agent at {self._address} ended the inference stream") from None
        finally:
            with self._cond:
                self._deadline = None

    def _watchdog(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    self._responses.cancel()
                    self._deadline = None
                else:
                    self._cond.wait(remaining)

    def close(self) -> None:
        self._requests.put(None)
        if self._responses is not None:
            self._responses.cancel()
        with self._cond:
            self._closed = True
            self._cond.notify()
