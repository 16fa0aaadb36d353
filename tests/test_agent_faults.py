"""Bad input and faults against a real agent: every one gets a clear status, and the agent keeps serving."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from agent_fixtures import AgentProcess

from rkfarm import RKNN
from rkfarm.errors import InputError, RemoteError
from rkfarm.remote.client import AgentClient, SessionLostError
from rkfarm_proto.package import pack, read_package, sha256_hex
from rkfarm_proto.transport import UNKNOWN_MODEL, UNKNOWN_SESSION
from rkfarm_proto.v1 import agent_pb2, agent_pb2_grpc

DATA = Path(__file__).parent / "data"
IMAGE = np.zeros((1, 48, 192, 3), np.uint8)


def blob_of(package_path: Path) -> bytes:
    package = read_package(package_path)
    return pack(package.header, package.payload)[1]


def open_session(client: AgentClient, blob: bytes, lease_s: float = 0.0) -> str:
    client.ensure_model(blob)
    return client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(blob), lease_s=lease_s)).session_id


def test_unknown_session_is_not_found(agent: AgentProcess) -> None:
    with AgentClient(agent.address) as client:
        with pytest.raises(SessionLostError, match="no session 'nope'") as err:
            client.infer(AgentClient.infer_request("nope", [IMAGE], None, None))
        assert err.value.code == grpc.StatusCode.NOT_FOUND and err.value.kind == UNKNOWN_SESSION
        with pytest.raises(SessionLostError, match="NOT_FOUND"):
            client.eval_memory("nope")
        # the same status for a model the agent lacks is not a lost session: the kind tells them apart
        with pytest.raises(RemoteError) as missing:
            client.load(agent_pb2.LoadRequest(model_sha256="0" * 64))
        assert missing.value.code == grpc.StatusCode.NOT_FOUND and missing.value.kind == UNKNOWN_MODEL
        assert not isinstance(missing.value, SessionLostError)
    assert agent.alive()


@pytest.mark.parametrize(
    ("array", "pattern"),
    [
        (np.zeros((1, 48, 100, 3), np.uint8), r"input 'x': expected shape \[1, 48, 192, 3\].*got \[1, 48, 100, 3\]"),
        (np.zeros((1, 48, 192, 3), np.complex64), r"dtype complex64 is not supported"),
    ],
)
def test_wrong_shape_or_dtype_names_the_input(
    agent: AgentProcess, cls_package: Path, array: np.ndarray, pattern: str
) -> None:
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package))
        rknn.init_runtime(target="rk3588", device_id=agent.address)
        with pytest.raises(InputError, match=pattern):
            rknn.inference([array])
        assert rknn.inference([IMAGE]) is not None  # the session survives a bad request
    assert agent.alive()


def test_raw_bytes_that_do_not_match_their_shape(agent: AgentProcess, cls_package: Path) -> None:
    with AgentClient(agent.address) as client:
        session = open_session(client, blob_of(cls_package))
        request = AgentClient.infer_request(session, [IMAGE], None, None)
        request.inputs[0].data = request.inputs[0].data[:-7]
        with pytest.raises(InputError, match="do not match"):
            client.infer(request)
        client.unload(session)
    assert agent.alive()


def test_upload_over_the_limit(
    make_agent: Callable[..., AgentProcess], cls_package: Path, cls_package_fp32: Path
) -> None:
    small, big = blob_of(cls_package), blob_of(cls_package_fp32)
    assert len(small) < 400 * 1024 < len(big)
    agent = make_agent("--max-upload", "400K")
    with AgentClient(agent.address) as client:
        assert client.ensure_model(small) == len(small)
        with pytest.raises(RemoteError, match=r"RESOURCE_EXHAUSTED.*over this agent's limit") as err:
            client.ensure_model(big)
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not client.model_status(sha256_hex(big)).present
        assert client.model_status(sha256_hex(small)).present, "store intact"
        session = open_session(client, small)
        assert client.infer(AgentClient.infer_request(session, [IMAGE], None, None))[0].shape == (1, 2)
    assert agent.alive()


def _chunks(sha: str, blob: bytes, size: int, stop_after: int | None = None) -> Iterator[agent_pb2.UploadChunk]:
    for i, start in enumerate(range(0, len(blob), size)):
        if stop_after is not None and i == stop_after:
            raise ConnectionError("client dies mid-upload")
        first = i == 0
        yield agent_pb2.UploadChunk(
            sha256=sha if first else "", total_size=len(blob) if first else 0, data=blob[start : start + size]
        )


def test_upload_cut_off_is_invisible_then_resumes(make_agent: Callable[..., AgentProcess], cls_package: Path) -> None:
    agent = make_agent()
    blob = blob_of(cls_package)
    sha = sha256_hex(blob)
    with grpc.insecure_channel(agent.address) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        with pytest.raises(grpc.RpcError):
            stub.Upload(_chunks(sha, blob, 64 * 1024, stop_after=2), timeout=10)
    with AgentClient(agent.address) as client:
        status = client.model_status(sha)
        assert not status.present, "a partial upload never becomes visible"
        with pytest.raises(RemoteError, match="NOT_FOUND"):
            client.load(agent_pb2.LoadRequest(model_sha256=sha))
        assert not (agent.store / "models" / f"{sha}.rkfm").exists()
        sent = client.ensure_model(blob)
        assert sent <= len(blob) - status.partial_bytes, "resumed from the partial upload"
        session = open_session(client, blob)
        assert client.infer(AgentClient.infer_request(session, [IMAGE], None, None))[0].shape == (1, 2)
    assert agent.alive()


def test_uploads_that_lie_are_refused(make_agent: Callable[..., AgentProcess], cls_package: Path) -> None:
    agent = make_agent()
    junk = b"not a model at all" * 100
    with grpc.insecure_channel(agent.address) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        wrong_sha = hashlib.sha256(b"something else").hexdigest()
        with pytest.raises(grpc.RpcError) as err:  # a real package announced under another hash
            stub.Upload(_chunks(wrong_sha, blob_of(cls_package), 64 * 1024), timeout=10)
        assert err.value.code() == grpc.StatusCode.DATA_LOSS
        with pytest.raises(grpc.RpcError) as err:
            stub.Upload(_chunks(hashlib.sha256(junk).hexdigest(), junk, 1000), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid model package" in (err.value.details() or "")
        with pytest.raises(grpc.RpcError) as err:
            stub.Upload(_chunks("../../etc/passwd", junk, 1000), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert not list((agent.store / "models").iterdir())
    assert agent.alive()


def test_expired_lease_frees_the_session(agent: AgentProcess, cls_package: Path) -> None:
    with AgentClient(agent.address) as client:
        session = open_session(client, blob_of(cls_package), lease_s=1.0)
        assert session in {s.session_id for s in client.list_sessions()}
        time.sleep(1.8)
        assert session not in {s.session_id for s in client.list_sessions()}
        with pytest.raises(SessionLostError):
            client.infer(AgentClient.infer_request(session, [IMAGE], None, None))
    assert agent.alive()


def test_too_many_sessions(make_agent: Callable[..., AgentProcess], cls_package: Path) -> None:
    agent = make_agent("--max-sessions", "2")
    blob = blob_of(cls_package)
    with AgentClient(agent.address) as client:
        open_session(client, blob)
        open_session(client, blob)
        with pytest.raises(RemoteError, match=r"RESOURCE_EXHAUSTED.*2 sessions") as err:
            open_session(client, blob)
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert agent.alive()


def test_client_killed_mid_stream(agent: AgentProcess, cls_package: Path) -> None:
    blob = blob_of(cls_package)
    with AgentClient(agent.address) as client:
        client.ensure_model(blob)
    doomed = subprocess.Popen(
        [sys.executable, str(DATA / "stream_client.py"), agent.address, sha256_hex(blob), "1.5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert doomed.stdout is not None and doomed.stdout.readline().strip() == "streaming"
        doomed.kill()
        doomed.wait(10)
    finally:
        doomed.kill()
    with AgentClient(agent.address) as client:
        session = open_session(client, blob)
        out = client.infer(AgentClient.infer_request(session, [IMAGE], None, None))
        assert out[0].shape == (1, 2)
        deadline = time.monotonic() + 10
        while any(s.client == "doomed" for s in client.list_sessions()):
            assert time.monotonic() < deadline, "the killed client's session never expired"
            time.sleep(0.2)
        client.unload(session)
    assert agent.alive()


def test_agent_restarted_during_a_session(make_agent: Callable[..., AgentProcess], cls_package: Path) -> None:
    agent = make_agent()
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package))
        rknn.init_runtime(target="rk3588", device_id=agent.address)
        before = rknn.inference([IMAGE])
        agent.restart()  # SIGKILL, then start again on the same port and store
        after = rknn.inference([IMAGE])  # the host reconnects and re-opens the session
        assert before is not None and after is not None
        np.testing.assert_array_equal(before[0], after[0])
        assert rknn.eval_memory(is_print=False) is not None
    assert agent.alive()


def test_corrupt_store_is_quarantined_at_start(make_agent: Callable[..., AgentProcess], cls_package: Path) -> None:
    agent = make_agent()
    blob = blob_of(cls_package)
    sha = sha256_hex(blob)
    with AgentClient(agent.address) as client:
        client.ensure_model(blob)
    agent.kill()
    stored = agent.store / "models" / f"{sha}.rkfm"
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))
    agent.start()
    assert not stored.exists()
    assert list((agent.store / "quarantine").iterdir())
    with AgentClient(agent.address) as client:
        assert not client.model_status(sha).present
        assert client.ensure_model(blob) == len(blob)  # the host simply uploads it again
        open_session(client, blob)
    assert agent.alive()


def test_sigterm_is_graceful(make_agent: Callable[..., AgentProcess]) -> None:
    agent = make_agent()
    assert agent.stop() == 0
    assert "stopped advertising" in agent.log() or "advertising" not in agent.log()
    assert "rkfarm-agent stopped" in agent.log()
