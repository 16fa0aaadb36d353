"""RemoteRuntime: a package opened on a board agent. Uploads once, keeps the lease alive, reconnects.

If the agent restarts (or the lease expired while the host slept), the next call finds the session gone or
the agent briefly unreachable; the runtime waits for the agent, re-uploads only if the store lost the model,
re-opens the session and retries the call once.

Opening a session is asked again while the agent is unreachable, slow or busy, within the call timeout
(``timeout_s``, default ``RKFARM_TIMEOUT_S`` or 30 s; Load gets 4x). If the agent no longer holds the model when
Load fails (evicted meanwhile, or its stored copy found corrupt and quarantined), the model is uploaded again and
Load retried once.

``exclusive=True`` opens the session with the board's exclusive hold (the agent refuses other clients' runs for
as long as the session lives; its lease is kept short, ``EXCLUSIVE_LEASE_S``, so a host that dies frees the board
soon). ``hold_id`` runs the session under a hold taken before (``AgentClient.hold``, a pool's).
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc
import numpy.typing as npt

from rkfarm.errors import AgentUnavailableError, RemoteError, SessionLostError
from rkfarm.perf import PerfData
from rkfarm.remote.client import AgentClient, gave_up, transient
from rkfarm.remote.discovery import Device
from rkfarm.remote.retry import retry
from rkfarm.remote.stream import LockstepStream
from rkfarm.runtime import Array, Runtime
from rkfarm_proto.package import ModelPackage, pack, sha256_hex
from rkfarm_proto.records import LayerTiming, LoadOptions, MemoryReport, PerfOptions
from rkfarm_proto.tensors import from_tensor
from rkfarm_proto.transport import UNKNOWN_MODEL
from rkfarm_proto.v1 import agent_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")
RECONNECT_WAIT_S = 15.0
EXCLUSIVE_LEASE_S = 15.0  # the session lease an exclusive runtime asks for: renewed every 5 s while it lives


def client_name() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    return f"{user}@{socket.gethostname()}"


def _close_if_alive(ref: weakref.ReferenceType[RemoteRuntime]) -> None:
    runtime = ref()
    if runtime is not None:
        try:
            runtime.close()
        except Exception as exc:  # at interpreter exit nothing is left to report to
            log.debug("closing %s at exit: %s", runtime.where, exc)


class RemoteRuntime(Runtime):
    def __init__(
        self,
        package: ModelPackage,
        device: Device,
        options: LoadOptions,
        lease_s: float = 0.0,
        timeout_s: float | None = None,
        *,
        exclusive: bool = False,
        hold_id: str = "",
        reconnect_s: float = RECONNECT_WAIT_S,
    ) -> None:
        """Upload (if needed) and open ``package`` on ``device``. ``timeout_s``: each call's deadline and how long
        opening is retried (default ``RKFARM_TIMEOUT_S``, else 30 s). ``exclusive``: hold the board while the
        session lives; ``hold_id``: run under that hold (see the module docstring); ``reconnect_s``: how long a
        call waits for a lost agent to come back before failing (a pool gives up on a vanished board sooner)."""
        self.device = device
        self.where = f"agent {device.agent_id} @ {device.address} ({device.platform})"
        _, self._blob = pack(package.header, package.payload)
        self._sha = sha256_hex(self._blob)
        self._options = options
        self._exclusive = exclusive
        self._reconnect_s = reconnect_s
        self._lease_s = lease_s or (EXCLUSIVE_LEASE_S if exclusive else 0.0)
        self._client = AgentClient(device.address, timeout_s=timeout_s)
        if hold_id:
            self._client.use_hold(hold_id)
        self.hold_id = hold_id
        self._lock = threading.Lock()
        self._session_id = ""
        self.uploaded_bytes = 0
        self._closed = threading.Event()
        self._stream: LockstepStream | None = None
        started = time.monotonic()
        try:
            self._open()
        except AgentUnavailableError as exc:
            self._client.close()
            raise gave_up(exc, time.monotonic() - started) from None
        except BaseException:
            self._client.close()
            raise
        self._keeper = threading.Thread(target=self._keep_alive_loop, name="rkfarm-lease", daemon=True)
        self._keeper.start()
        # A script that never calls release() (or close()) still unloads its session when the interpreter exits,
        # instead of leaving it on the board until the lease runs out and counting against its session limit.
        self._at_exit = weakref.finalize(self, _close_if_alive, weakref.ref(self))

    # -- session lifecycle -------------------------------------------------------------------------------
    def _open(self, until: float | None = None) -> None:
        """Upload the model unless the agent has it, then open a session: Load is asked again while the agent is
        unreachable, slow or busy, until ``until`` (default: 4x the call timeout from now), and once more after
        uploading the model again if the agent no longer holds it."""
        until = until if until is not None else time.monotonic() + 4 * self._client.timeout_s
        self.uploaded_bytes += self._client.ensure_model(self._blob, self._sha)
        request = self._options.to_request(self._sha, self._lease_s, client_name())
        request.exclusive = self._exclusive
        try:
            response = self._load(request, until)
        except RemoteError as exc:
            if not self._model_dropped(exc):
                raise
            log.warning("%s; uploading the model again and retrying once", exc)
            self.uploaded_bytes += self._client.ensure_model(self._blob, self._sha)
            response = self._load(request, until)
        with self._lock:
            self._session_id = response.session_id
            self._lease_granted = response.lease_s
        if self._exclusive and not response.hold_id:  # an agent from before holds ignores the request
            with contextlib.suppress(RemoteError):
                self._client.unload(response.session_id)
            raise RemoteError(
                f"{self.where} cannot hold the board exclusively (rkfarm-agent {self.device.version or '?'} predates "
                "exclusive holds): upgrade the agent, or run without exclusive=True"
            )
        if response.hold_id and response.hold_id != self.hold_id:
            self.hold_id = response.hold_id
            self._client.use_hold(response.hold_id)
        log.info(
            "session %s on %s (%s), lease %.0f s%s",
            response.session_id[:8],
            self.where,
            response.backend,
            response.lease_s,
            ", exclusive" if response.hold_id else "",
        )

    def _load(self, request: agent_pb2.LoadRequest, until: float) -> agent_pb2.LoadResponse:
        return retry(
            lambda: self._client.load(request, until), until=until, retryable=transient, what=f"Load on {self.where}"
        )

    def _model_dropped(self, exc: RemoteError) -> bool:
        """Load failed because the agent no longer holds the model: it says so (unknown-model: evicted since the
        upload, or its stored copy failed verification and was quarantined), or, as agents before issue 11 did for
        a quarantined copy, it refused the model as invalid (INVALID_ARGUMENT, no error kind) and no longer
        lists it."""
        if exc.kind == UNKNOWN_MODEL:
            return True
        if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
            return False
        try:
            return not self._client.model_status(self._sha).present
        except RemoteError:
            return False

    def _reopen(self, until: float) -> None:
        if not self._client.wait_ready(max(0.0, until - time.monotonic())):
            raise AgentUnavailableError(
                f"agent at {self.device.address} did not come back within {self._reconnect_s:.0f} s"
            )
        self._open()

    def _call(self, fn: Callable[[str], T]) -> T:
        """Run fn(session_id); on a lost session or a restarting agent, re-open and retry for RECONNECT_WAIT_S.

        A restart has a window where the old connection still looks usable; a re-open or retry that lands
        in it fails the same way, so the cycle repeats until the deadline instead of giving up at once.
        """
        try:
            return fn(self._session_id)
        except (SessionLostError, AgentUnavailableError) as exc:
            if self._closed.is_set():
                raise
            log.warning("%s; re-opening the session on %s", exc, self.device.address)
        until = time.monotonic() + self._reconnect_s

        def again() -> T:
            self._reopen(until)
            return fn(self._session_id)

        def reconnectable(exc: Exception) -> bool:
            return isinstance(exc, (SessionLostError, AgentUnavailableError)) and not self._closed.is_set()

        return retry(again, until=until, retryable=reconnectable, what=f"re-opening the session on {self.where}")

    def _keep_alive_loop(self) -> None:
        while not self._closed.wait(max(0.2, self._lease_granted / 3)):
            try:
                self._client.keep_alive(self._session_id)
            except RemoteError as exc:  # the next real call will re-open; just note it
                log.debug("keep-alive failed: %s", exc)

    # -- Runtime -----------------------------------------------------------------------------------------
    def inference(
        self,
        inputs: Sequence[npt.ArrayLike],
        data_format: str | Sequence[str | None] | None = None,
        inputs_pass_through: Sequence[int | bool] | None = None,
    ) -> list[Array]:
        return self._call(lambda sid: self._infer_once(sid, inputs, data_format, inputs_pass_through))

    def _infer_once(
        self,
        session_id: str,
        inputs: Sequence[npt.ArrayLike],
        data_format: str | Sequence[str | None] | None,
        inputs_pass_through: Sequence[int | bool] | None,
    ) -> list[Array]:
        """One inference on the persistent lock-step stream (re-opened after any error)."""
        request = AgentClient.infer_request(session_id, inputs, data_format, inputs_pass_through)
        with self._lock:
            if self._stream is None or self._stream.broken:
                if self._stream is not None:
                    self._stream.close()
                self._stream = self._client.lockstep()
            response = self._stream.call(request)
        return [from_tensor(t) for t in response.outputs]

    def eval_perf(self, options: PerfOptions) -> PerfData:
        response = self._call(lambda sid: self._client.eval_perf(sid, options))
        layers = [LayerTiming.from_proto(layer) for layer in response.layers]
        note = ", exclusive" if response.exclusive else ""
        if response.others_calls:
            note = f", shared with {response.others_calls} call(s) of others (their load is in these times)"
            log.warning(
                "eval_perf on %s ran while %d call(s) of other clients ran there: the times include their load; "
                "init_runtime(..., exclusive=True) holds the board for the measurement",
                self.where, response.others_calls,
            )  # fmt: skip
        return PerfData(
            run_times_us=list(response.run_times_us),
            layers=layers,
            where=f"{self.where}, {response.backend}{note}",
            profiled_run_times_us=list(response.profiled_run_times_us),
        )

    def eval_memory(self) -> MemoryReport:
        return MemoryReport.from_proto(self._call(self._client.eval_memory))

    def versions(self) -> str:
        info = self._client.info()
        runs_on = [v for k, v in sorted(info.versions.items()) if k.startswith("backend.")]
        return (
            f"DRV: rkfarm-agent {info.agent_version} on {info.agent_id} ({info.platform}, "
            f"backends {','.join(info.backends)}: {'; '.join(runs_on) or 'versions not reported'})"
        )

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def client(self) -> AgentClient:
        return self._client

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._at_exit.detach()
        if self._stream is not None:
            self._stream.close()
        try:
            self._client.unload(self._session_id)
        except RemoteError as exc:
            log.debug("unload: %s", exc)
        finally:
            self._client.close()
