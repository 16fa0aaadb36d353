"""Real agent processes on 127.0.0.1 for tests (the same LocalAgent the demo and benchmarks use), and the
secrets they can be started with: a token file and a lab PKI made by ``rkfarm_agent.certs``."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil

from rkfarm.remote.credentials import Credentials
from rkfarm.remote.local import LocalAgent
from rkfarm_agent.certs import make_lab_pki
from rkfarm_proto.v1 import agent_pb2

AgentProcess = LocalAgent


def write_token(path: Path) -> str:
    """A fresh random token in a 0600 file, as deploy/install-agent.sh provisions it."""
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


@dataclass(frozen=True)
class LabFiles:
    """A lab CA with one agent certificate (SANs include 127.0.0.1) and one client certificate."""

    ca: Path
    agent_cert: Path
    agent_key: Path
    client_cert: Path
    client_key: Path

    def serve_args(self, mtls: bool = False) -> list[str]:
        args = ["--tls-cert", str(self.agent_cert), "--tls-key", str(self.agent_key)]
        return [*args, "--tls-client-ca", str(self.ca)] if mtls else args

    def credentials(self, token_file: Path | None = None, client: bool = True) -> Credentials:
        return Credentials.load(
            token_file=token_file,
            tls_ca=self.ca,
            tls_cert=self.client_cert if client else None,
            tls_key=self.client_key if client else None,
            env={},
        )

    def env(self, token_file: Path | None = None) -> dict[str, str]:
        """The host's environment variables for these files."""
        env = {"RKFARM_TLS_CA": str(self.ca), "RKFARM_TLS_CERT": str(self.client_cert)}
        env["RKFARM_TLS_KEY"] = str(self.client_key)
        return {**env, "RKFARM_TOKEN_FILE": str(token_file)} if token_file else env


def lab_pki(out: Path, agent: str = "board", client: str = "host") -> LabFiles:
    pki = make_lab_pki(out, agent, clients=[client])
    assert pki.agent_cert and pki.agent_key
    cert, key = pki.clients[client]
    return LabFiles(pki.ca_cert, pki.agent_cert, pki.agent_key, cert, key)


def agent_methods() -> list[tuple[str, bool, bool]]:
    """(path, client streaming, server streaming) of every Agent RPC, from the protocol itself."""
    service = agent_pb2.DESCRIPTOR.services_by_name["Agent"]
    return [(f"/{service.full_name}/{m.name}", m.client_streaming, m.server_streaming) for m in service.methods]


def raw_call(
    channel: grpc.Channel,
    path: str,
    client_streaming: bool,
    server_streaming: bool,
    payloads: Sequence[bytes],
    timeout_s: float = 10.0,
    metadata: Sequence[tuple[str, str]] = (),
) -> list[bytes]:
    """Call a method with raw serialized requests (no stubs, no validation); returns raw responses."""
    md = tuple(metadata)
    if client_streaming and server_streaming:
        return list(channel.stream_stream(path)(iter(payloads), timeout=timeout_s, metadata=md))
    if client_streaming:
        return [channel.stream_unary(path)(iter(payloads), timeout=timeout_s, metadata=md)]
    first = payloads[0] if payloads else b""
    if server_streaming:
        return list(channel.unary_stream(path)(first, timeout=timeout_s, metadata=md))
    return [channel.unary_unary(path)(first, timeout=timeout_s, metadata=md)]


__all__ = ["AgentProcess", "LabFiles", "agent_methods", "lab_pki", "raw_call", "write_token"]


def rss(agent: LocalAgent) -> int:
    """The agent process's resident memory in bytes."""
    assert agent.proc is not None
    return int(psutil.Process(agent.proc.pid).memory_info().rss)


class PeakRss:
    """The agent's highest RSS while the block runs, sampled every few milliseconds."""

    def __init__(self, agent: LocalAgent) -> None:
        self.agent = agent
        self.before = rss(agent)
        self.peak = self.before
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, rss(self.agent))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.before
