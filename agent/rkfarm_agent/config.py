"""The agent's options, declared once with their defaults; the CLI and the env file fill them in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rkfarm_proto.transport import MAX_MESSAGE_BYTES

DEFAULT_PORT = 50551
MiB = 1024 * 1024
GiB = 1024 * MiB
PARTIAL_MAX_AGE_S = 3600.0  # an unfinished upload idle this long is deleted (store.py)


def _cpus() -> int:
    from rkfarm_agent.system import cpu_count

    return cpu_count()


@dataclass
class AgentConfig:
    """Everything `rkfarm-agent serve` can be told. Sizes in bytes, times in seconds."""

    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT  # 0 picks a free port (tests)
    store_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "rkfarm-agent")
    store_capacity_bytes: int = 2 * GiB
    max_upload_bytes: int = 512 * MiB
    max_message_bytes: int = MAX_MESSAGE_BYTES  # one inference request or response
    max_sessions: int = 16
    max_sessions_per_client: int = 8
    default_lease_s: float = 60.0
    max_lease_s: float = 3600.0
    max_hold_s: float = 3600.0  # longest lease of an exclusive hold, or of an exclusive session (holds.py)
    max_request_s: float = 120.0  # EvalPerf and other long calls stop here
    max_concurrent_rpcs: int = 256
    workers: int = 16  # threads for short calls, on top of one per allowed stream (max_streams)
    max_concurrent_runs: int = field(default_factory=lambda: 2 * _cpus())  # model runs at once
    max_run_wait_s: float = 10.0  # a call waits at most this long for a run slot, then RESOURCE_EXHAUSTED
    max_streams: int = 64  # InferStream calls open at once; each holds a thread while open
    max_streams_per_client: int = 32
    max_uploads: int = 8  # uploads at once (half of them per client); each holds a thread too
    stream_stall_s: float = 60.0  # a stream whose client reads no response for this long is cancelled
    advertise: bool = True
    mdns_interfaces: list[str] = field(default_factory=list)  # empty: all interfaces
    agent_id: str | None = None  # default: stable id kept in the store
    tags: dict[str, str] = field(default_factory=dict)  # free-form labels pools select by (--tag lab=2 --tag camera)
    platform: str | None = None  # default: from /proc/device-tree/compatible
    grace_s: float = 10.0  # SIGTERM: time given to in-flight calls
    farm_key_files: list[Path] = field(default_factory=list)  # keys that open encrypted packages
    # Access control (auth.py). Paths only: the token itself never appears in argv or the config.
    token_file: Path | None = None  # bearer token every call must carry
    tls_cert: Path | None = None  # PEM certificate (chain) of the agent
    tls_key: Path | None = None  # its private key, mode 0600
    tls_client_ca: Path | None = None  # mTLS: clients need a certificate signed by this CA
    open_health: bool = False  # health and reflection answer without a token
    # Encrypted packages: the highest level this agent opens (crypto.LEVELS; level 3 needs 128 MiB per Load).
    max_crypt_level: int = 3
    # Store disk bounds (store.py): partials and quarantine count against store_capacity_bytes too.
    partial_max_age_s: float = PARTIAL_MAX_AGE_S  # an upload with no write for this long is pruned
    # Transport bounds (transport_limits.py): what connections may cost before they carry an authorized call.
    max_connections: int = 1024  # open connections, handshakes included; more are closed at accept
    handshake_timeout_s: float = 10.0  # TLS and HTTP/2 SETTINGS must arrive within this
    connection_idle_s: float = 300.0  # a connection with no call for this long is closed (clients reconnect)
