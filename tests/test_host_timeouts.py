"""The host's timeout against real agents: a slow, stopped, starting or restarting agent is waited for within
the caller's timeout (``RKFARM_TIMEOUT_S`` / ``timeout_s=``), and a model found corrupt at Load is uploaded
again. What waiting cannot fix (credentials, a full agent) fails at once.

An agent is made slow the way an overloaded board is: it stops answering for a while (SIGSTOP, then SIGCONT).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from agent_fixtures import AgentProcess, write_token

from rkfarm import RKNN
from rkfarm.errors import AgentAuthError, AgentUnavailableError, InputError, RemoteError
from rkfarm.remote.client import AgentClient, transient
from rkfarm.remote.credentials import Credentials
from rkfarm.remote.discovery import Device, probe
from rkfarm.remote.runtime import RemoteRuntime
from rkfarm.targets import open_agent
from rkfarm_proto.package import pack, read_package, sha256_hex
from rkfarm_proto.records import LoadOptions
from rkfarm_proto.transport import REFUSED_RUNS, REFUSED_STREAMS, REFUSED_UPLOADS

IMAGE = np.zeros((1, 48, 192, 3), np.uint8)
NOBODY = Credentials.load(env={})


@contextmanager
def stopped(agent: AgentProcess, for_s: float | None = None) -> Iterator[None]:
    """The agent process stopped (it accepts connections, answers nothing); resumed after ``for_s`` or at the end."""
    assert agent.proc is not None
    pid = agent.proc.pid
    os.kill(pid, signal.SIGSTOP)
    timer = threading.Timer(for_s, os.kill, (pid, signal.SIGCONT)) if for_s is not None else None
    if timer is not None:
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
        os.kill(pid, signal.SIGCONT)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.02)


def retried(caplog: pytest.LogCaptureFixture, what: str) -> Callable[[], bool]:
    """True once the host's retry loop logged a failed attempt at ``what``."""
    return lambda: any(what in r.getMessage() and "failed (try" in r.getMessage() for r in caplog.records)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def in_thread(fn: Callable[[], object]) -> Callable[[], object]:
    """Start ``fn`` in a thread; the returned function joins it and gives its result (or raises its error)."""
    result: list[object] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join() -> object:
        thread.join(60)
        assert not thread.is_alive(), "still running after 60 s"
        if error:
            raise error[0]
        return result[0]

    return join


def test_probe_waits_for_an_agent_that_is_merely_slow(make_agent: Callable[..., AgentProcess]) -> None:
    """The load test's failure: Info answered after 5 s, the probe gave up at 3 s (DEADLINE_EXCEEDED)."""
    agent = make_agent()
    started = time.monotonic()
    with stopped(agent, for_s=4.0):
        device = probe(agent.address)
    assert device.agent_id == agent.agent_id
    assert time.monotonic() - started >= 4.0


def test_probe_retries_until_the_agent_starts(
    make_agent: Callable[..., AgentProcess], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rkfarm.remote.retry")
    agent = AgentProcess(tmp_path / "late", "late-agent", advertise=False)
    agent.port = free_port()
    address = agent.address
    result = in_thread(lambda: probe(address, timeout_s=30))
    try:
        wait_for(retried(caplog, f"Info {address}"), 10, "a refused first attempt")
        agent.start()
        device = result()
        assert isinstance(device, Device) and device.agent_id == "late-agent"
    finally:
        agent.stop()


def test_the_timeout_comes_from_the_environment_or_the_keyword(
    make_agent: Callable[..., AgentProcess], cls_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """init_runtime has no timeout parameter (the vendor's API): RKFARM_TIMEOUT_S bounds it; open_agent takes it."""
    agent = make_agent()
    package = read_package(cls_package)
    monkeypatch.setenv("RKFARM_TIMEOUT_S", "1.5")
    with RKNN(raise_errors=True) as rknn, stopped(agent):
        rknn.load_rknn(str(cls_package))
        started = time.monotonic()
        with pytest.raises(AgentUnavailableError, match=r"DEADLINE_EXCEEDED.*gave up after 1\.\d s; RKFARM_TIMEOUT_S"):
            rknn.init_runtime(target="rk3588", device_id=agent.address)
        assert 1.5 <= time.monotonic() - started < 2.5
        started = time.monotonic()
        with pytest.raises(AgentUnavailableError) as err:
            open_agent(package, "rk3588", agent.address, LoadOptions(), timeout_s=0.5)
        assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert 0.5 <= time.monotonic() - started < 1.5
    monkeypatch.setenv("RKFARM_TIMEOUT_S", "20")
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package))
        with stopped(agent, for_s=4.0):  # longer than the old fixed 3 s, well within 20
            assert rknn.init_runtime(target="rk3588", device_id=agent.address) == 0
        assert rknn.inference([IMAGE]) is not None


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf"])
def test_a_bad_timeout_setting_is_one_clear_line(
    agent: AgentProcess, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RKFARM_TIMEOUT_S", value)
    with pytest.raises(RemoteError, match=rf"^RKFARM_TIMEOUT_S={value}: the timeout must be a number of seconds"):
        probe(agent.address)


def test_only_what_waiting_can_fix_is_retried(
    make_agent: Callable[..., AgentProcess], cls_package: Path, tmp_path: Path
) -> None:
    def remote(code: grpc.StatusCode, refused: str | None = None) -> RemoteError:
        return RemoteError("x", code=code, refused=refused)

    assert transient(AgentUnavailableError("x", code=grpc.StatusCode.UNAVAILABLE))
    assert transient(remote(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert transient(remote(grpc.StatusCode.RESOURCE_EXHAUSTED, REFUSED_RUNS))
    assert transient(remote(grpc.StatusCode.RESOURCE_EXHAUSTED, REFUSED_UPLOADS))
    assert not transient(remote(grpc.StatusCode.RESOURCE_EXHAUSTED, REFUSED_STREAMS))  # falls back to unary
    assert not transient(remote(grpc.StatusCode.RESOURCE_EXHAUSTED))  # a limit with no kind: --max-sessions
    assert not transient(AgentAuthError("x", code=grpc.StatusCode.UNAVAILABLE))  # a TLS refusal looks like this
    assert not transient(remote(grpc.StatusCode.UNAUTHENTICATED))
    assert not transient(remote(grpc.StatusCode.INVALID_ARGUMENT))
    assert not transient(InputError("x"))

    # Against real agents: a missing token and a full agent are reported at once, not after the timeout.
    token = tmp_path / "token"
    write_token(token)
    guarded = AgentProcess(tmp_path / "guarded", "guarded", "--token-file", str(token), advertise=False,
                           credentials=Credentials.load(token_file=token, env={})).start()  # fmt: skip
    try:
        started = time.monotonic()
        with pytest.raises(AgentAuthError, match="RKFARM_TOKEN_FILE"):
            probe(guarded.address, timeout_s=20, credentials=NOBODY)
        assert time.monotonic() - started < 2
    finally:
        guarded.stop()
    full = make_agent("--max-sessions", "1")
    package = read_package(cls_package)
    device = probe(full.address)
    first = RemoteRuntime(package, device, LoadOptions(), timeout_s=20)
    try:
        started = time.monotonic()
        with pytest.raises(RemoteError, match=r"RESOURCE_EXHAUSTED.*--max-sessions") as err:
            RemoteRuntime(package, device, LoadOptions(), timeout_s=20)
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 2
    finally:
        first.close()


def test_a_session_opens_through_an_agent_restart(
    make_agent: Callable[..., AgentProcess], cls_package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rkfarm.remote.retry")
    agent = make_agent()
    package = read_package(cls_package)
    device = probe(agent.address)
    agent.kill()
    opening = in_thread(lambda: RemoteRuntime(package, device, LoadOptions(), timeout_s=30))
    wait_for(retried(caplog, "upload of"), 10, "a refused first attempt")
    agent.start()  # same port, same store
    runtime = opening()
    assert isinstance(runtime, RemoteRuntime)
    try:
        assert runtime.inference([IMAGE])[0].shape == (1, 2)
    finally:
        runtime.close()


def test_a_model_corrupt_on_disk_is_uploaded_again(
    make_agent: Callable[..., AgentProcess], cls_package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent()
    package = read_package(cls_package)
    blob = pack(package.header, package.payload)[1]
    device = probe(agent.address)
    first = RemoteRuntime(package, device, LoadOptions())
    expected = first.inference([IMAGE])
    assert first.uploaded_bytes == len(blob)
    first.close()
    stored = agent.store / "models" / f"{sha256_hex(blob)}.rkfm"
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))  # the agent is running: it finds out at the next Load
    with caplog.at_level(logging.WARNING, logger="rkfarm.remote.runtime"):
        second = RemoteRuntime(package, device, LoadOptions())
    try:
        assert second.uploaded_bytes == len(blob)
        np.testing.assert_array_equal(second.inference([IMAGE])[0], expected[0])
    finally:
        second.close()
    assert "corrupt on disk" in agent.log()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # The agent reports the quarantined model as unknown (NOT_FOUND, unknown-model); an older one answered
    # INVALID_ARGUMENT with no error kind, and the host then finds the model gone (GetModel): both re-upload.
    assert any("corrupt on disk" in m and "uploading the model again" in m for m in warnings), warnings
    with AgentClient(agent.address) as client:
        assert client.model_status(sha256_hex(blob)).present
