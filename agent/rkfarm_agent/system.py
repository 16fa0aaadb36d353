"""What board this is: platform from the device tree, a stable agent id, versions."""

from __future__ import annotations

import contextlib
import logging
import os
import platform as pyplatform
import re
import secrets
import socket
import sys
from importlib import metadata
from pathlib import Path

import psutil

from rkfarm_agent import __version__
from rkfarm_proto.platforms import NPU_CORES, UNKNOWN, normalize_platform

log = logging.getLogger(__name__)

DEVICE_TREE_COMPATIBLE = Path("/proc/device-tree/compatible")
_SOC = re.compile(r"^rockchip,(r[kv]\d{4}[a-z]?)$")


def platform_from_compatible(raw: bytes) -> str:
    """The Rockchip SoC named in a device-tree ``compatible`` list (NUL-separated), or 'unknown'."""
    for entry in raw.split(b"\0"):
        match = _SOC.match(entry.decode("ascii", "replace").strip().lower())
        if match:
            found = normalize_platform(match.group(1))
            if found:
                return found
    return UNKNOWN


def detect_platform(override: str | None = None) -> tuple[str, str]:
    """(platform, raw compatible string). An override wins; a PC reports 'unknown'."""
    raw = b""
    with contextlib.suppress(OSError):
        raw = DEVICE_TREE_COMPATIBLE.read_bytes()
    compatible = raw.replace(b"\0", b" ").decode("ascii", "replace").strip()
    if override:
        name = normalize_platform(override)
        if name is None and override != UNKNOWN:
            raise ValueError(f"unknown platform {override!r}; known: {', '.join(NPU_CORES)}")
        return name or UNKNOWN, compatible
    return platform_from_compatible(raw), compatible


def stable_agent_id(store_dir: Path) -> str:
    """An id that survives restarts: kept in the store folder, made once from the hostname."""
    path = store_dir / "agent_id"
    try:
        value = path.read_text().strip()
        if value:
            return value
    except OSError:
        pass
    host = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower())[:32].strip("-") or "agent"
    value = f"{host}-{secrets.token_hex(3)}"
    store_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    return value


def versions() -> dict[str, str]:
    """Versions of what the agent runs on, read from package metadata (without importing the packages)."""
    found = {"agent": __version__, "python": sys.version.split()[0]}
    for dist in ("grpcio", "onnxruntime", "numpy", "protobuf"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    found["os"] = f"{pyplatform.system()} {pyplatform.release()} {pyplatform.machine()}"
    return found


def memory_total_bytes() -> int:
    return int(psutil.virtual_memory().total)


def cpu_count() -> int:
    return os.cpu_count() or 1
