"""mDNS advertiser: announce `_rkfarm._tcp.local.` so hosts find the agent without ADB or an IP list."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading

import psutil

from rkfarm_proto.discovery import SERVICE_TYPE, AgentAdvert, instance_name

log = logging.getLogger(__name__)


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


class Advertiser:
    """Registers the service in a background thread (mDNS probing takes ~1.5 s) and unregisters on stop."""

    def __init__(self, advert: AgentAdvert, port: int, interfaces: list[str]) -> None:
        self._advert = advert
        self._port = port
        self._interfaces = interfaces
        self._zc: object | None = None
        self._info: object | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.registered = threading.Event()
        self._stopping = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._register, name="rkfarm-mdns", daemon=True)
        self._thread.start()

    def _register(self) -> None:
        from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

        addresses = local_addresses(self._interfaces)
        v6 = any(":" in a for a in addresses)
        v4 = any(":" not in a for a in addresses)
        version = IPVersion.All if v4 and v6 else IPVersion.V6Only if v6 else IPVersion.V4Only
        try:
            zc = Zeroconf(interfaces=self._interfaces or InterfaceChoice.All, ip_version=version)
            with self._lock:
                self._zc = zc
                if self._stopping.is_set():
                    zc.close()
                    return
            info = ServiceInfo(
                SERVICE_TYPE,
                instance_name(self._advert.agent_id),
                port=self._port,
                properties=self._advert.to_txt(),
                parsed_addresses=addresses,
                server=f"{self._advert.agent_id}.local.",
            )
            zc.register_service(info, allow_name_change=False)
        except Exception as exc:  # a board without multicast still serves gRPC; say why it is not found
            if not self._stopping.is_set():
                log.error("mDNS advertising failed (%s); hosts must use host:port or an inventory file", exc)
            return
        with self._lock:
            self._info = info
        self.registered.set()
        log.info("advertising %s on %s port %d", instance_name(self._advert.agent_id), ", ".join(addresses), self._port)

    def stop(self) -> None:
        """Unregister (goodbye packets) if registered; if still probing, just close, which interrupts it."""
        self._stopping.set()
        with self._lock:
            zc, info = self._zc, self._info
            self._zc = self._info = None
        if zc is not None:
            try:
                if info is not None:
                    zc.unregister_service(info)  # type: ignore[attr-defined]
            finally:
                zc.close()  # type: ignore[attr-defined]
            log.info("stopped advertising")
        if self._thread is not None:  # a registration still probing ends on its own; it is a daemon thread
            self._thread.join(timeout=0.2)
