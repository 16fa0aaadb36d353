"""Assemble and run the agent: gRPC server, health, reflection, store, sessions, mDNS advertiser."""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health_pb2

from rkfarm_agent import __version__, doctor, system
from rkfarm_agent.advertise import Advertiser, load_per_cpu, memory_available_bytes
from rkfarm_agent.auth import agent_auth
from rkfarm_agent.backends import available_backends
from rkfarm_agent.config import AgentConfig
from rkfarm_agent.introspection import HEALTH_SERVICE, AgentHealth, add_health, add_reflection
from rkfarm_agent.malformed import MalformedRequestInterceptor
from rkfarm_agent.memtrim import HeapTrimmer
from rkfarm_agent.service import AgentService
from rkfarm_agent.sessions import SessionManager
from rkfarm_agent.store import ModelStore
from rkfarm_agent.transport_limits import check_transport_limits, ensure_file_limit, server_options
from rkfarm_proto.crypto import LEVELS, Keyring, load_or_create_identity, read_farm_key
from rkfarm_proto.discovery import AgentAdvert
from rkfarm_proto.platforms import NPU_CORES
from rkfarm_proto.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name


class AgentServer:
    """One agent. ``start()`` returns once it serves; ``stop()`` stops advertising, then drains calls."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        check_transport_limits(config)
        self.auth = agent_auth(config)  # first: a bad token or certificate file stops the agent right away
        self.platform, self.soc = system.detect_platform(config.platform)
        config.store_dir.mkdir(parents=True, exist_ok=True)
        self.agent_id = config.agent_id or system.stable_agent_id(config.store_dir)
        self.keyring = Keyring(
            [read_farm_key(path) for path in config.farm_key_files],
            load_or_create_identity(config.store_dir / "identity.key"),
            max_scrypt_log2_n=max(LEVELS[level].scrypt_log2_n for level in LEVELS if level <= config.max_crypt_level),
        )
        self.store = ModelStore(
            config.store_dir, config.store_capacity_bytes, config.max_upload_bytes, config.partial_max_age_s
        )
        kept, bad = self.store.verify()
        log.info("store %s: %d model(s) verified, %d quarantined", config.store_dir, kept, bad)
        self.sessions = SessionManager(
            self.store,
            self.keyring,
            config.max_sessions,
            config.max_sessions_per_client,
            config.default_lease_s,
            config.max_lease_s,
            max_input_bytes=config.max_message_bytes,
        )
        self.service = AgentService(
            config, self.store, self.sessions, self.agent_id, self.platform, self.soc, self.keyring
        )
        self.service.auth_mode = self.auth.mode
        self.health = AgentHealth()
        self._server: grpc.Server | None = None
        self._advertiser: Advertiser | None = None
        self._trimmer: HeapTrimmer | None = None
        self.port = 0
        self._stopped = threading.Event()

    def start(self) -> int:
        # A streaming call holds a worker for its whole life: one thread per allowed stream, plus a reserve
        # so short calls (Info, Load, Infer, KeepAlive) always find one (see limits.StreamGuard).
        threads = self.config.max_streams + self.config.max_uploads + self.config.workers
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rkfarm-rpc"),
            options=server_options(self.config),
            interceptors=[*self.auth.interceptors, MalformedRequestInterceptor()],
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs,
        )
        agent_pb2_grpc.add_AgentServicer_to_server(self.service, server)
        add_health(self.health, server)
        add_reflection((SERVICE_NAME, HEALTH_SERVICE), server)
        ensure_file_limit(self.config.max_connections)
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
        self._trimmer = HeapTrimmer()
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
                tags=dict(self.config.tags),
                npu_ready=doctor.system_info().npu_ready,
            )
            self._advertiser = Advertiser(advert, port, self.config.mdns_interfaces, self._advert_status)
            self._advertiser.on_state = self._advertise_state
            self.service.holds.on_change = self._advertiser.changed
            self._advertiser.start()
        return port

    def _advert_status(self) -> dict[str, object]:
        """The TXT fields that change while the agent runs (advertise.py announces them when they do)."""
        hold = self.service.holds.current()
        return {
            "mem_free_bytes": memory_available_bytes(),
            "load": load_per_cpu(),
            "sessions": len(self.sessions.snapshot()),
            "holder": hold.client if hold else "",
            "held_until": hold.expires_unix() if hold else 0.0,
        }

    def _advertise_state(self, state: str) -> None:
        self.service.advertise_status = state

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
        if self._trimmer is not None:
            self._trimmer.close()
        log.info("rkfarm-agent stopped")

    def wait(self) -> None:
        self._stopped.wait()
