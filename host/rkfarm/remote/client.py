"""A typed client for one agent: deadlines on every call, status codes mapped back to rkfarm errors."""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from rkfarm.errors import AgentAuthError, AgentUnavailableError, InputError, RemoteError, SessionLostError
from rkfarm.remote.credentials import Credentials
from rkfarm.remote.retry import retry
from rkfarm.remote.status import error_from_rpc, status_code
from rkfarm.remote.stream import LockstepStream
from rkfarm_proto.records import PerfOptions
from rkfarm_proto.tensors import from_tensor, to_tensor
from rkfarm_proto.transport import (
    HOLD_KEY,
    MAX_MESSAGE_BYTES,
    REFUSED_RUNS,
    REFUSED_UPLOADS,
    THROUGHPUT_OPTIONS,
    message_limits,
)
from rkfarm_proto.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024
STREAM_BACKOFF_S = 10.0  # after an agent refused a stream (all stream slots taken), unary calls this long
TIMEOUT_ENV = "RKFARM_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 30.0
# Agent refusals that mean "wait and ask again" (RESOURCE_EXHAUSTED with rkfarm-refused): run and upload slots.
# A refused stream is not one (the host falls back to unary calls), nor is a refusal that names no kind.
WAIT_REFUSALS = (REFUSED_RUNS, REFUSED_UPLOADS)
T = TypeVar("T")
# The errors this client raises, importable from here as well as from rkfarm.errors.
__all__ = ["AgentAuthError", "AgentClient", "AgentUnavailableError", "LockstepStream", "SessionLostError"]


class _NoBar:
    """Stands in for a progress bar where tqdm is not installed (a board-only install)."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _upload_bar(total: int, initial: int, what: str) -> Any:
    """A byte progress bar on a terminal (tqdm, ``disable=None``: quiet when stderr is not a TTY) for an
    upload longer than one chunk; a no-op without tqdm or for a small upload."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(
        total=total,
        initial=initial,
        desc=what,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        disable=None if total - initial > CHUNK_BYTES else True,
    )


def default_timeout_s(timeout_s: float | None = None) -> float:
    """``timeout_s`` if given, else ``RKFARM_TIMEOUT_S``, else 30 s: how long the host waits for an agent."""
    if timeout_s is not None:
        value, source = timeout_s, "timeout_s"
    else:
        text = os.environ.get(TIMEOUT_ENV, "").strip()
        if not text:
            return DEFAULT_TIMEOUT_S
        source = f"{TIMEOUT_ENV}={text}"
        try:
            value = float(text)
        except ValueError:
            value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise RemoteError(f"{source}: the timeout must be a number of seconds above 0")
    return float(value)


def transient(exc: Exception) -> bool:
    """Worth another attempt within the caller's timeout: the agent unreachable or not answering in time
    (UNAVAILABLE, DEADLINE_EXCEEDED), or a refusal that says wait (run or upload slots all taken).

    Never credentials (an AgentAuthError, whatever its code), bad input, or a limit that waiting does not lift.
    """
    if isinstance(exc, (AgentAuthError, InputError)):
        return False
    code = status_code(exc)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return True
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and getattr(exc, "refused", None) in WAIT_REFUSALS


def _mapped(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(self: AgentClient, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self, *args, **kwargs)
        except grpc.RpcError as exc:
            raise self.map_error(exc) from None

    return wrapper


def gave_up(exc: Exception, waited_s: float) -> Exception:
    """``exc`` as raised once the host stopped waiting: an AgentUnavailableError says for how long and what sets
    it (the same class, code, kind and refusal); any other error is returned as it is."""
    if not isinstance(exc, AgentUnavailableError):
        return exc
    return AgentUnavailableError(
        f"{exc} (gave up after {waited_s:.1f} s; {TIMEOUT_ENV} or timeout_s= sets how long the host waits)",
        code=exc.code, kind=exc.kind, refused=exc.refused,
    )  # fmt: skip


class AgentClient:
    """One channel to one agent. Use as a context manager, or call close().

    Credentials (token, TLS, client certificate) come from the environment (see ``credentials.py``) unless
    given; with a CA configured the channel is TLS. ``auth`` is the mode the agent advertised, if known: it
    only sharpens error messages.
    """

    def __init__(
        self,
        address: str,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        credentials: Credentials | None = None,
        auth: str | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = default_timeout_s(timeout_s)  # each call's deadline (Load, EvalPerf, uploads: more)
        self.credentials = credentials if credentials is not None else Credentials.load()
        self.auth = auth
        self._base_metadata = (*self.credentials.metadata(), *metadata)
        self._metadata = self._base_metadata
        self.hold_id = ""  # the exclusive hold this client's calls run under (use_hold)
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
        return error_from_rpc(self.address, exc, inference, self.credentials, self.auth)

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
        until = time.monotonic() + timeout_s

        def ask() -> None:
            self._stub.Info(
                agent_pb2.InfoRequest(),
                timeout=max(0.001, until - time.monotonic()),
                metadata=self._metadata,
                wait_for_ready=True,
            )

        try:
            retry(
                ask,
                until=until,
                retryable=lambda e: status_code(e) == grpc.StatusCode.UNAVAILABLE,
                what=f"Info {self.address}",
            )
        except grpc.RpcError as exc:
            return status_code(exc) not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        return True

    def _until(self, until: float | None, default_s: float) -> float:
        """The deadline of one attempt: what is left before ``until``, else ``default_s``."""
        return default_s if until is None else max(0.001, until - time.monotonic())

    @_mapped
    def info(self, until: float | None = None) -> agent_pb2.InfoResponse:
        """Info, with the call timeout as its deadline (or what is left before ``until``, a monotonic time)."""
        response: agent_pb2.InfoResponse = self._stub.Info(
            agent_pb2.InfoRequest(), timeout=self._until(until, self.timeout_s), metadata=self._metadata
        )
        return response

    def info_within(self, timeout_s: float) -> agent_pb2.InfoResponse:
        """Info, asked again while the agent is unreachable, slow or busy (``transient``) for ``timeout_s``.

        Each attempt may use all the time left: an agent that is merely slow answers the first one.
        """
        until = time.monotonic() + timeout_s
        return retry(lambda: self.info(until), until=until, retryable=transient, what=f"Info {self.address}")

    @_mapped
    def model_status(self, sha256: str) -> agent_pb2.GetModelResponse:
        response: agent_pb2.GetModelResponse = self._stub.GetModel(
            agent_pb2.GetModelRequest(sha256=sha256), timeout=self.timeout_s, metadata=self._metadata
        )
        return response

    def ensure_model(self, blob: bytes, sha256: str | None = None, wait_s: float | None = None) -> int:
        """Upload a package unless the agent has it (resuming a partial upload). Returns bytes sent.

        While another client uploads the same model (FAILED_PRECONDITION), the agent's upload slots are all
        taken (RESOURCE_EXHAUSTED naming uploads) or the agent is unreachable or slow (``transient``), this waits
        and asks again, for up to ``wait_s`` (default: the call timeout plus the time the upload takes at
        20 MB/s): many clients starting together share one upload. A resumed upload the agent refuses as corrupt
        (the kept part was damaged, e.g. by a crash or a bad disk) starts again from byte 0.
        """
        sha = sha256 or hashlib.sha256(blob).hexdigest()
        until = time.monotonic() + (wait_s if wait_s is not None else self.timeout_s + len(blob) / (20 << 20))

        def busy(exc: Exception) -> bool:
            return transient(exc) or (isinstance(exc, RemoteError) and exc.code == grpc.StatusCode.FAILED_PRECONDITION)

        return retry(lambda: self._upload(blob, sha), until=until, retryable=busy, what=f"upload of {sha[:12]}")

    def _upload(self, blob: bytes, sha: str) -> int:
        """One upload, resumed where the agent has a partial; whole if the agent refuses the resumed one."""
        try:
            return self._upload_once(blob, sha)
        except RemoteError as exc:
            if self._resumed_from > 0 and exc.code in (grpc.StatusCode.DATA_LOSS, grpc.StatusCode.INVALID_ARGUMENT):
                log.warning("resuming the upload of %s failed (%s); sending it whole", sha[:12], exc)
                return self._upload_once(blob, sha, resume=False)
            raise

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
            with _upload_bar(len(blob), offset, f"upload {sha[:12]} to {self.address}") as bar:
                for start in range(offset, len(blob), CHUNK_BYTES):
                    data = bytes(view[start : start + CHUNK_BYTES])
                    if first:
                        yield agent_pb2.UploadChunk(sha256=sha, total_size=len(blob), offset=offset, data=data)
                        first = False
                    else:
                        yield agent_pb2.UploadChunk(data=data)
                    bar.update(len(data))  # handed to gRPC: the agent's answer confirms what it received
            if first:  # empty remainder: still announce
                yield agent_pb2.UploadChunk(sha256=sha, total_size=len(blob), offset=offset)

        timeout = self.timeout_s + len(blob) / (20 * 1024 * 1024)  # generous: 20 MB/s floor
        response = self._stub.Upload(chunks(), timeout=timeout, metadata=self._metadata)
        log.info("uploaded model %s to %s (%d bytes sent)", sha[:12], self.address, response.received_bytes)
        return int(response.received_bytes)

    @_mapped
    def load(self, request: agent_pb2.LoadRequest, until: float | None = None) -> agent_pb2.LoadResponse:
        """Open a session; the deadline is 4x the call timeout (reading, verifying, decrypting, opening the
        model), or what is left before ``until``."""
        response: agent_pb2.LoadResponse = self._stub.Load(
            request, timeout=self._until(until, self.timeout_s * 4), metadata=self._metadata
        )
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

    def use_hold(self, hold_id: str) -> None:
        """Send ``hold_id`` (metadata rkfarm-hold) with every later call: they run under that exclusive hold
        (a stream opened before keeps the metadata it had)."""
        self.hold_id = hold_id
        self._metadata = (*self._base_metadata, (HOLD_KEY, hold_id)) if hold_id else self._base_metadata

    @_mapped
    def hold(
        self, lease_s: float = 0.0, client: str = "", wait_s: float = 0.0, hold_id: str = ""
    ) -> agent_pb2.HoldResponse:
        """Take the board's exclusive hold (waiting up to ``wait_s`` for another holder), or renew ``hold_id``."""
        response: agent_pb2.HoldResponse = self._stub.Hold(
            agent_pb2.HoldRequest(lease_s=lease_s, client=client, wait_s=wait_s, hold_id=hold_id),
            timeout=self.timeout_s + wait_s,
            metadata=self._metadata,
        )
        return response

    @_mapped
    def release(self, hold_id: str) -> bool:
        response = self._stub.Release(
            agent_pb2.ReleaseRequest(hold_id=hold_id), timeout=self.timeout_s, metadata=self._metadata
        )
        return bool(response.released)

    @_mapped
    def list_sessions(self) -> list[agent_pb2.SessionInfo]:
        response = self._stub.ListSessions(
            agent_pb2.ListSessionsRequest(), timeout=self.timeout_s, metadata=self._metadata
        )
        return list(response.sessions)
