"""What one connection may cost the agent before it proves anything: gRPC server options, and file descriptors.

Measured with 1000 raw sockets that send only the HTTP/2 preface (tests/test_transport_hardening.py):

* **Socket reads.** ``THROUGHPUT_OPTIONS`` starts every connection at a 4 MiB read chunk (1 MiB at least),
  so each idle connection held about 270 KiB resident: +270 MiB for 1000 of them. The agent keeps only
  the 16 MiB ceiling: gRPC grows a connection's read size while reads fill it, so large requests are read
  as fast (measured on loopback, 8 MiB and 100 MiB messages), and an idle connection costs about 15 KiB.
* **Count.** ``grpc.max_allowed_incoming_connections`` caps open connections, handshakes included; more
  are closed at accept. The agent also raises its soft open-file limit to fit them.
* **Time.** A connection must finish its handshake (TLS and the client's HTTP/2 SETTINGS) within
  ``handshake_timeout_s``: a preface-only connection otherwise lives for gRPC's default 120 s. One that has
  carried no call for ``connection_idle_s`` is sent GOAWAY; gRPC clients reconnect on their next call.
  Keep-alive pings (a peer that stops answering is dropped within 30 s) find dead peers.
* **Giving memory back.** What closed connections freed stays in glibc's per-thread arenas: RSS crept up by
  another 20-50 MiB over five floods of 1000 (TLS handshakes most). ``HeapTrimmer`` returns it to the
  kernel once RSS has grown by 16 MiB since the last look (memtrim.py).
"""

from __future__ import annotations

import logging
import resource

from rkfarm_agent.config import AgentConfig
from rkfarm_proto.transport import THROUGHPUT_OPTIONS, message_limits

log = logging.getLogger(__name__)

MAX_READ_CHUNK = "grpc.experimental.tcp_max_read_chunk_size"
FD_RESERVE = 256  # files the agent opens besides connections: store, models, logs, mDNS, eventfds


def server_options(config: AgentConfig) -> list[tuple[str, int]]:
    """The gRPC server's channel arguments. Each name once: for a repeated name gRPC keeps the first."""
    return [
        *message_limits(config.max_message_bytes),
        (MAX_READ_CHUNK, dict(THROUGHPUT_OPTIONS)[MAX_READ_CHUNK]),
        ("grpc.so_reuseport", 0),  # a second agent on the same port must fail, not share it
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.max_allowed_incoming_connections", config.max_connections),
        ("grpc.server_handshake_timeout_ms", round(config.handshake_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", round(config.connection_idle_s * 1000)),
    ]


def check_transport_limits(config: AgentConfig) -> None:
    """Refuse values gRPC would misread (zero or negative means 'no limit' or 'close at once' to it)."""
    if config.max_connections < 1:
        raise ValueError(f"--max-connections must be at least 1, not {config.max_connections}")
    for flag, value in (
        ("--handshake-timeout-seconds", config.handshake_timeout_s),
        ("--connection-idle-seconds", config.connection_idle_s),
    ):
        if not 0.001 <= value <= 2**31 / 1000:
            raise ValueError(f"{flag} must be between 0.001 and {2**31 // 1000} seconds, not {value}")


def ensure_file_limit(max_connections: int) -> int:
    """Raise the soft open-file limit so max_connections sockets fit; returns the limit in force.

    Only the soft limit moves, never above the hard one (no privilege needed); if the hard limit is too low,
    the agent still starts and says so: accepts beyond it fail and gRPC retries them.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError) as exc:
                log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
        if soft < wanted:
            log.warning(
                "open-file limit %d is below --max-connections %d plus %d for the agent's own files; "
                "raise it (systemd: LimitNOFILE=) or lower --max-connections",
                soft, max_connections, FD_RESERVE,
            )  # fmt: skip
    return soft
