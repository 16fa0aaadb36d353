"""Real agent processes on 127.0.0.1 for tests: started, killed and restarted like on a board."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rkfarm.remote.client import AgentClient


class AgentProcess:
    """`rkfarm-agent serve` in a subprocess, bound and advertised on loopback only."""

    def __init__(self, store: Path, agent_id: str, *extra: str, platform: str = "rk3588") -> None:
        self.store = store
        self.agent_id = agent_id
        self.extra = list(extra)
        self.platform = platform
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = store.parent / f"{agent_id}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> AgentProcess:
        port_file = self.store.parent / f"{self.agent_id}.port"
        port_file.unlink(missing_ok=True)
        cmd = [
            sys.executable, "-m", "rkfarm_agent.cli", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--mdns-interface", "127.0.0.1",
            "--store-dir", str(self.store), "--id", self.agent_id, "--platform", self.platform,
            "--port-file", str(port_file), "--grace", "2", *self.extra,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            if port_file.exists():
                self.port = int(port_file.read_text())
                with AgentClient(self.address, timeout_s=5) as client:
                    client.info()
                return self
            time.sleep(0.05)
        raise RuntimeError(f"agent did not start within {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> AgentProcess:
        """Kill hard and start again on the same port and store (a crash and a systemd restart)."""
        self.kill()
        return self.start()

    def alive(self) -> bool:
        """The agent answers Info."""
        with AgentClient(self.address, timeout_s=5) as client:
            return client.info().agent_id == self.agent_id
