"""Assemble and run the agent: gRPC server, health, reflection, store, sessions, mDNS advertiser."""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rkfarm_agent import __version__, system
from rkfarm_agent.advertise import Advertiser
from rkfarm_agent.auth import agent_auth
from rkfarm_agent.backends import available_backends
from rkfarm_agent.config import AgentConfig
from rkfarm_agent.malformed import MalformedRequestInterceptor
from rkfarm_agent.service import AgentService
from rkfarm_agent.sessions import SessionManager
from rkfarm_agent.store import ModelStore
from rkfarm_proto.crypto import Keyring, load_or_create_identity, read_farm_key
from rkfarm_proto.discovery import AgentAdvert
from rkfarm_proto.platforms import NPU_CORES
from rkfarm_proto.transport import THROUGHPUT_OPTIONS, message_limits
from rkfarm_proto.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name


class AgentServer:
    """One agent. ``start()`` returns once it serves; ``stop()`` stops advertising, then drains calls."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.auth = agent_auth(config)  # first: a bad token or certificate file stops the agent right away
        self.platform, self.soc = system.detect_platform(config.platform)
        config.store_dir.mkdir(parents=True, exist_ok=True)
        self.agent_id = config.agent_id or system.stable_agent_id(config.store_dir)
        self.keyring = Keyring(
            [read_farm_key(path) for path in config.farm_key_files],
            load_or_create_identity(config.store_dir / "identity.key"),
        )
        self.store = ModelStore(config.store_dir, config.store_capacity_bytes, config.max_upload_bytes)
        kept, bad = self.store.verify()
        log.info("store %s: %d model(s) verified, %d quarantined", config.store_dir, kept, bad)
        self.sessions = SessionManager(
            self.store,
            self.keyring,
            config.max_sessions,
            config.max_sessions_per_client,
            config.default_lease_s,
            config.max_lease_s,
        )
        self.service = AgentService(
            config, self.store, self.sessions, self.agent_id, self.platform, self.soc, self.keyring
        )
        self.service.auth_mode = self.auth.mode
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self._server: grpc.Server | None = None
        self._advertiser: Advertiser | None = None
        self.port = 0
        self._stopped = threading.Event()

    def _options(self) -> list[tuple[str, int]]:
        return [
            *message_limits(self.config.max_message_bytes),
            *THROUGHPUT_OPTIONS,
            ("grpc.so_reuseport", 0),  # a second agent on the same port must fail, not share it
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ]

    def start(self) -> int:
        # A streaming call holds a worker for its whole life: one thread per allowed stream, plus a reserve
        # so short calls (Info, Load, Infer, KeepAlive) always find one (see limits.StreamGuard).
        threads = self.config.max_streams + self.config.max_uploads + self.config.workers
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rkfarm-rpc"),
            options=self._options(),
            interceptors=[*self.auth.interceptors, MalformedRequestInterceptor()],
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs,
        )
        agent_pb2_grpc.add_AgentServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        host = self.config.host
        address = f"[{host}]:{self.config.port}" if ":" in host else f"{host}:{self.config.port}"
        try:
            if self.auth.credentials is not None:
                port = server.add_secure_port(address, self.auth.credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {exc} (is another agent using the port?)") from None
        if port == 0:
            raise OSError(f"cannot listen on {address} (is another agent using the port?)")
        server.start()
        self._server, self.port = server, port
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "rkfarm-agent %s serving on %s (id %s, platform %s, backends %s, auth %s)",
            __version__, address.rsplit(":", 1)[0] + f":{port}", self.agent_id, self.platform,
            ",".join(available_backends()), self.auth.mode,
        )  # fmt: skip
        if self.config.advertise:
            advert = AgentAdvert(
                agent_id=self.agent_id,
                platform=self.platform,
                npu_cores=NPU_CORES.get(self.platform, 0),
                version=__version__,
                backends=tuple(available_backends()),
                auth=self.service.auth_mode,
            )
            self._advertiser = Advertiser(advert, port, self.config.mdns_interfaces)
            self._advertiser.start()
        return port

    def stop(self, grace_s: float | None = None) -> None:
        """Graceful: stop advertising, refuse new calls, let in-flight ones finish (up to grace_s)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_s if grace_s is None else grace_s
        if self._advertiser is not None:
            self._advertiser.stop()
        self.health.enter_graceful_shutdown()
        if self._server is not None:
            self._server.stop(grace).wait()
        self.sessions.close_all()
        self.service.close()
        log.info("rkfarm-agent stopped")

    def wait(self) -> None:
        self._stopped.wait()
