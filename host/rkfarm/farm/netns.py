"""A farm in a box: agents, each in its own Linux network namespace on one bridge, and a host namespace.

For tests, benchmarks and demos of the pool on one machine (root needed): every agent and the host get a
network stack of their own, so mDNS travels over a real (virtual) Ethernet segment, agents can be killed and
started mid-run, and nothing is advertised on this machine's own interfaces or loopback (other programs'
agents there never see these, nor these them).

Layout: a switch namespace holding bridge ``br0``; a veth pair per member, one end on the bridge, the other
``eth0`` in the member's namespace, addresses from ``10.<net>.0.0/16`` (host ``.0.1``). Host-side code runs in the
host namespace as a subprocess (``host_command`` / ``run_host``). ``close()`` kills every agent it started and
deletes every namespace it made (veths go with them), also after a failure; use it as a context manager.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rkfarm.errors import RkfarmError

log = logging.getLogger(__name__)

AGENT_PORT = 50551


class NetnsError(RkfarmError):
    """Network namespaces cannot be made here, or a step of the set-up failed."""


def available() -> tuple[bool, str]:
    """(True, "") where this process may create network namespaces and bridges; else (False, why not)."""
    if not sys.platform.startswith("linux"):
        return False, "network namespaces are Linux only"
    if shutil.which("ip") is None:
        return False, "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return False, "creating network namespaces needs root"
    probe = f"rkfprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return False, f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    try:
        bridge = subprocess.run(
            ["ip", "-n", probe, "link", "add", "br0", "type", "bridge"], capture_output=True, text=True
        )
        if bridge.returncode != 0:
            return False, f"cannot create a bridge in a namespace: {bridge.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return True, ""


@dataclass
class NsAgent:
    """One agent in its namespace."""

    index: int
    namespace: str
    ip: str
    agent_id: str
    store: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    args: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.ip}:{AGENT_PORT}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


class NetnsFarm:
    """Namespaces for up to ``slots`` agents plus a host; agents are started with ``start_agent``."""

    def __init__(self, work: Path, slots: int, net: int | None = None, python: str = sys.executable) -> None:
        if not 1 <= slots <= 2000:
            raise NetnsError(f"slots must be between 1 and 2000, not {slots}")
        self.work = work
        self.slots = slots
        self.tag = secrets.token_hex(2)
        self.net = net if net is not None else 64 + secrets.randbelow(128)
        self.python = python
        self.switch = f"rkf{self.tag}sw"
        self.host_ns = f"rkf{self.tag}h"
        self.host_ip = f"10.{self.net}.0.1"
        self.agents: dict[int, NsAgent] = {}
        self._namespaces: list[str] = []
        self._made = False

    # -- set-up ------------------------------------------------------------------------------------------
    def namespace(self, index: int) -> str:
        return f"rkf{self.tag}a{index}"

    def ip(self, index: int) -> str:
        return f"10.{self.net}.{1 + index // 250}.{1 + index % 250}"

    def __enter__(self) -> NetnsFarm:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> NetnsFarm:
        ok, why = available()
        if not ok:
            raise NetnsError(why)
        self.work.mkdir(parents=True, exist_ok=True)
        self._made = True
        members = [(self.host_ns, "h0", self.host_ip)] + [
            (self.namespace(i), f"a{i}", self.ip(i)) for i in range(self.slots)
        ]
        try:
            self._batch(None, [f"netns add {self.switch}"] + [f"netns add {ns}" for ns, _, _ in members])
            self._namespaces = [self.switch] + [ns for ns, _, _ in members]
            switch = ["link add br0 type bridge", "link set br0 up", "link set lo up"]
            for ns, port, _ in members:
                switch += [
                    f"link add {port} type veth peer name eth0 netns {ns}",
                    f"link set {port} master br0",
                    f"link set {port} up",
                ]
            self._batch(self.switch, switch)
            for ns, _, ip in members:
                self._batch(ns, [f"addr add {ip}/16 dev eth0", "link set eth0 up", "link set lo up"])
        except BaseException:
            self.close()
            raise
        log.info("netns farm %s: %d agent slots on 10.%d.0.0/16, host %s", self.tag, self.slots, self.net, self.host_ip)
        return self

    @staticmethod
    def _batch(namespace: str | None, commands: Sequence[str]) -> None:
        argv = ["ip", *(["-n", namespace] if namespace else []), "-batch", "-"]
        done = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True)
        if done.returncode != 0:
            raise NetnsError(f"{' '.join(argv)} failed: {done.stderr.strip()[:500]}")

    # -- agents ------------------------------------------------------------------------------------------
    def start_agent(
        self, index: int, agent_id: str, *extra: str, platform: str = "rk3588", tags: Sequence[str] = ()
    ) -> NsAgent:
        """Start ``rkfarm-agent serve`` in slot ``index`` (returns at once; ``wait_serving`` waits)."""
        if not 0 <= index < self.slots:
            raise NetnsError(f"no slot {index} (this farm has {self.slots})")
        old = self.agents.get(index)
        if old is not None and old.running():
            raise NetnsError(f"slot {index} already runs {old.agent_id}")
        ns, ip = self.namespace(index), self.ip(index)
        store = self.work / f"store-{agent_id}"
        args = [
            "--host", ip, "--port", str(AGENT_PORT), "--mdns-interface", ip, "--id", agent_id,
            "--platform", platform, "--store-dir", str(store), "--grace", "1",
            "--port-file", str(self.work / f"{agent_id}.port"), *(f"--tag={t}" for t in tags), *extra,
        ]  # fmt: skip
        log_path = self.work / f"{agent_id}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, self.python, "-m", "rkfarm_agent.cli", "serve", *args],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        agent = NsAgent(index, ns, ip, agent_id, store, proc, log_path, args)
        self.agents[index] = agent
        return agent

    def wait_serving(self, agents: Sequence[NsAgent], timeout_s: float = 60.0) -> None:
        """Until every agent wrote its port file (it serves gRPC); NetnsError naming the ones that did not."""
        deadline = time.monotonic() + timeout_s
        pending = list(agents)
        while pending and time.monotonic() < deadline:
            for agent in list(pending):
                if (self.work / f"{agent.agent_id}.port").exists():
                    pending.remove(agent)
                elif not agent.running():
                    raise NetnsError(f"agent {agent.agent_id} exited:\n{agent.log()[-2000:]}")
            time.sleep(0.05)
        if pending:
            raise NetnsError(f"not serving within {timeout_s:g} s: {', '.join(a.agent_id for a in pending)}")

    def wait_advertised(self, agents: Sequence[NsAgent], timeout_s: float = 60.0) -> None:
        """Until every agent's log says its mDNS registration is done (probing takes ~1.5 s, more under load)."""
        deadline = time.monotonic() + timeout_s
        pending = list(agents)
        while pending and time.monotonic() < deadline:
            for agent in list(pending):
                text = agent.log()
                if "rkfarm_agent.advertise: advertising " in text:
                    pending.remove(agent)
                elif "mDNS advertising failed" in text or not agent.running():
                    raise NetnsError(f"agent {agent.agent_id} is not advertised:\n{text[-2000:]}")
            time.sleep(0.1)
        if pending:
            raise NetnsError(f"not advertised within {timeout_s:g} s: {', '.join(a.agent_id for a in pending)}")

    def stop_agent(self, index: int, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        agent = self.agents.get(index)
        if agent is None or agent.proc is None:
            return
        if agent.proc.poll() is None:
            agent.proc.send_signal(sig)
            try:
                agent.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait()
        (self.work / f"{agent.agent_id}.port").unlink(missing_ok=True)

    # -- the host side -----------------------------------------------------------------------------------
    def host_env(self, **extra: str) -> dict[str, str]:
        """The environment host-side code runs with: mDNS on the host's namespace address only."""
        return {
            **os.environ, "RKFARM_MDNS_INTERFACES": self.host_ip, "RKFARM_INVENTORY": os.devnull,
            "RKFARM_REGISTRY_CACHE": str(self.work / "registry-cache"), "PYTHONUNBUFFERED": "1", **extra,
        }  # fmt: skip

    def host_command(self, *argv: str, slot: int | None = None) -> list[str]:
        """``argv`` run inside the host namespace (or, as a second host, in agent slot ``slot``'s namespace)."""
        return ["ip", "netns", "exec", self.host_ns if slot is None else self.namespace(slot), *argv]

    def host_env_for(self, slot: int | None = None, **extra: str) -> dict[str, str]:
        """``host_env`` for code run in the host namespace, or in slot ``slot``'s (its own address for mDNS)."""
        env = self.host_env(**extra)
        if slot is not None:
            env["RKFARM_MDNS_INTERFACES"] = self.ip(slot)
            env["RKFARM_REGISTRY_CACHE"] = str(self.work / f"registry-cache-{slot}")
        return env

    def popen_host(self, argv: Sequence[str], slot: int | None = None, **extra: str) -> subprocess.Popen[str]:
        """Start host-side ``argv`` (stdout a pipe of text lines, stderr to a log file in the work folder)."""
        err = (self.work / f"host-{time.monotonic_ns()}.log").open("w")
        return subprocess.Popen(
            self.host_command(*argv, slot=slot), stdout=subprocess.PIPE, stderr=err, text=True,
            env=self.host_env_for(slot, **extra),
        )  # fmt: skip

    def run_host(
        self, argv: Sequence[str], timeout_s: float = 300.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.host_command(*argv), capture_output=True, text=True, timeout=timeout_s,
            env=env if env is not None else self.host_env(),
        )  # fmt: skip

    # -- the end -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every agent this farm started (SIGTERM, then SIGKILL) and delete its namespaces."""
        running = [a for a in self.agents.values() if a.running()]
        for agent in running:
            assert agent.proc is not None
            agent.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        for agent in running:
            assert agent.proc is not None
            try:
                agent.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait()
        if self._made:
            names = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
            mine = [n for n in names if n.startswith(f"rkf{self.tag}")]
            if mine:
                subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in mine),
                               capture_output=True, text=True)  # fmt: skip
            self._made = False
        log.info("netns farm %s removed", self.tag)


__all__ = ["AGENT_PORT", "NetnsError", "NetnsFarm", "NsAgent", "available"]
