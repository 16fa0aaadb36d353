"""mDNS advertiser: announce `_rkfarm._tcp.local.` so hosts find the agent without ADB or an IP list.

The TXT record says what a pool chooses by (rkfarm_proto.discovery.AgentAdvert): platform, backends, tags, free
memory, load, open sessions and the exclusive holder. ``status()`` is asked every ``REFRESH_S``; a change of holder,
sessions or tags is announced at once, a drift of free memory or load at most every ``DRIFT_S``, so a farm of a
hundred boards stays quiet on the network.

When another agent on the network already advertises this agent's id, registration fails with zeroconf's
NonUniqueNameException. The agent keeps serving, logs who has the id, and advertises itself under a distinct
instance name with ``dup=1`` in its TXT record, so that hosts see both and refuse the ambiguous id instead of
silently using one of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from rkfarm_proto.discovery import SERVICE_TYPE, AgentAdvert, instance_name

log = logging.getLogger(__name__)

REFRESH_S = 1.0  # how often the dynamic TXT fields are looked at
DRIFT_S = 15.0  # free memory and load alone re-announce at most this often
REGISTER_TIMEOUT_S = 30.0  # probing takes ~1.5 s; a loaded board (100 agents starting on 2 CPUs) takes longer
REGISTER_TRIES = 3
MEM_STEP = 64 << 20  # free memory changes smaller than this (and 5 %) are not worth a packet


def memory_available_bytes() -> int:
    """Memory new sessions could still use (the kernel's MemAvailable)."""
    return int(psutil.virtual_memory().available)


def load_per_cpu() -> float:
    """The 1-minute load average divided by the CPU count (0.0 where the system has no load average)."""
    try:
        return float(os.getloadavg()[0]) / max(1, psutil.cpu_count() or 1)
    except OSError:
        return 0.0


def local_addresses(interfaces: list[str]) -> list[str]:
    """Addresses to announce: the chosen interface addresses, or every non-loopback IPv4/IPv6 one."""
    if interfaces:
        return interfaces
    found = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(addr.address.split("%")[0])
            if not ip.is_loopback and not ip.is_link_local:
                found.append(str(ip))
    return found or ["127.0.0.1"]


def _reason(exc: BaseException) -> str:
    """An exception as a log line can say it: its class and message (zeroconf's often have no message)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Advertiser:
    """Registers the service in a background thread (mDNS probing takes ~1.5 s), keeps its TXT record current,
    and unregisters on stop. ``status()`` returns the dynamic fields (``AgentAdvert`` field names);
    ``state`` says what became of the advertisement ("advertised as ...", "failed: ...", "id conflict: ...")."""

    def __init__(
        self,
        advert: AgentAdvert,
        port: int,
        interfaces: list[str],
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._advert = advert
        self._port = port
        self._interfaces = interfaces
        self._status = status or dict
        self._zc: Any = None
        self._info: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.registered = threading.Event()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._addresses: list[str] = []
        self._conflict = ""
        self.state = "starting"
        self.on_state: Callable[[str], None] = lambda state: None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rkfarm-mdns", daemon=True)
        self._thread.start()

    def changed(self) -> None:
        """Something a pool chooses by changed (holder, sessions): announce it now rather than at the next tick."""
        self._wake.set()

    def _set_state(self, state: str) -> None:
        self.state = state
        self.on_state(state)

    def _run(self) -> None:
        if not self._register():
            return
        announced = self._current()
        last_announce = time.monotonic()
        while not self._stopping.is_set():
            self._wake.wait(REFRESH_S)
            self._wake.clear()
            if self._stopping.is_set():
                return
            advert = self._current()
            due = time.monotonic() - last_announce >= DRIFT_S
            if _material(announced, advert) or (due and _drifted(announced, advert)):
                try:
                    self._update(advert)
                except Exception as exc:  # the next change tries again; the agent serves regardless
                    log.warning("mDNS update failed (%s)", _reason(exc))
                    continue
                announced, last_announce = advert, time.monotonic()

    def _current(self) -> AgentAdvert:
        try:
            fields = self._status()
        except Exception as exc:  # the advertisement must never stop over a status figure
            log.debug("advert status: %s", _reason(exc))
            fields = {}
        return dataclasses.replace(self._advert, **fields)

    def _register(self) -> bool:
        from zeroconf import InterfaceChoice, IPVersion, NonUniqueNameException, Zeroconf

        addresses = local_addresses(self._interfaces)
        v6 = any(":" in a for a in addresses)
        v4 = any(":" not in a for a in addresses)
        version = IPVersion.All if v4 and v6 else IPVersion.V6Only if v6 else IPVersion.V4Only
        try:
            zc = Zeroconf(interfaces=self._interfaces or InterfaceChoice.All, ip_version=version)
        except Exception as exc:  # a board without multicast still serves gRPC; say why it is not found
            self._fail(f"cannot open mDNS sockets on {', '.join(addresses)} ({_reason(exc)})")
            return False
        with self._lock:
            self._zc = zc
            if self._stopping.is_set():
                zc.close()
                return False
        self._addresses = addresses
        advert = self._current()
        name, server = instance_name(advert.agent_id), f"{advert.agent_id}.local."
        for attempt in range(1, REGISTER_TRIES + 1):
            try:
                self._register_as(advert, name, server)
                break
            except NonUniqueNameException:
                owner = self._who_has(name)
                suffix = secrets.token_hex(3)
                alias = f"{advert.agent_id}-dup-{suffix}"
                name, server = instance_name(alias), f"{alias}.local."
                self._advert = advert = dataclasses.replace(advert, dup=True)
                self._conflict = (
                    f"id conflict: another agent on this network already advertises the id {advert.agent_id!r}"
                    f"{f' (at {owner})' if owner else ''}; this agent keeps serving on port {self._port} and is "
                    f"advertised as {name.removesuffix('.' + SERVICE_TYPE)!r} with the conflict flagged, so hosts "
                    "refuse the ambiguous id: restart one of the two with another --id"
                )
                log.error("mDNS %s", self._conflict)
            except Exception as exc:
                if self._stopping.is_set():
                    return False
                if attempt == REGISTER_TRIES:
                    self._fail(f"{_reason(exc)} after {attempt} tries")
                    return False
                log.warning("mDNS registration failed (%s); trying again", _reason(exc))
                time.sleep(0.5 * attempt)
        else:
            self._fail(f"no free instance name after {REGISTER_TRIES} tries ({self._conflict})")
            return False
        shown = name.removesuffix("." + SERVICE_TYPE)
        self._set_state(self._conflict or f"advertised as {shown}")
        self.registered.set()
        log.info("advertising %s on %s port %d", name, ", ".join(addresses), self._port)
        return True

    def _fail(self, why: str) -> None:
        if not self._stopping.is_set():
            log.error("mDNS advertising failed: %s; hosts must use host:port or an inventory file", why)
            self._set_state(f"failed: {why}")

    def _service_info(self, advert: AgentAdvert, name: str, server: str) -> Any:
        from zeroconf import ServiceInfo

        return ServiceInfo(
            SERVICE_TYPE, name, port=self._port, properties=advert.to_txt(),
            parsed_addresses=self._addresses, server=server,
        )  # fmt: skip

    def _register_as(self, advert: AgentAdvert, name: str, server: str) -> None:
        """Probe and announce ``name`` (on zeroconf's loop, with a deadline a loaded board can meet)."""
        info = self._service_info(advert, name, server)
        zc = self._zc

        async def register() -> None:
            await (await zc.async_register_service(info, allow_name_change=False))

        asyncio.run_coroutine_threadsafe(register(), zc.loop).result(REGISTER_TIMEOUT_S)
        with self._lock:
            self._info = info

    def _update(self, advert: AgentAdvert) -> None:
        with self._lock:
            zc, info = self._zc, self._info
        if zc is None or info is None:
            return
        new = self._service_info(advert, info.name, info.server)

        async def update() -> None:
            await (await zc.async_update_service(new))

        asyncio.run_coroutine_threadsafe(update(), zc.loop).result(REGISTER_TIMEOUT_S)
        with self._lock:
            self._info = new

    def _who_has(self, name: str) -> str:
        """The address:port of the agent that already advertises ``name``, if it answers."""
        try:
            info = self._zc.get_service_info(SERVICE_TYPE, name, timeout=1500)
        except Exception:
            return ""
        if info is None or not info.parsed_addresses():
            return ""
        return f"{info.parsed_addresses()[0]}:{info.port}"

    def stop(self) -> None:
        """Unregister (goodbye packets) if registered; if still probing, just close, which interrupts it."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            zc, info = self._zc, self._info
            self._zc = self._info = None
        if zc is not None:
            try:
                if info is not None:
                    zc.unregister_service(info)
            finally:
                zc.close()
            log.info("stopped advertising")
        if self._thread is not None:  # a registration still probing ends on its own; it is a daemon thread
            self._thread.join(timeout=0.2)


def _material(old: AgentAdvert, new: AgentAdvert) -> bool:
    """A change a pool must see at once: the holder, the open sessions, the tags."""
    return (old.holder, old.held_until, old.sessions, dict(old.tags)) != (
        new.holder,
        new.held_until,
        new.sessions,
        dict(new.tags),
    )


def _drifted(old: AgentAdvert, new: AgentAdvert) -> bool:
    """Free memory or load moved enough to be worth a packet."""
    if old.mem_free_bytes is not None and new.mem_free_bytes is not None:
        moved = abs(old.mem_free_bytes - new.mem_free_bytes)
        if moved >= MEM_STEP and moved >= 0.05 * max(1, old.mem_free_bytes):
            return True
    return old.load is not None and new.load is not None and abs(old.load - new.load) >= 0.1
