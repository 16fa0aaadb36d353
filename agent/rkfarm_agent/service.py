"""The gRPC servicer: each RPC of agent.proto, and the one place errors become status codes."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import grpc
import psutil

from rkfarm_agent import __version__, doctor, system
from rkfarm_agent.advertise import load_per_cpu, memory_available_bytes
from rkfarm_agent.backends import available_backends, backend_versions
from rkfarm_agent.config import AgentConfig
from rkfarm_agent.errors import (
    BackendError,
    NoBackendError,
    StoreError,
    TooManySessionsError,
    UnknownModelError,
    UnknownSessionError,
    UploadConflictError,
    UploadCorruptError,
    UploadTooLargeError,
)
from rkfarm_agent.holds import Hold, HoldManager, UnknownHoldError
from rkfarm_agent.limits import AgentBusyError, RunLimiter, StreamGuard
from rkfarm_agent.memtrim import MemoryTrimmer
from rkfarm_agent.perf import dummy_feeds, measure
from rkfarm_agent.sessions import Session, SessionManager
from rkfarm_agent.store import ModelStore
from rkfarm_proto.crypto import Keyring, KeyUnavailableError
from rkfarm_proto.errors import InputError, PackageError, RkfarmError
from rkfarm_proto.platforms import NPU_CORES
from rkfarm_proto.records import LoadOptions, PerfOptions
from rkfarm_proto.tensors import from_tensor, to_tensor
from rkfarm_proto.transport import (
    ERROR_KEY,
    HOLD_KEY,
    REFUSED_KEY,
    REFUSED_UPLOADS,
    UNKNOWN_HOLD,
    UNKNOWN_MODEL,
    UNKNOWN_SESSION,
    metadata_value,
)
from rkfarm_proto.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)

# Most specific first: the first matching class decides the status code, and the error kind sent in trailing
# metadata (rkfarm_proto.transport) for errors a host must tell apart from others with the same code.
STATUS_OF: list[tuple[type[Exception], grpc.StatusCode, str | None]] = [
    (UnknownSessionError, grpc.StatusCode.NOT_FOUND, UNKNOWN_SESSION),
    (UnknownModelError, grpc.StatusCode.NOT_FOUND, UNKNOWN_MODEL),
    (UnknownHoldError, grpc.StatusCode.NOT_FOUND, UNKNOWN_HOLD),
    (UploadTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED, None),
    (TooManySessionsError, grpc.StatusCode.RESOURCE_EXHAUSTED, None),
    (AgentBusyError, grpc.StatusCode.RESOURCE_EXHAUSTED, None),
    (UploadCorruptError, grpc.StatusCode.DATA_LOSS, None),
    (UploadConflictError, grpc.StatusCode.FAILED_PRECONDITION, None),
    (NoBackendError, grpc.StatusCode.FAILED_PRECONDITION, None),
    (KeyUnavailableError, grpc.StatusCode.FAILED_PRECONDITION, None),
    (InputError, grpc.StatusCode.INVALID_ARGUMENT, None),
    (PackageError, grpc.StatusCode.INVALID_ARGUMENT, None),
    (StoreError, grpc.StatusCode.INVALID_ARGUMENT, None),
    (BackendError, grpc.StatusCode.FAILED_PRECONDITION, None),
    (RkfarmError, grpc.StatusCode.INTERNAL, None),
]
MAX_PERF_RUNS = 10_000
MAX_CLIENT_NAME = 64  # characters of a Load's client name kept (it is logged and listed)
MAX_SHOWN_CHARS = 200  # characters of a client-supplied string quoted in a log line
MAX_ERROR_CHARS = 1024  # characters of an error message sent back (a status travels in metadata)
F = TypeVar("F", bound=Callable[..., Any])


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str | None]:
    """The status code and error kind a failed call reports for ``exc``."""
    for cls, code, kind in STATUS_OF:
        if isinstance(exc, cls):
            return code, kind
    return grpc.StatusCode.INTERNAL, None


def shown(text: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """Text a client supplied (or an error quoting it), fit for a log line or a status message: control
    characters escaped (no forged log lines), at most ``limit`` characters (no amplification)."""
    value = str(text)
    if not value.isprintable():
        value = value.encode("unicode_escape", "backslashreplace").decode("ascii")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _abort(context: grpc.ServicerContext, exc: Exception, method: str) -> None:
    code, kind = status_for(exc)
    if isinstance(exc, RkfarmError):
        message = shown(exc, MAX_ERROR_CHARS)
        log.info("%s -> %s: %s", method, code.name, message)
        trailing = [(ERROR_KEY, kind)] if kind else []
        if isinstance(exc, AgentBusyError) and exc.kind:
            trailing.append((REFUSED_KEY, exc.kind))
        if trailing:
            context.set_trailing_metadata(tuple(trailing))
        context.abort(code, message)
    if not context.is_active():  # the client went away (cancelled, killed): nobody to tell
        log.info("%s: client gone (%s)", method, type(exc).__name__)
        raise exc
    log.exception("%s failed unexpectedly", method)
    context.abort(code, f"internal error in {method}: {type(exc).__name__}: {shown(exc)}; the agent is still serving")


def rpc(fn: F) -> F:
    """Unary and client-streaming handlers: map exceptions to status codes."""

    @functools.wraps(fn)
    def wrapper(self: AgentService, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except Exception as exc:
            _abort(context, exc, fn.__name__)

    return wrapper  # type: ignore[return-value]


def stream_rpc(fn: F) -> F:
    """Server-streaming handlers (generators): same mapping, applied while iterating."""

    @functools.wraps(fn)
    def wrapper(self: AgentService, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(self, request, context)
        except Exception as exc:
            _abort(context, exc, fn.__name__)

    return wrapper  # type: ignore[return-value]


def _peer_host(context: grpc.ServicerContext) -> str:
    peer = context.peer() or ""
    # "ipv4:127.0.0.1:54321", "ipv6:[::1]:54321", "unix:..."
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rsplit("]:", 1)[0].lstrip("[")
    return rest.rsplit(":", 1)[0] if kind == "ipv4" else peer


def _hold_token(context: grpc.ServicerContext) -> str | None:
    """The exclusive hold a call says it runs under (metadata ``rkfarm-hold``), if any."""
    return metadata_value(context.invocation_metadata(), HOLD_KEY)


def _owner(context: grpc.ServicerContext) -> str:
    """Who a call comes from, for session ownership: its client certificate (mTLS), else its host address."""
    certificate = next(iter((context.auth_context() or {}).get("x509_pem_cert", ())), b"")
    if certificate:
        return "cert:" + hashlib.sha256(bytes(certificate)).hexdigest()[:32]
    return "host:" + _peer_host(context)


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(
        self,
        config: AgentConfig,
        store: ModelStore,
        sessions: SessionManager,
        agent_id: str,
        platform: str,
        soc: str,
        keyring: Keyring,
    ) -> None:
        self._keyring = keyring
        self._config = config
        self._store = store
        self._sessions = sessions
        self._agent_id = agent_id
        self._platform = platform
        self._soc = soc
        self._started = time.monotonic()
        self._versions = system.versions()
        self.auth_mode = "none"  # set by the server from its auth settings (auth.py)
        self._runs = RunLimiter(config.max_concurrent_runs, config.max_run_wait_s)
        self._streams = StreamGuard(config.max_streams, config.max_streams_per_client, config.stream_stall_s)
        self._uploads = StreamGuard(
            config.max_uploads, max(1, config.max_uploads // 2), config.stream_stall_s, "uploads", "--max-uploads",
            "--max-uploads (half of it per client)", REFUSED_UPLOADS,
        )  # fmt: skip

        self.tags: dict[str, str] = dict(config.tags)
        self.advertise_status = "off"  # set by the server's advertiser (advertise.py)
        self.holds = HoldManager(
            config.max_hold_s, others_busy=lambda hold: self._sessions.busy_outside(hold.id, hold.session_id)
        )
        sessions.on_close = self.holds.session_closed

        # freed memory goes back to the system when sessions close and when streams or uploads end
        self._trimmer = MemoryTrimmer(
            lambda: len(self._sessions.snapshot()) + self._streams.active + self._uploads.active
        )

    def close(self) -> None:
        self._streams.close()
        self._uploads.close()
        self._trimmer.close()

    # -- identity ----------------------------------------------------------------------------------------
    @rpc
    def Info(self, request: agent_pb2.InfoRequest, context: grpc.ServicerContext) -> agent_pb2.InfoResponse:
        return agent_pb2.InfoResponse(
            agent_id=self._agent_id,
            hostname=socket.gethostname(),
            platform=self._platform,
            soc_compatible=self._soc,
            npu_cores=NPU_CORES.get(self._platform, 0),
            agent_version=__version__,
            backends=available_backends(),
            auth=self.auth_mode,
            cpu_count=system.cpu_count(),
            memory_total_bytes=system.memory_total_bytes(),
            max_upload_bytes=self._config.max_upload_bytes,
            max_sessions=self._config.max_sessions,
            store_used_bytes=self._store.used_bytes(),
            store_capacity_bytes=self._config.store_capacity_bytes,
            versions={**self._versions, **backend_versions()},
            uptime_s=time.monotonic() - self._started,
            public_key=self._keyring.public_key,
            farm_key_ids=self._keyring.farm_key_ids,
            tags=self.tags,
            memory_available_bytes=memory_available_bytes(),
            load_per_cpu=load_per_cpu(),
            sessions_open=len(self._sessions.snapshot()),
            hold=self._hold_info(self.holds.current(), _hold_token(context)),
            advertise_status=self.advertise_status,
            system=doctor.system_info(),  # what it runs on and what the NPU path lacks (rkfarm-agent doctor)
        )

    @staticmethod
    def _hold_info(hold: Hold | None, token: str | None) -> agent_pb2.HoldInfo | None:
        if hold is None:
            return None
        yours = bool(token) and hold.id == token
        return agent_pb2.HoldInfo(
            client=hold.client,
            expires_unix=hold.expires_unix(),
            remaining_s=0.0 if hold.session_id else max(0.0, hold.remaining_s()),
            yours=yours,
            hold_id=hold.id if yours else "",
            session_id=hold.session_id if yours else "",
        )

    # -- models ------------------------------------------------------------------------------------------
    @rpc
    def GetModel(self, request: agent_pb2.GetModelRequest, context: grpc.ServicerContext) -> agent_pb2.GetModelResponse:
        status = self._store.status(request.sha256)
        return agent_pb2.GetModelResponse(
            present=status.present, size_bytes=status.size_bytes, partial_bytes=status.partial_bytes
        )

    @rpc
    def Upload(
        self, request_iterator: Iterable[agent_pb2.UploadChunk], context: grpc.ServicerContext
    ) -> agent_pb2.UploadResponse:
        chunks = iter(request_iterator)
        first = next(chunks, None)
        if first is None or not first.sha256:
            raise UploadConflictError("the first upload chunk must carry sha256 and total_size")
        status = self._store.status(first.sha256)
        if status.present:  # no upload slot needed to say so
            return agent_pb2.UploadResponse(sha256=first.sha256, size_bytes=status.size_bytes, received_bytes=0)
        self.holds.admit(_hold_token(context))
        with self._uploads.hold(_peer_host(context), "Upload", context) as ticket:
            return self._upload(first, ticket.watched(chunks))

    def _upload(
        self, first: agent_pb2.UploadChunk, chunks: Iterator[agent_pb2.UploadChunk]
    ) -> agent_pb2.UploadResponse:
        upload = self._store.begin_upload(first.sha256, first.total_size, first.offset)
        if upload is None:  # another client's upload of this model finished meanwhile
            size = self._store.status(first.sha256).size_bytes
            return agent_pb2.UploadResponse(sha256=first.sha256, size_bytes=size, received_bytes=0)
        committed = False
        try:
            upload.write(first.data)
            for chunk in chunks:
                upload.write(chunk.data)
            size = upload.commit()
            committed = True
        finally:
            if not committed:
                upload.abort()
        return agent_pb2.UploadResponse(sha256=upload.sha, size_bytes=size, received_bytes=upload.received)

    # -- sessions ----------------------------------------------------------------------------------------
    @rpc
    def Load(self, request: agent_pb2.LoadRequest, context: grpc.ServicerContext) -> agent_pb2.LoadResponse:
        started = time.perf_counter()
        owner = _owner(context)
        options = LoadOptions.from_request(request)
        client = shown(request.client, MAX_CLIENT_NAME) if request.client else _peer_host(context)
        hold = self.holds.admit(_hold_token(context))
        taken = None
        if request.exclusive and hold is None:  # the board for as long as this session lives
            taken, _ = self.holds.take(client, 0.0, session_id="opening")
            hold = taken
        lease_s = request.lease_s
        if taken is not None:  # an exclusive session's lease is a hold's: at most --max-hold-seconds
            lease_s = min(lease_s or self._config.default_lease_s, self._config.max_hold_s)
        try:
            session = self._sessions.open(
                request.model_sha256, options, lease_s, client, owner, hold.id if hold else ""
            )
        except BaseException:
            if taken is not None:
                self.holds.release(taken.id)
            raise
        if taken is not None:
            self.holds.bind(taken.id, session.id)
        return agent_pb2.LoadResponse(
            session_id=session.id,
            header=session.header,
            backend=session.backend,
            lease_s=session.lease_s,
            load_time_s=time.perf_counter() - started,
            hold_id=hold.id if hold else "",
        )

    @rpc
    def KeepAlive(
        self, request: agent_pb2.SessionRequest, context: grpc.ServicerContext
    ) -> agent_pb2.KeepAliveResponse:
        session = self._sessions.get(request.session_id, _owner(context))
        token = _hold_token(context)
        if token:  # a holder's keep-alive renews its hold too; a lapsed one shows at its next run
            with contextlib.suppress(UnknownHoldError):
                self.holds.renew(token)
        return agent_pb2.KeepAliveResponse(lease_remaining_s=session.remaining_s())

    @rpc
    def Unload(self, request: agent_pb2.SessionRequest, context: grpc.ServicerContext) -> agent_pb2.UnloadResponse:
        self._sessions.close(request.session_id, _owner(context))
        return agent_pb2.UnloadResponse()

    @rpc
    def ListSessions(
        self, request: agent_pb2.ListSessionsRequest, context: grpc.ServicerContext
    ) -> agent_pb2.ListSessionsResponse:
        owner = _owner(context)
        return agent_pb2.ListSessionsResponse(
            sessions=[
                agent_pb2.SessionInfo(
                    session_id=s.id if s.owner == owner else "",  # others' handles are never shown
                    yours=s.owner == owner,
                    model_sha256=s.sha,
                    model_name=s.header.source_model_name,
                    client=s.client,
                    backend=s.backend,
                    created_unix=s.created_unix,
                    last_used_unix=s.last_used_unix,
                    lease_s=s.lease_s,
                    inferences=s.inferences,
                    exclusive=bool(s.hold_id),
                )
                for s in self._sessions.snapshot()
            ]
        )

    # -- inference ---------------------------------------------------------------------------------------
    def _infer(
        self, session: Session, request: agent_pb2.InferRequest, context: grpc.ServicerContext
    ) -> agent_pb2.InferResponse:
        arrays = [from_tensor(t) for t in request.inputs]
        formats = [f or None for f in request.data_format] or None
        passes = list(request.pass_through) or None
        feeds = session.adapter(arrays, formats, passes)
        with self._runs.slot(context.time_remaining()):
            started = time.perf_counter_ns()
            outputs = session.model.run(feeds)
            run_us = (time.perf_counter_ns() - started) / 1000.0
        session.last_feeds = feeds
        session.inferences += 1
        names = [o.name for o in session.header.outputs]
        return agent_pb2.InferResponse(
            outputs=[to_tensor(out, name) for out, name in zip(outputs, names)],
            request_id=request.request_id,
            run_time_us=run_us,
        )

    @rpc
    def Infer(self, request: agent_pb2.InferRequest, context: grpc.ServicerContext) -> agent_pb2.InferResponse:
        with self._sessions.use(request.session_id, _owner(context)) as session:
            self.holds.admit(_hold_token(context), session.hold_id)
            return self._infer(session, request, context)

    @stream_rpc
    def InferStream(
        self, request_iterator: Iterable[agent_pb2.InferRequest], context: grpc.ServicerContext
    ) -> Iterator[agent_pb2.InferResponse]:
        owner = _owner(context)
        token = _hold_token(context)
        with self._streams.hold(_peer_host(context), "InferStream", context) as ticket:
            for request in request_iterator:
                with self._sessions.use(request.session_id, owner) as session:
                    self.holds.admit(token, session.hold_id)
                    response = self._infer(session, request, context)
                ticket.sending()  # the watchdog cancels the call if this send never completes
                yield response
                ticket.sent()

    # -- measurement -------------------------------------------------------------------------------------
    @rpc
    def EvalPerf(self, request: agent_pb2.EvalPerfRequest, context: grpc.ServicerContext) -> agent_pb2.EvalPerfResponse:
        asked = PerfOptions.from_request(request)
        options = replace(asked, runs=min(asked.runs, MAX_PERF_RUNS), warmup=min(asked.warmup, MAX_PERF_RUNS))
        owner = _owner(context)
        with self._sessions.use(request.session_id, owner) as session, self._runs.slot(context.time_remaining()):
            hold = self.holds.admit(_hold_token(context), session.hold_id)
            calls_before = self._sessions.calls_started
            busy_before = self._sessions.busy_outside("", except_session=session.id)
            feeds = session.last_feeds or dummy_feeds(session.header)
            # the request time limit and the client's deadline bound warm-up, timed and profiled runs alike,
            # and a client that goes away stops the measuring (its run slot is free again at once)
            deadline = time.monotonic() + min(self._config.max_request_s, context.time_remaining() or 1e9)
            result = measure(session.model, feeds, options, deadline, cancelled=lambda: not context.is_active())
            if len(result.run_times_us) < options.runs:
                log.warning(
                    "EvalPerf stopped after %d of %d runs: request time limit", len(result.run_times_us), options.runs
                )
            profile = result.profile
            # calls on other sessions that started meanwhile, or were already running: they shared the board
            others = self._sessions.calls_started - calls_before + busy_before
            if others:
                log.warning(
                    "EvalPerf of %s shared the board with %d other call(s): its times include their load",
                    session.client, others,
                )  # fmt: skip
            return agent_pb2.EvalPerfResponse(
                profiled_run_times_us=profile.run_times_us if profile else [],
                run_times_us=result.run_times_us,
                layers=[layer.to_proto() for layer in profile.layers] if profile else [],
                backend=session.backend,
                used_last_inputs=session.last_feeds is not None,
                others_calls=others,
                exclusive=hold is not None,
            )

    @rpc
    def EvalMemory(
        self, request: agent_pb2.SessionRequest, context: grpc.ServicerContext
    ) -> agent_pb2.EvalMemoryResponse:
        with (
            self._sessions.use(request.session_id, _owner(context)) as session,
            self._runs.slot(context.time_remaining()),
        ):
            self.holds.admit(_hold_token(context), session.hold_id)
            report = session.model.memory()
        return report.to_proto(process_rss_bytes=int(psutil.Process().memory_info().rss))

    # -- exclusive holds ---------------------------------------------------------------------------------
    @rpc
    def Hold(self, request: agent_pb2.HoldRequest, context: grpc.ServicerContext) -> agent_pb2.HoldResponse:
        if request.hold_id:
            hold = self.holds.renew(request.hold_id)
            drained = 0
        else:
            client = shown(request.client, MAX_CLIENT_NAME) if request.client else _peer_host(context)
            wait_s = min(max(0.0, request.wait_s), self._config.max_request_s, (context.time_remaining() or 1e9) - 0.1)
            hold, drained = self.holds.take(client, request.lease_s, wait_s)
        return agent_pb2.HoldResponse(
            hold_id=hold.id, lease_s=hold.lease_s, expires_unix=hold.expires_unix(), drained_calls=drained
        )

    @rpc
    def Release(self, request: agent_pb2.ReleaseRequest, context: grpc.ServicerContext) -> agent_pb2.ReleaseResponse:
        return agent_pb2.ReleaseResponse(released=self.holds.release(request.hold_id))
