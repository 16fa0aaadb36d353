"""A real agent process on this machine, on loopback: for the demo, the benchmarks and the tests.

It runs exactly what a board runs (``rkfarm-agent serve``), bound to 127.0.0.1 and advertised by mDNS on
127.0.0.1 only, with its own model store. Extra ``serve`` options (``--token-file``, ``--tls-cert``, limits…)
go in ``*extra``; ``credentials`` are what the readiness probe and ``alive()`` present (default: the
environment's, like any AgentClient).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rkfarm.errors import RemoteError
from rkfarm.remote.client import AgentClient
from rkfarm.remote.credentials import Credentials


class LocalAgent:
    """``rkfarm-agent serve`` in a subprocess. ``start()`` returns once it answers Info."""

    def __init__(
        self,
        store: Path,
        agent_id: str,
        *extra: str,
        platform: str = "rk3588",
        advertise: bool = True,
        credentials: Credentials | None = None,
    ) -> None:
        self.store = store
        self.credentials = credentials
        self.agent_id = agent_id
        self.extra = list(extra)
        self.platform = platform
        self.advertise = advertise
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = store.parent / f"{agent_id}.log"
        self.started_in_s = 0.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, port_file: Path) -> list[str]:
        return [
            sys.executable, "-m", "rkfarm_agent.cli", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--mdns-interface", "127.0.0.1", "--advertise" if self.advertise else "--no-advertise",
            "--store-dir", str(self.store), "--id", self.agent_id, "--platform", self.platform,
            "--port-file", str(port_file), "--grace", "2", *self.extra,
        ]  # fmt: skip

    def start(self, timeout_s: float = 20.0) -> LocalAgent:
        self.store.parent.mkdir(parents=True, exist_ok=True)
        port_file = self.store.parent / f"{self.agent_id}.port"
        port_file.unlink(missing_ok=True)
        started = time.perf_counter()
        with self.log_path.open("ab") as log:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.proc = subprocess.Popen(self.command(port_file), stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RemoteError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            if port_file.exists():
                self.port = int(port_file.read_text())
                try:
                    with self.client(timeout_s=5) as client:
                        # Channels to the same address share a connection; after a restart it may still be in
                        # reconnect back-off from the old process, so wait for it before the first call.
                        client.wait_ready(max(1.0, deadline - time.monotonic()))
                        client.info()
                except BaseException:  # an agent that cannot be asked (wrong credentials...) is not left running
                    self.kill()
                    raise
                self.started_in_s = time.perf_counter() - started
                return self
            time.sleep(0.01)
        self.kill()
        raise RemoteError(f"agent did not start within {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        """Signal the agent and wait; returns its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> LocalAgent:
        """Kill hard and start again on the same port and store (a crash, then a service restart)."""
        self.kill()
        return self.start()

    def client(self, timeout_s: float = 30.0) -> AgentClient:
        """A client for this agent with the credentials it was started with."""
        return AgentClient(self.address, timeout_s=timeout_s, credentials=self.credentials)

    def alive(self) -> bool:
        """The agent answers Info with its id."""
        with self.client(timeout_s=5) as client:
            return client.info().agent_id == self.agent_id

    def __enter__(self) -> LocalAgent:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
