"""The agent's options, declared once with their defaults; the CLI and the env file fill them in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 50551
MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass
class AgentConfig:
    """Everything `rkfarm-agent serve` can be told. Sizes in bytes, times in seconds."""

    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT  # 0 picks a free port (tests)
    store_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "rkfarm-agent")
    store_capacity_bytes: int = 2 * GiB
    max_upload_bytes: int = 512 * MiB
    max_message_bytes: int = 128 * MiB  # one inference request or response
    max_sessions: int = 16
    max_sessions_per_client: int = 8
    default_lease_s: float = 60.0
    max_lease_s: float = 3600.0
    max_request_s: float = 120.0  # EvalPerf and other long calls stop here
    max_concurrent_rpcs: int = 256
    workers: int = 32
    advertise: bool = True
    mdns_interfaces: list[str] = field(default_factory=list)  # empty: all interfaces
    agent_id: str | None = None  # default: stable id kept in the store
    platform: str | None = None  # default: from /proc/device-tree/compatible
    grace_s: float = 10.0  # SIGTERM: time given to in-flight calls
    farm_key_files: list[Path] = field(default_factory=list)  # keys that open encrypted packages
