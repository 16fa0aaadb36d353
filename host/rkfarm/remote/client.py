"""A typed client for one agent: deadlines on every call, status codes mapped back to rkfarm errors."""

from __future__ import annotations

import functools
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from rkfarm.errors import InputError, RemoteError
from rkfarm.remote.credentials import Credentials, explain_refusal
from rkfarm_proto.records import PerfOptions
from rkfarm_proto.tensors import from_tensor, to_tensor
from rkfarm_proto.transport import (
    MAX_MESSAGE_BYTES,
    REFUSED_STREAMS,
    REFUSED_UPLOADS,
    THROUGHPUT_OPTIONS,
    message_limits,
    refused_kind,
)
from rkfarm_proto.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024
STREAM_BACKOFF_S = 10.0  # after an agent refused a stream (all stream slots taken), unary calls this long
T = TypeVar("T")


class AgentUnavailableError(RemoteError):
    """The agent cannot be reached (down, restarting, wrong address, network)."""


class SessionLostError(RemoteError):
    """The agent no longer has the session (restarted, or the lease expired)."""


class AgentAuthError(RemoteError):
    """The agent refused this host's credentials, or requires ones the host does not have."""


def _map_error(
    address: str,
    exc: grpc.RpcError,
    inference: bool = False,
    credentials: Credentials | None = None,
    auth: str | None = None,
) -> RemoteError | InputError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    if inference and code == grpc.StatusCode.INVALID_ARGUMENT:
        return InputError(details)  # the same error the simulator raises for the same input
    advice = explain_refusal(credentials, code, details, auth) if credentials is not None else None
    if advice is not None and advice[1]:
        err: RemoteError = AgentAuthError(f"agent at {address}: access failed: {advice[0]} [{code.name}: {details}]")
    elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        hint = f"; {advice[0]}" if advice is not None else ""
        err = AgentUnavailableError(f"agent at {address}: {code.name}: {details or 'no answer'}{hint}")
    elif code == grpc.StatusCode.NOT_FOUND and "session" in details:
        err = SessionLostError(f"agent at {address}: {code.name}: {details}")
    else:
        err = RemoteError(f"agent at {address} refused: {code.name}: {details}")
    err.code = code  # type: ignore[attr-defined]
    err.refused = refused_kind(exc.trailing_metadata()) if hasattr(exc, "trailing_metadata") else None  # type: ignore[attr-defined]
    return err


def _mapped(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(self: AgentClient, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self, *args, **kwargs)
        except grpc.RpcError as exc:
            raise self.map_error(exc) from None

    return wrapper


class AgentClient:
    """One channel to one agent. Use as a context manager, or call close().

    Credentials (token, TLS, client certificate) come from the environment (see ``credentials.py``) unless
    given; with a CA configured the channel is TLS. ``auth`` is the mode the agent advertised, if known: it
    only sharpens error messages.
    """

    def __init__(
        self,
        address: str,
        timeout_s: float = 30.0,
        metadata: Sequence[tuple[str, str]] = (),
        credentials: Credentials | None = None,
        auth: str | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.credentials = credentials if credentials is not None else Credentials.load()
        self.auth = auth
        self._metadata = (*self.credentials.metadata(), *metadata)
        options: list[tuple[str, Any]] = [
            *message_limits(MAX_MESSAGE_BYTES),
            *THROUGHPUT_OPTIONS,
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.enable_retries", 1),
            *self.credentials.channel_options(),
        ]
        channel_credentials = self.credentials.channel_credentials()
        if channel_credentials is not None:
            self._channel = grpc.secure_channel(address, channel_credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub: Any = agent_pb2_grpc.AgentStub(self._channel)
        self._streams_refused_until = 0.0
        self._resumed_from = 0  # where the last upload attempt started

    def map_error(self, exc: grpc.RpcError, inference: bool = False) -> RemoteError | InputError:
        """The rkfarm error for a failed call, with advice when credentials are the problem."""
        return _map_error(self.address, exc, inference, self.credentials, self.auth)

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the agent answers a call (within timeout_s).

        Right after an agent died the channel may still look connected; a call made then fails. So this
        waits for an answer, not for the channel state: Info with wait_for_ready, repeated until it gets one.
        Any answer counts, a refusal too (the call that follows reports it properly).
        """
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self._stub.Info(
                    agent_pb2.InfoRequest(), timeout=remaining, metadata=self._metadata, wait_for_ready=True
                )
                return True
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return False
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    return True
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return False

    @_mapped
    def info(self) -> agent_pb2.InfoResponse:
        response: agent_pb2.InfoResponse = self._stub.Info(
            agent_pb2.InfoRequest(), timeout=self.timeout_s, metadata=self._metadata
        )
        return response

    @_mapped
    def model_status(self, sha256: str) -> agent_pb2.GetModelResponse:
        response: agent_pb2.GetModelResponse = self._stub.GetModel(
            agent_pb2.GetModelRequest(sha256=sha256), timeout=self.timeout_s, metadata=self._metadata
        )
        return response

    def ensure_model(self, blob: bytes, sha256: str | None = None, wait_s: float | None = None) -> int:
        """Upload a package unless the agent has it (resuming a partial upload). Returns bytes sent.

        While another client uploads the same model (FAILED_PRECONDITION) or the agent's upload slots are all
        taken (RESOURCE_EXHAUSTED naming uploads), this waits and asks again, for up to ``wait_s`` (default:
        the call timeout plus the time the upload takes at 20 MB/s): many clients starting together share one
        upload. A resumed upload the agent refuses as corrupt (the kept part was damaged, e.g. by a crash or a
        bad disk) starts again from byte 0.
        """
        sha = sha256 or hashlib.sha256(blob).hexdigest()
        deadline = time.monotonic() + (wait_s if wait_s is not None else self.timeout_s + len(blob) / (20 << 20))
        resume = True
        attempt = 0
        while True:
            try:
                return self._upload_once(blob, sha, resume)
            except RemoteError as exc:
                code = getattr(exc, "code", None)
                resumed = self._resumed_from > 0
                if resume and resumed and code in (grpc.StatusCode.DATA_LOSS, grpc.StatusCode.INVALID_ARGUMENT):
                    resume = False
                    log.warning("resuming the upload of %s failed (%s); sending it whole", sha[:12], exc)
                    continue
                busy = code == grpc.StatusCode.FAILED_PRECONDITION or (
                    code == grpc.StatusCode.RESOURCE_EXHAUSTED and getattr(exc, "refused", None) == REFUSED_UPLOADS
                )
                if not busy or time.monotonic() >= deadline:
                    raise
                attempt += 1
                log.debug("upload of %s waits: %s", sha[:12], exc)
                time.sleep(min(1.0, 0.1 * attempt, max(0.0, deadline - time.monotonic())))

    @_mapped
    def _upload_once(self, blob: bytes, sha: str, resume: bool = True) -> int:
        status = self.model_status(sha)
        if status.present:
            log.debug("agent %s already has model %s", self.address, sha[:12])
            return 0
        offset = status.partial_bytes if resume and 0 < status.partial_bytes < len(blob) else 0
        self._resumed_from = offset

        def chunks() -> Iterator[agent_pb2.UploadChunk]:
            view = memoryview(blob)
            first = True
            for start in range(offset, len(blob), CHUNK_BYTES):
                data = bytes(view[start : start + CHUNK_BYTES])
                if first:
                    yield agent_pb2.UploadChunk(sha256=sha, total_size=len(blob), offset=offset, data=data)
                    first = False
                else:
                    yield agent_pb2.UploadChunk(data=data)
            if first:  # empty remainder: still announce
                yield agent_pb2.UploadChunk(sha256=sha, total_size=len(blob), offset=offset)

        timeout = self.timeout_s + len(blob) / (20 * 1024 * 1024)  # generous: 20 MB/s floor
        response = self._stub.Upload(chunks(), timeout=timeout, metadata=self._metadata)
        log.info("uploaded model %s to %s (%d bytes sent)", sha[:12], self.address, response.received_bytes)
        return int(response.received_bytes)

    @_mapped
    def load(self, request: agent_pb2.LoadRequest) -> agent_pb2.LoadResponse:
        response: agent_pb2.LoadResponse = self._stub.Load(request, timeout=self.timeout_s * 4, metadata=self._metadata)
        return response

    @_mapped
    def keep_alive(self, session_id: str) -> float:
        response = self._stub.KeepAlive(
            agent_pb2.SessionRequest(session_id=session_id), timeout=self.timeout_s, metadata=self._metadata
        )
        return float(response.lease_remaining_s)

    @staticmethod
    def infer_request(
        session_id: str,
        arrays: Sequence[npt.ArrayLike],
        data_format: str | Sequence[str | None] | None,
        pass_through: Sequence[int | bool] | None,
        request_id: int = 0,
    ) -> agent_pb2.InferRequest:
        formats: list[str] = []
        if isinstance(data_format, str):
            formats = [data_format] * len(arrays)
        elif data_format is not None:
            formats = [f or "" for f in data_format]
        return agent_pb2.InferRequest(
            session_id=session_id,
            inputs=[to_tensor(np.asarray(a)) for a in arrays],
            data_format=formats,
            pass_through=[bool(p) for p in pass_through] if pass_through is not None else [],
            request_id=request_id,
        )

    def infer(self, request: agent_pb2.InferRequest) -> list[npt.NDArray[np.generic]]:
        try:
            response = self._stub.Infer(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self.map_error(exc, inference=True) from None
        return [from_tensor(t) for t in response.outputs]

    def lockstep(self) -> LockstepStream:
        """A persistent InferStream for one-request-at-a-time calls: about half the overhead of unary calls.

        When the agent has no stream slot left, it falls back to unary Infer calls for STREAM_BACKOFF_S.
        """
        return LockstepStream(
            self._stub, self._metadata, self.timeout_s, self.address, self.map_error,
            unary_until=self._streams_refused_until, on_refused=self._note_streams_refused,
        )  # fmt: skip

    def _note_streams_refused(self) -> None:
        self._streams_refused_until = time.monotonic() + STREAM_BACKOFF_S

    def infer_stream(self, requests: Iterator[agent_pb2.InferRequest]) -> Iterator[agent_pb2.InferResponse]:
        """Responses in request order; errors surface as rkfarm exceptions while iterating."""
        try:
            yield from self._stub.InferStream(requests, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self.map_error(exc, inference=True) from None

    @_mapped
    def eval_perf(self, session_id: str, options: PerfOptions) -> agent_pb2.EvalPerfResponse:
        response: agent_pb2.EvalPerfResponse = self._stub.EvalPerf(
            options.to_request(session_id), timeout=self.timeout_s * 10, metadata=self._metadata
        )
        return response

    @_mapped
    def eval_memory(self, session_id: str) -> agent_pb2.EvalMemoryResponse:
        response: agent_pb2.EvalMemoryResponse = self._stub.EvalMemory(
            agent_pb2.SessionRequest(session_id=session_id), timeout=self.timeout_s, metadata=self._metadata
        )
        return response

    @_mapped
    def unload(self, session_id: str) -> None:
        self._stub.Unload(
            agent_pb2.SessionRequest(session_id=session_id), timeout=self.timeout_s, metadata=self._metadata
        )

    @_mapped
    def list_sessions(self) -> list[agent_pb2.SessionInfo]:
        response = self._stub.ListSessions(
            agent_pb2.ListSessionsRequest(), timeout=self.timeout_s, metadata=self._metadata
        )
        return list(response.sessions)


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
        self._map_error = map_error or functools.partial(_map_error, address)
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
            refused = refused_kind(exc.trailing_metadata()) if hasattr(exc, "trailing_metadata") else None
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and refused == REFUSED_STREAMS:
                log.info("agent %s has no stream slot free (%s); unary calls for now", self._address, exc.details())
                if self._on_refused is not None:
                    self._on_refused()
                return self._unary(request)  # the agent refused the stream before reading this request
            raise self._map_error(exc, inference=True) from None
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
