"""One discovery per process: a registry of the agents mDNS finds, kept current for as long as the process lives.

Every browse used to open its own zeroconf instance; a hundred threads doing ``init_runtime(device_id=...)`` at
once then had a hundred sockets on port 5353 in one process, and the kernel split the answers between them (68 of
100 found nothing). Here one ``Zeroconf`` and one ``ServiceBrowser`` per set of interfaces serve the whole process:
``init_runtime``, ``list_devices``, the CLI and ``rkfarm.farm.DevicePool`` all read the same registry.

* **Joins** are seen as they happen: the browser's events, and every record heard for an instance.
* **Liveness**: every ``REFRESH_S`` the registry asks for ``_rkfarm._tcp`` without known answers, so every live
  agent answers; an instance not heard from for ``STALE_S`` (``RKFARM_MDNS_STALE_S``) leaves the registry (a
  board that crashed sends no goodbye and its PTR record lives 75 minutes in a plain cache) unless its gRPC port
  still takes a connection (a board too busy to answer mDNS in time has not crashed; a crashed one refuses at
  once). A goodbye removes it at once. Queries are QM (multicast answers), so other processes on this machine
  hear the answers too.
* **Duplicate ids**: an agent whose id is taken advertises under another instance name with ``dup=1``
  (rkfarm_agent.advertise); both entries stay, and ``devices()`` marks each with the other's address.
* **Starting**: besides its multicast queries, a new registry asks once more from a socket of its own
  (an ephemeral port, RFC 6762's "legacy unicast" query): agents answer that at once and to this process alone,
  where a multicast answer may wait up to a second (an agent answers a record at most once a second by
  multicast, and other hosts' registries keep asking) and a unicast one sent to port 5353 may land in another
  process's socket. The answers go through zeroconf's own record handling, as if heard by multicast.
* **Settling**: the first look in a process waits until the answers stop (``settle``): every agent that answered
  the last run in this place (a small cache file, ``RKFARM_REGISTRY_CACHE``) has answered again and nothing new
  came for ``QUIET_S``; without that cache, at least ``COLD_MIN_S``. A registry that settled answers at once.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import secrets
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from zeroconf import (
    DNSQuestionType,
    InterfaceChoice,
    IPVersion,
    RecordUpdateListener,
    ServiceBrowser,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf._dns import DNSQuestion  # the package re-exports these; mypy wants them from where they live
from zeroconf._protocol.incoming import DNSIncoming
from zeroconf._protocol.outgoing import DNSOutgoing

from rkfarm.remote.device import Device, mdns_interfaces
from rkfarm_proto.discovery import SERVICE_TYPE, AgentAdvert

log = logging.getLogger(__name__)

REFRESH_S = 2.0
STALE_S = 6.0
QUIET_S = 0.25
COLD_MIN_S = 0.6
PROBE_AT_S = (0.0, 0.15)  # the unicast start-up queries, after start()
PROBE_LISTEN_S = 1.0
CHECK_TIMEOUT_S = 1.5  # connecting to a silent agent's port: refused at once when it crashed
CACHE_ENV = "RKFARM_REGISTRY_CACHE"
STALE_ENV = "RKFARM_MDNS_STALE_S"
_TYPE_PTR, _TYPE_SRV, _TYPE_TXT, _CLASS_IN = 12, 33, 16, 1  # DNS record types and class (RFC 1035, 2782)
Listener = Callable[[str, Any], None]  # (event: "joined" | "changed" | "left", Device)


@dataclass
class _Entry:
    name: str  # the DNS-SD instance name
    first_seen: float
    last_seen: float
    device: Any = None  # discovery.Device once resolved
    resolving: bool = False
    checking: bool = False  # silent too long: its port is being tried


def _cache_path(interfaces: tuple[str, ...]) -> Path | None:
    configured = os.environ.get(CACHE_ENV)
    if configured is not None and configured.strip().lower() in ("", "off", "0", "none"):
        return None
    folder = Path(configured) if configured else Path.home() / ".cache" / "rkfarm"
    key = hashlib.sha256(",".join(interfaces).encode()).hexdigest()[:10]
    return folder / f"registry-{key}.json"


def _stale_s() -> float:
    try:
        value = float(os.environ.get(STALE_ENV, "") or STALE_S)
    except ValueError:
        value = STALE_S
    return max(1.0, value)


class Registry:
    """The agents mDNS finds on ``interfaces`` (addresses; empty: all), kept current. Use ``shared_registry()``."""

    def __init__(self, interfaces: Iterable[str] = (), refresh_s: float = REFRESH_S, stale_s: float | None = None):
        self.interfaces = tuple(interfaces)
        self.refresh_s = refresh_s
        self.stale_s = stale_s if stale_s is not None else _stale_s()
        self._entries: dict[str, _Entry] = {}
        self._cond = threading.Condition()
        self._listeners: list[Listener] = []
        self._changed_at = time.monotonic()
        self._started_at = 0.0
        self._settled = False
        self._stop = threading.Event()
        self._resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rkfarm-mdns-resolve")
        self._cache = _cache_path(self.interfaces)
        self._expected = self._read_cache()
        self._cache_written: list[str] = []
        self._zc: Any = None
        self._browser: Any = None
        self._thread: threading.Thread | None = None

    # -- life cycle --------------------------------------------------------------------------------------
    def start(self) -> Registry:
        chosen = list(self.interfaces)
        v6 = [i for i in chosen if ":" in i]
        version = (IPVersion.V6Only if len(v6) == len(chosen) else IPVersion.V4Only) if chosen else IPVersion.All
        if chosen and v6 and len(v6) != len(chosen):
            version = IPVersion.All
        self._zc = Zeroconf(interfaces=chosen or InterfaceChoice.All, ip_version=version)
        self._started_at = time.monotonic()
        self._zc.add_listener(_Heard(self), None)
        self._browser = ServiceBrowser(
            self._zc, SERVICE_TYPE, handlers=[self._on_browser], question_type=DNSQuestionType.QM
        )
        self._thread = threading.Thread(target=self._refresh_loop, name="rkfarm-mdns-refresh", daemon=True)
        self._thread.start()
        threading.Thread(target=self._unicast_probe, name="rkfarm-mdns-probe", daemon=True).start()
        return self

    def _unicast_probe(self) -> None:
        """Ask from an ephemeral port of our own (see the module docstring); hand every answer to zeroconf."""
        addresses = [a for a in self.interfaces if ":" not in a] or _ipv4_addresses()
        sockets: list[socket.socket] = []
        chooser = selectors.DefaultSelector()
        for address in addresses:
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
                sock.bind((address, 0))
            except OSError as exc:
                log.debug("mDNS unicast probe on %s: %s", address, exc)
                continue
            sock.setblocking(False)
            sockets.append(sock)
            chooser.register(sock, selectors.EVENT_READ)
        out = DNSOutgoing(0x0000, False, secrets.randbelow(0xFFFE) + 1)  # an id of its own: not a duplicate
        out.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
        query = out.packets()[0]
        started = time.monotonic()
        pending = list(PROBE_AT_S)
        try:
            while not self._stop.is_set() and time.monotonic() - started < PROBE_LISTEN_S:
                if pending and time.monotonic() - started >= pending[0]:
                    pending.pop(0)
                    for sock in sockets:
                        with contextlib.suppress(OSError):
                            sock.sendto(query, ("224.0.0.251", 5353))
                for key, _ in chooser.select(0.02):
                    with contextlib.suppress(OSError):
                        data, source = key.fileobj.recvfrom(9000)  # type: ignore[union-attr]
                        self._inject(data, source)
        finally:
            chooser.close()
            for sock in sockets:
                sock.close()

    def _inject(self, data: bytes, source: tuple[str, int]) -> None:
        try:
            message = DNSIncoming(data, source)
        except Exception:  # not DNS, or damaged: ignore it as zeroconf would
            return
        if message.valid and message.is_response() and not self._stop.is_set():
            self._zc.loop.call_soon_threadsafe(self._zc.record_manager.async_updates_from_response, message)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._write_cache()
        with contextlib.suppress(Exception):
            if self._browser is not None:
                self._browser.cancel()
        with contextlib.suppress(Exception):
            if self._zc is not None:
                self._zc.close()
        self._resolver.shutdown(wait=False, cancel_futures=True)

    # -- what zeroconf tells us --------------------------------------------------------------------------
    def heard(self, name: str, goodbye: bool = False) -> None:
        """A record of instance ``name`` arrived (zeroconf's loop thread: no blocking here)."""
        now = time.monotonic()
        with self._cond:
            entry = self._entries.get(name)
            if goodbye:
                return  # the browser's Removed event takes it out
            if entry is None:
                entry = self._entries[name] = _Entry(name, now, now)
                self._changed_at = now
                self._cond.notify_all()
            entry.last_seen = now
            need = entry.device is None and not entry.resolving
            if need:
                entry.resolving = True
        if need:
            self._submit(name)

    def _on_browser(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if state_change is ServiceStateChange.Removed:
            self._drop(name, "said goodbye")
            return
        self.heard(name)
        if state_change is ServiceStateChange.Updated:  # TXT or address changed: read it again
            with self._cond:
                entry = self._entries.get(name)
                again = entry is not None and not entry.resolving
                if entry is not None:
                    entry.resolving = True
            if again:
                self._submit(name)

    def _submit(self, name: str) -> None:
        with contextlib.suppress(RuntimeError):  # shutting down
            self._resolver.submit(self._resolve, name)

    def _resolve(self, name: str) -> None:
        device = None
        try:
            info = self._zc.get_service_info(SERVICE_TYPE, name, timeout=1500, question_type=DNSQuestionType.QM)
            if info is not None and info.parsed_addresses():
                device = _device(name, info)
        except Exception as exc:  # a malformed advert must not stop the registry
            log.debug("mDNS: cannot resolve %s: %s", name, exc)
        event = ""
        with self._cond:
            entry = self._entries.get(name)
            if entry is None:
                return
            entry.resolving = False
            if device is not None:
                event = "joined" if entry.device is None else "changed" if entry.device != device else ""
                entry.device = device
                if event == "joined":  # quiet means no new agents; a board's load or free memory moving is not news
                    self._changed_at = time.monotonic()
                self._cond.notify_all()
        if event:
            log.debug("mDNS: %s %s (%s)", event, device.agent_id if device else name, name)
            self._notify(event, device)

    def _drop(self, name: str, why: str) -> None:
        with self._cond:
            entry = self._entries.pop(name, None)
            if entry is None:
                return
            self._changed_at = time.monotonic()
            self._cond.notify_all()
        if entry.device is not None:
            log.info("mDNS: agent %s at %s left (%s)", entry.device.agent_id, entry.device.address, why)
            self._notify("left", entry.device)

    def _refresh_loop(self) -> None:
        next_query = 0.0
        early = [0.0, 0.3]  # two multicast queries at once too: a lost answer costs 0.3 s, not a refresh period
        while not self._stop.wait(0.25):
            now = time.monotonic()
            if now >= next_query or (early and now - self._started_at >= early[0]):
                out = DNSOutgoing(0x0000)  # a plain QM query, no known answers: every live agent answers
                out.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
                with contextlib.suppress(Exception):
                    self._zc.send(out)
                if early:
                    early.pop(0)
                next_query = now + self.refresh_s
            with self._cond:
                stale = [e for e in self._entries.values() if now - e.last_seen > self.stale_s and not e.checking]
                for entry in stale:
                    entry.checking = True
            for entry in stale:
                self._submit_check(entry)

    def _submit_check(self, entry: _Entry) -> None:
        with contextlib.suppress(RuntimeError):  # shutting down
            self._resolver.submit(self._check, entry)

    def _check(self, entry: _Entry) -> None:
        """An agent silent for ``stale_s``: gone, unless its gRPC port still takes connections (a board so busy
        that its mDNS answers are late is not a board that crashed); then it is asked about again soon."""
        alive = entry.device is not None and _accepts(entry.device.address, CHECK_TIMEOUT_S)
        with self._cond:
            entry.checking = False
            if alive and self._entries.get(entry.name) is entry:
                entry.last_seen = time.monotonic() - self.stale_s / 2
                log.debug("mDNS: %s silent but its port answers; kept", entry.name)
                return
        if not alive:
            self._drop(entry.name, f"no answer for {self.stale_s:.0f} s, and its port refuses connections")

    # -- listeners ---------------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event, device)`` for every join, change and departure; returns the unsubscribe."""
        with self._cond:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._cond, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, event: str, device: Any) -> None:
        with self._cond:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event, device)
            except Exception:  # one listener's bug must not stop the others or the registry
                log.exception("registry listener failed")

    # -- reading -----------------------------------------------------------------------------------------
    def settle(self, timeout_s: float, want: str | Callable[[list[Any]], bool] | None = None) -> None:
        """Wait (at most ``timeout_s``) until the answers stop coming (see the module docstring); with ``want``
        (an agent id, or a test of the devices), until an agent of that id is known or the test passes."""
        if self._zc is None or self._stop.is_set():  # never started, or mDNS is unavailable here
            return
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while True:  # woken by every change (joins, resolutions, departures) and at the times that matter
                now = time.monotonic()
                if want is not None:  # until it is there (a board just booting is waited for too)
                    there = self._has_id(want) if isinstance(want, str) else want(self._devices_locked())
                    quiet_at = self._changed_at + QUIET_S  # a duplicate of it comes in the same burst
                    if there and (now >= quiet_at or now >= deadline):
                        return
                    wake = quiet_at if there else deadline
                else:
                    done, wake = self._settle_state(now)
                    if done:
                        self._settled = True
                        break
                if now >= deadline:
                    break
                self._cond.wait(max(0.001, min(wake, deadline) - now))
        self._write_cache()

    def _has_id(self, agent_id: str) -> bool:
        return any(e.device is not None and e.device.agent_id == agent_id for e in self._entries.values())

    def _settle_state(self, now: float) -> tuple[bool, float]:
        """(settled?, when to look again): see the module docstring."""
        if self._settled:
            return True, now
        if any(e.device is None for e in self._entries.values()):
            return False, now + 1.0  # its resolution, when it ends, wakes the waiters
        quiet_at = self._changed_at + QUIET_S
        if now < quiet_at:
            return False, quiet_at
        seen_all = self._expected and self._expected <= set(self._entries)  # all the last run here saw: no need
        ready_at = self._started_at + (QUIET_S if seen_all else COLD_MIN_S)  # to wait (one that is gone just
        return now >= ready_at, ready_at  # does not shorten the wait)

    def devices(self) -> list[Any]:
        """The live agents, sorted by id; agents sharing an id carry each other's address in ``conflict``."""
        with self._cond:
            return self._devices_locked()

    def _devices_locked(self) -> list[Any]:
        found = [e.device for e in self._entries.values() if e.device is not None]
        by_id: dict[str, list[Any]] = {}
        for device in found:
            by_id.setdefault(device.agent_id, []).append(device)
        marked = []
        for group in by_id.values():
            addresses = {d.address for d in group}
            for device in group:
                others = tuple(sorted(addresses - {device.address}))
                marked.append(replace(device, conflict=others) if others else device)
        return sorted(marked, key=lambda d: (d.agent_id, d.dup, d.address))

    def seen_age_s(self, agent_id: str) -> float | None:
        """Seconds since any agent with this id was last heard from (None: not known)."""
        now = time.monotonic()
        with self._cond:
            ages = [now - e.last_seen for e in self._entries.values() if e.device and e.device.agent_id == agent_id]
        return min(ages) if ages else None

    # -- the warm-start cache ----------------------------------------------------------------------------
    def _read_cache(self) -> set[str]:
        if self._cache is None:
            return set()
        try:
            names = json.loads(self._cache.read_text()).get("names", [])
            return {str(n) for n in names}
        except (OSError, ValueError, AttributeError):
            return set()

    def _write_cache(self) -> None:
        if self._cache is None:
            return
        with self._cond:
            names = sorted(e.name for e in self._entries.values() if e.device is not None)
            if names == self._cache_written:
                return
            self._cache_written = names
        try:
            self._cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._cache.with_name(f"{self._cache.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps({"names": names, "written_unix": time.time()}))
            tmp.replace(self._cache)
        except OSError as exc:
            log.debug("registry cache %s: %s", self._cache, exc)


class _Heard(RecordUpdateListener):
    """A zeroconf record listener: any record of an ``_rkfarm._tcp`` instance proves it alive (runs in zeroconf's
    loop thread)."""

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self._registry = registry

    def async_update_records(self, zc: Any, now: float, records: list[Any]) -> None:
        suffix = "." + SERVICE_TYPE.lower()
        for update in records:
            record = update.new
            if record.ttl and record.is_expired(now):  # the cache dropping an old record: no sign of life
                continue
            rtype = record.type
            if rtype == _TYPE_PTR and record.name.lower() == SERVICE_TYPE.lower():
                name = record.alias  # the instance it points to
            elif rtype in (_TYPE_SRV, _TYPE_TXT):
                name = record.name
            else:
                continue
            if name.lower().endswith(suffix):
                self._registry.heard(name, goodbye=record.ttl == 0)

    def async_update_records_complete(self) -> None:
        return None


def _device(name: str, info: Any) -> Device:
    advert = AgentAdvert.from_txt(info.properties)
    addresses = info.parsed_addresses()
    v4 = [a for a in addresses if ":" not in a]
    address = (v4 or addresses)[0]
    host = f"[{address}]" if ":" in address else address
    return Device(
        agent_id=advert.agent_id or name.removesuffix("." + SERVICE_TYPE),
        address=f"{host}:{info.port}",
        platform=advert.platform,
        npu_cores=advert.npu_cores,
        version=advert.version,
        backends=advert.backends,
        auth=advert.auth,
        source="mdns",
        tags=dict(advert.tags),
        tags_more=advert.tags_more,
        mem_free_bytes=advert.mem_free_bytes,
        load=advert.load,
        sessions=advert.sessions,
        holder=advert.holder,
        held_until=advert.held_until,
        dup=advert.dup,
        instance=name.removesuffix("." + SERVICE_TYPE),
        npu_ready=advert.npu_ready,
    )


def _accepts(address: str, timeout_s: float) -> bool:
    """Whether ``host:port`` takes a TCP connection within ``timeout_s``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _ipv4_addresses() -> list[str]:
    """Every IPv4 address of this machine (where zeroconf with all interfaces listens)."""
    import psutil

    return sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET})


_shared: dict[tuple[str, ...], Registry] = {}
_shared_lock = threading.Lock()


def shared_registry(interfaces: Iterable[str] | None = None) -> Registry:
    """The process's registry for ``interfaces`` (default ``RKFARM_MDNS_INTERFACES``, else all), started on first
    use."""
    key = tuple(mdns_interfaces() if interfaces is None else interfaces)
    with _shared_lock:
        registry = _shared.get(key)
        if registry is None:
            registry = _shared[key] = Registry(key)
            try:
                registry.start()
            except OSError as exc:  # no multicast here (a container without interfaces): the inventory still works
                log.warning("mDNS discovery unavailable on %s: %s", ", ".join(key) or "any interface", exc)
                registry.close()
        return registry


@atexit.register
def _close_shared() -> None:
    with _shared_lock:
        registries = list(_shared.values())
        _shared.clear()
    for registry in registries:
        registry.close()


__all__ = ["Registry", "shared_registry"]
