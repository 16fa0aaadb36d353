"""Finding agents: mDNS browsing, plus a static inventory for networks where multicast does not reach.

Sources, merged by agent id:
  * mDNS: ``_rkfarm._tcp.local.`` on all interfaces, or only those in ``RKFARM_MDNS_INTERFACES``
    (comma-separated addresses, e.g. ``127.0.0.1`` in tests);
  * ``RKFARM_AGENTS``: comma-separated ``host:port`` list;
  * an inventory file (``RKFARM_INVENTORY``, default ``~/.config/rkfarm/agents.txt``): one ``host:port`` per
    line, ``#`` comments allowed. Inventory agents are asked for their id and platform with the Info call.

An agent's TXT record says which credentials it wants (``auth``); :func:`resolve` refuses, with what to set,
an agent whose requirements this host cannot meet (see :mod:`rkfarm.remote.credentials`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rkfarm.errors import AgentUnavailableError, RemoteError
from rkfarm.remote.client import AgentClient, default_timeout_s, gave_up
from rkfarm.remote.credentials import Credentials, check_agent_auth
from rkfarm_proto.discovery import SERVICE_TYPE, AgentAdvert

log = logging.getLogger(__name__)

DEFAULT_INVENTORY = Path.home() / ".config" / "rkfarm" / "agents.txt"


@dataclass(frozen=True)
class Device:
    """An agent the host can use."""

    agent_id: str
    address: str  # host:port
    platform: str
    npu_cores: int
    version: str
    backends: tuple[str, ...]
    auth: str
    source: str  # mdns | inventory | address

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mdns_interfaces() -> list[str]:
    return [i.strip() for i in os.environ.get("RKFARM_MDNS_INTERFACES", "").split(",") if i.strip()]


def browse_mdns(
    timeout_s: float = 2.0, interfaces: list[str] | None = None, stop_when: str | None = None
) -> list[Device]:
    """Agents answering on mDNS within ``timeout_s`` (returns early once ``stop_when`` id is seen)."""
    from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

    chosen = mdns_interfaces() if interfaces is None else interfaces
    v6 = any(":" in i for i in chosen)
    zc = Zeroconf(
        interfaces=chosen or InterfaceChoice.All,
        ip_version=(IPVersion.V6Only if v6 and all(":" in i for i in chosen) else IPVersion.V4Only)
        if chosen
        else IPVersion.All,
    )
    found: dict[str, Device] = {}
    names: set[str] = set()
    lock = threading.Lock()
    seen = threading.Event()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if state_change is ServiceStateChange.Added:
            with lock:
                names.add(name)
            if stop_when and name.startswith(stop_when + "."):
                seen.set()

    browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
    try:
        seen.wait(timeout_s)
        with lock:
            pending = sorted(names)
        for name in pending:
            info = zc.get_service_info(SERVICE_TYPE, name, timeout=1000)
            if info is None or not info.parsed_addresses():
                continue
            advert = AgentAdvert.from_txt(info.properties)
            address = _pick_address(info.parsed_addresses())
            host = f"[{address}]" if ":" in address else address
            agent_id = advert.agent_id or name.removesuffix("." + SERVICE_TYPE)
            found[agent_id] = Device(
                agent_id=agent_id,
                address=f"{host}:{info.port}",
                platform=advert.platform,
                npu_cores=advert.npu_cores,
                version=advert.version,
                backends=advert.backends,
                auth=advert.auth,
                source="mdns",
            )
    finally:
        browser.cancel()
        zc.close()
    return sorted(found.values(), key=lambda d: d.agent_id)


def _pick_address(addresses: list[str]) -> str:
    v4 = [a for a in addresses if ":" not in a]
    return (v4 or addresses)[0]


def inventory_addresses(path: Path | None = None) -> list[str]:
    """host:port entries from RKFARM_AGENTS and the inventory file."""
    entries = [a.strip() for a in os.environ.get("RKFARM_AGENTS", "").split(",") if a.strip()]
    file = path or Path(os.environ.get("RKFARM_INVENTORY", str(DEFAULT_INVENTORY)))
    try:
        for line in file.read_text().splitlines():
            entry = line.split("#", 1)[0].strip()
            if entry:
                entries.append(entry.split()[0])
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
    )


def _probe_many(addresses: Iterable[str], timeout_s: float) -> list[Device]:
    addresses = list(addresses)
    if not addresses:
        return []

    def attempt(address: str) -> Device | None:
        try:
            return probe(address, timeout_s, source="inventory")
        except RemoteError as exc:
            log.warning("inventory agent %s did not answer: %s", address, exc)
            return None

    with ThreadPoolExecutor(max_workers=min(16, len(addresses))) as pool:
        return [d for d in pool.map(attempt, addresses) if d is not None]


def list_devices(timeout_s: float = 2.0, use_mdns: bool = True, stop_when: str | None = None) -> list[Device]:
    """Every agent found by mDNS and in the inventory, one entry per agent id (mDNS wins ties)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        inv = pool.submit(_probe_many, inventory_addresses(), min(timeout_s, 3.0))
        mdns = browse_mdns(timeout_s, stop_when=stop_when) if use_mdns else []
        merged = {d.agent_id: d for d in inv.result()}
    merged.update({d.agent_id: d for d in mdns})
    log.debug("discovery: %d agent(s) in %.2f s", len(merged), time.perf_counter() - started)
    return sorted(merged.values(), key=lambda d: d.agent_id)


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
        for d in devices:
            if d.agent_id == device_id:
                return usable(d)
        known = ", ".join(d.agent_id for d in devices) or "none"
        raise RemoteError(
            f"no agent with id {device_id!r} found (found: {known}); give host:port, or add it to RKFARM_AGENTS "
            "or the inventory file if multicast does not reach it"
        )
    # an agent of the target's platform wins; only without one may an agent that reports no platform (a PC) serve
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


def usable(device: Device, credentials: Credentials | None = None) -> Device:
    """The device, or RemoteError saying what to set if this host cannot meet the auth it advertises."""
    check_agent_auth(credentials or Credentials.load(), device.address, device.agent_id, device.auth)
    return device


def format_devices(devices: list[Device]) -> str:
    if not devices:
        return "no agents found (is `rkfarm-agent serve` running? is multicast blocked? try RKFARM_AGENTS=host:port)"
    rows = [("ID", "ADDRESS", "PLATFORM", "NPU", "BACKENDS", "AUTH", "VERSION", "FOUND BY")]
    rows += [
        (d.agent_id, d.address, d.platform, str(d.npu_cores), ",".join(d.backends), d.auth, d.version, d.source)
        for d in devices
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
