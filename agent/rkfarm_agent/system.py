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
from dataclasses import dataclass
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


# -- what the board runs on: Info.system and `rkfarm-agent doctor` --------------------------------------------
# Paths are relative to a root so that tests can lay out a fake board (a device tree, /dev, /sys/class/drm).
RKNPU_MISC = "dev/rknpu"  # the vendor driver's misc device (older BSP kernels)
RKNPU_DRIVER = "rknpu"  # its DRM driver name on newer BSP kernels (/dev/dri/card1, renderD129 on an RK3588)
NPU_DRIVER_VERSION_FILES = ("sys/kernel/debug/rknpu/version", "proc/debug/rknpu/version")
_LIB_VERSION_MARK = b"librknnrt version: "


@dataclass(frozen=True)
class NpuNode:
    """A device node of an NPU driver: its path, the driver behind it, whether this process may open it."""

    path: str
    driver: str
    accessible: bool


@dataclass(frozen=True)
class BoardFacts:
    """What the agent runs on, read without opening any model."""

    machine: str  # uname -m: aarch64 on an RK3588 (also under qemu-user), x86_64 on a PC
    kernel: str  # uname -r
    compatible: list[str]  # /proc/device-tree/compatible entries; empty without a device tree
    model: str  # /proc/device-tree/model
    npu_nodes: list[NpuNode]  # nodes of Rockchip's rknpu driver
    other_accel_nodes: list[NpuNode]  # /dev/accel/* of other drivers (e.g. a mainline NPU driver)
    npu_driver_version: str  # from debugfs when readable (root only), else ""
    librknnrt_path: str
    librknnrt_version: str
    librknnrt_error: str  # why a librknnrt that was found does not load


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


def _driver_of(device: Path) -> str:
    try:
        return Path(os.readlink(device / "driver")).name
    except OSError:
        return ""


def _node(root: Path, rel: str, driver: str) -> NpuNode:
    path = root / rel
    return NpuNode("/" + rel, driver, os.access(path, os.R_OK | os.W_OK))


def npu_nodes(root: Path = Path("/")) -> tuple[list[NpuNode], list[NpuNode]]:
    """(nodes of the rknpu driver, accel nodes of other drivers) that exist under ``root``."""
    found: list[NpuNode] = []
    if (root / RKNPU_MISC).exists():
        found.append(_node(root, RKNPU_MISC, RKNPU_DRIVER))
    drm = root / "sys/class/drm"
    for entry in sorted(drm.iterdir()) if drm.is_dir() else []:
        if "-" in entry.name:  # connectors (card0-HDMI-A-1), not nodes
            continue
        driver = _driver_of(entry / "device")
        compatible = _read_text(entry / "device/of_node/compatible")
        if RKNPU_DRIVER in driver.lower() or RKNPU_DRIVER in compatible.lower():
            rel = f"dev/dri/{entry.name}"
            if (root / rel).exists():
                found.append(_node(root, rel, driver or RKNPU_DRIVER))
    others: list[NpuNode] = []
    accel = root / "sys/class/accel"
    for entry in sorted(accel.iterdir()) if accel.is_dir() else []:
        rel = f"dev/accel/{entry.name}"
        driver = _driver_of(entry / "device")
        if (root / rel).exists() and RKNPU_DRIVER not in driver.lower():
            others.append(_node(root, rel, driver or "unknown"))
    return found, others


_version_cache: dict[tuple[str, int, int], str] = {}


def librknnrt_version(path: str) -> str:
    """The version librknnrt states in its own binary (``librknnrt version: 2.3.0 (...)``), or ""."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _version_cache:
        version = ""
        with contextlib.suppress(OSError), open(path, "rb") as fh:
            data = fh.read()
            at = data.find(_LIB_VERSION_MARK)
            if at >= 0:
                raw = data[at + len(_LIB_VERSION_MARK) : at + len(_LIB_VERSION_MARK) + 120].split(b"\0")[0]
                version = raw.decode("ascii", "replace").strip()
        _version_cache[key] = version
    return _version_cache[key]


def _librknnrt() -> tuple[str, str, str]:
    """(path, version, load error) of the librknnrt the rknnrt backend would use."""
    import ctypes

    from rkfarm_agent.backends.rknnrt import capi

    explicit = os.environ.get("RKFARM_RKNNRT_LIB")
    path = capi.library_path()
    if path is None:
        return ("", "", f"RKFARM_RKNNRT_LIB={explicit} is not a file" if explicit else "")
    error = ""
    if capi.load_library() is None:
        try:
            ctypes.CDLL(path)
            error = "it loads but lacks the rknn_* functions of the C API"
        except OSError as exc:
            error = str(exc)
    resolved = path if os.path.isabs(path) else _loader_path(path)
    return resolved, librknnrt_version(resolved) or capi.seen_version(), error


def _loader_path(name: str) -> str:
    """Where the loader finds a bare library name (ctypes.util.find_library returns one), else the name."""
    for folder in ("/usr/lib", "/usr/lib/aarch64-linux-gnu", "/usr/local/lib", "/usr/lib64", "/lib"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return name


def board_facts(root: Path = Path("/")) -> BoardFacts:
    """Architecture, kernel, device tree, NPU device nodes and driver, librknnrt: what the NPU path needs."""
    uname = os.uname()
    raw = b""
    with contextlib.suppress(OSError):
        raw = (root / "proc/device-tree/compatible").read_bytes()
    compatible = [e.decode("ascii", "replace").strip() for e in raw.split(b"\0") if e.strip()]
    model = _read_text(root / "proc/device-tree/model").replace("\0", "").strip()
    nodes, others = npu_nodes(root)
    driver = next((v for f in NPU_DRIVER_VERSION_FILES if (v := _read_text(root / f).strip())), "")
    lib_path, lib_version, lib_error = _librknnrt()
    return BoardFacts(
        machine=uname.machine, kernel=uname.release, compatible=compatible, model=model, npu_nodes=nodes,
        other_accel_nodes=others, npu_driver_version=driver, librknnrt_path=lib_path, librknnrt_version=lib_version,
        librknnrt_error=lib_error,
    )  # fmt: skip
