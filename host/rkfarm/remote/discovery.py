"""Finding agents: mDNS browsing, plus a static inventory for networks where multicast does not reach.

Sources, merged by agent id:
  * mDNS: ``_rkfarm._tcp.local.`` on all interfaces, or only those in ``RKFARM_MDNS_INTERFACES``
    (comma-separated addresses, e.g. ``127.0.0.1`` in tests), read from the process's one registry
    (:mod:`rkfarm.remote.registry`: one zeroconf browser, kept current; never a browse per call). Two agents
    claiming one id are both listed, each with the other's address in ``conflict``, and an id they share is
    refused;
  * ``RKFARM_AGENTS``: comma-separated ``host:port`` list;
  * an inventory file (``RKFARM_INVENTORY``, default ``~/.config/rkfarm/agents.txt``): one ``host:port`` per
    line, ``#`` comments allowed. Inventory agents are asked for their id and platform with the Info call.

An agent's TXT record says which credentials it wants (``auth``); :func:`resolve` refuses, with what to set,
an agent whose requirements this host cannot meet (see :mod:`rkfarm.remote.credentials`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rkfarm.errors import AgentAuthError, AgentUnavailableError, RemoteError
from rkfarm.remote.client import AgentClient, default_timeout_s, gave_up
from rkfarm.remote.credentials import Credentials, check_agent_auth
from rkfarm.remote.device import Device, mdns_interfaces

log = logging.getLogger(__name__)

DEFAULT_INVENTORY = Path.home() / ".config" / "rkfarm" / "agents.txt"
DEFAULT_PORT = 50551  # what `rkfarm-agent serve` listens on unless told otherwise (rkfarm_agent.config)


def browse_mdns(
    timeout_s: float = 2.0, interfaces: list[str] | None = None, stop_when: str | None = None
) -> list[Device]:
    """Agents mDNS finds on ``interfaces`` (default ``RKFARM_MDNS_INTERFACES``, else all): the process's registry
    once it has settled, waiting at most ``timeout_s`` (less once ``stop_when``'s id is known, or at once when it
    settled before)."""
    from rkfarm.remote.registry import shared_registry

    registry = shared_registry(interfaces)
    registry.settle(timeout_s, want=stop_when)
    return registry.devices()


def _pick_address(addresses: list[str]) -> str:
    v4 = [a for a in addresses if ":" not in a]
    return (v4 or addresses)[0]


def agent_address(entry: str, where: str) -> str:
    """``host:port`` for an agent address: an IP address or name without a port gets the default port; an empty
    or invalid port (``127.0.0.1:``, which gRPC would dial on port 443) is refused naming ``where``."""
    text = entry.strip()
    if text.startswith("["):  # [v6]:port or [v6]
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None if not rest else "bad"
        host = f"[{host}]"
    elif text.count(":") > 1:  # a bare IPv6 address: no port can be told apart
        host, port = f"[{text}]", None
    else:
        host, sep, port_text = text.partition(":")
        port = port_text if sep else None
    if not host.strip("[]"):
        raise RemoteError(f"{where}: {entry!r} names no host; write host:port, e.g. 192.168.1.40:{DEFAULT_PORT}")
    if port is None:
        return f"{host}:{DEFAULT_PORT}"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RemoteError(
            f"{where}: {entry!r} has no valid port after ':'; write host:port, e.g. {host}:{DEFAULT_PORT} "
            f"(or leave the port out for {DEFAULT_PORT})"
        )
    return f"{host}:{int(port)}"


def inventory_addresses(path: Path | None = None) -> list[str]:
    """host:port entries from RKFARM_AGENTS and the inventory file (no port: the default one)."""
    entries = [agent_address(a, "RKFARM_AGENTS") for a in os.environ.get("RKFARM_AGENTS", "").split(",") if a.strip()]
    file = path or Path(os.environ.get("RKFARM_INVENTORY", str(DEFAULT_INVENTORY)))
    try:
        for number, line in enumerate(file.read_text().splitlines(), start=1):
            entry = line.split("#", 1)[0].strip()
            if entry:
                entries.append(agent_address(entry.split()[0], f"{file}:{number}"))
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot read inventory %s: %s", file, exc)
    return list(dict.fromkeys(entries))


def probe(
    address: str, timeout_s: float | None = None, source: str = "address", credentials: Credentials | None = None
) -> Device:
    """Ask the agent at host:port who it is (with the host's credentials: Info needs them too).

    Asked again while the agent is unreachable, slow or busy, for ``timeout_s`` (default ``RKFARM_TIMEOUT_S``,
    else 30 s); each attempt may use all the time left, so an agent that is merely slow answers the first one.
    Credential errors and refusals that waiting does not lift are raised at once.
    """
    wait_s = default_timeout_s(timeout_s)
    with AgentClient(address, timeout_s=wait_s, credentials=credentials) as client:
        try:
            info = client.info_within(wait_s)
        except AgentUnavailableError as exc:
            raise gave_up(exc, wait_s) from None
    return Device(
        agent_id=info.agent_id,
        address=address,
        platform=info.platform,
        npu_cores=info.npu_cores,
        version=info.agent_version,
        backends=tuple(info.backends),
        auth=info.auth,
        source=source,
        tags=dict(info.tags),
        mem_free_bytes=int(info.memory_available_bytes) if info.memory_available_bytes else None,
        load=float(info.load_per_cpu) if info.memory_available_bytes else None,  # both unset: an older agent
        sessions=int(info.sessions_open) if info.memory_available_bytes else None,
        holder=info.hold.client if info.HasField("hold") else "",
        held_until=info.hold.expires_unix if info.HasField("hold") else 0.0,
        npu_ready=info.system.npu_ready if info.HasField("system") else None,
        npu_missing=tuple(info.system.npu_missing) if info.HasField("system") else (),
    )


def _probe_many(addresses: Iterable[str], timeout_s: float) -> list[Device]:
    addresses = list(addresses)
    if not addresses:
        return []

    def attempt(address: str) -> Device | None:
        try:
            return probe(address, timeout_s, source="inventory")
        except AgentAuthError as exc:  # it answered: it wants credentials this host did not present
            log.warning("inventory agent %s needs credentials: %s", address, exc)
            return None
        except RemoteError as exc:
            log.warning("inventory agent %s did not answer: %s", address, exc)
            return None

    with ThreadPoolExecutor(max_workers=min(16, len(addresses))) as pool:
        return [d for d in pool.map(attempt, addresses) if d is not None]


def list_devices(timeout_s: float = 2.0, use_mdns: bool = True, stop_when: str | None = None) -> list[Device]:
    """Every agent found by mDNS and in the inventory: one entry per agent id (mDNS wins ties), except that agents
    advertising the same id by mDNS are all listed (their ``conflict`` names the others)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        inv = pool.submit(_probe_many, inventory_addresses(), min(timeout_s, 3.0))
        mdns = browse_mdns(timeout_s, stop_when=stop_when) if use_mdns else []
        merged = {d.agent_id: d for d in inv.result()}
    for d in mdns:
        merged.pop(d.agent_id, None)
    found = [*merged.values(), *mdns]
    log.debug("discovery: %d agent(s) in %.2f s", len(found), time.perf_counter() - started)
    return sorted(found, key=lambda d: (d.agent_id, d.dup, d.address))


def looks_like_address(device_id: str) -> bool:
    host, sep, port = device_id.rpartition(":")
    return bool(sep and host and port.isdigit())


def resolve(
    device_id: str | None, target: str | None, timeout_s: float = 2.0, call_timeout_s: float | None = None
) -> Device:
    """The agent for ``init_runtime(target, device_id)``: an address, an id, or the only one found.

    ``timeout_s`` is the mDNS browse window; ``call_timeout_s`` how long an address is asked (see ``probe``).
    """
    if device_id and looks_like_address(device_id):
        return probe(device_id, call_timeout_s)
    devices = list_devices(timeout_s, stop_when=device_id)
    if device_id:
        claimed = [d for d in devices if d.agent_id == device_id]
        if len(claimed) > 1:
            raise RemoteError(conflict_message(device_id, claimed))
        if claimed:
            return usable(claimed[0])
        known = ", ".join(sorted({d.agent_id for d in devices})) or "none"
        if any(d.source == "mdns" for d in devices):  # multicast reached: the id is what is wrong (or it is down)
            raise RemoteError(
                f"no agent with id {device_id!r} among the {len(devices)} that answered within {timeout_s:g} s "
                f"(found: {known}); check the id with `rkfarm devices`, or give host:port"
            )
        raise RemoteError(
            f"no agent with id {device_id!r} found (found: {known}); give host:port, or add it to RKFARM_AGENTS "
            "or the inventory file if multicast does not reach it"
        )
    # an agent of the target's platform wins; only without one may an agent that reports no platform (a PC) serve
    matching = [d for d in devices if target is None or d.platform == target]
    if not matching:  # a warm registry answers at once: give a board just starting the window to announce itself
        devices = _wait_for_platform(target, timeout_s)
        matching = [d for d in devices if target is None or d.platform == target]
    if target is not None and not matching:
        matching = [d for d in devices if d.platform == "unknown"]
    if len(matching) == 1:
        return usable(matching[0])
    if not matching:
        found = ", ".join(f"{d.agent_id} ({d.platform})" for d in devices) or "none"
        raise RemoteError(
            f"no agent for target {target!r} found (found: {found}); start `rkfarm-agent serve` on the board, "
            "or pass device_id='host:port'"
        )
    ids = ", ".join(d.agent_id for d in matching)
    raise RemoteError(f"several agents match target {target!r} ({ids}): choose one with device_id=")


def _wait_for_platform(target: str | None, timeout_s: float) -> list[Device]:
    """Every agent, once one of platform ``target`` (any, for None) is known or ``timeout_s`` passed."""
    from rkfarm.remote.registry import shared_registry

    shared_registry().settle(timeout_s, want=lambda found: any(target is None or d.platform == target for d in found))
    return list_devices(timeout_s)


def conflict_message(agent_id: str, claimed: list[Device]) -> str:
    """Why an id several agents claim is refused, and what to do."""
    where = ", ".join(
        f"{d.address}" + (f" (advertised as {d.instance!r}: the id was taken)" if d.dup else "") for d in claimed
    )
    return (
        f"{len(claimed)} agents claim the id {agent_id!r}: {where}; rkfarm will not guess which one you mean: "
        "give host:port, or restart one of them with another --id"
    )


def usable(device: Device, credentials: Credentials | None = None) -> Device:
    """The device, or RemoteError saying what to set if this host cannot meet the auth it advertises."""
    check_agent_auth(credentials or Credentials.load(), device.address, device.agent_id, device.auth)
    return device


def _npu_path(d: Device) -> str:
    """ready: vendor .rknn models run on the board's NPU; missing: `rkfarm-agent doctor` there says what lacks."""
    return "-" if d.npu_ready is None else "ready" if d.npu_ready else "missing"


def _row(d: Device) -> tuple[str, ...]:
    tags = ",".join(f"{k}={v}" if v else k for k, v in sorted(d.tags.items())) or "-"
    return (
        d.agent_id, d.address, d.platform, str(d.npu_cores), _npu_path(d), ",".join(d.backends), d.auth, d.version,
        d.source, tags, d.holder or "-",
    )  # fmt: skip


def format_devices(devices: list[Device]) -> str:
    if not devices:
        return "no agents found (is `rkfarm-agent serve` running? is multicast blocked? try RKFARM_AGENTS=host:port)"
    rows: list[tuple[str, ...]] = [
        ("ID", "ADDRESS", "PLATFORM", "NPU", "NPU PATH", "BACKENDS", "AUTH", "VERSION", "FOUND BY", "TAGS", "HELD BY")
    ]
    rows += [_row(d) for d in devices]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    for agent_id in sorted({d.agent_id for d in devices if d.conflict}):
        claimed = [d for d in devices if d.agent_id == agent_id]
        lines.append(f"CONFLICT: {conflict_message(agent_id, claimed)}")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_PORT",
    "Device",
    "agent_address",
    "browse_mdns",
    "conflict_message",
    "format_devices",
    "inventory_addresses",
    "list_devices",
    "looks_like_address",
    "mdns_interfaces",
    "probe",
    "resolve",
    "usable",
]
