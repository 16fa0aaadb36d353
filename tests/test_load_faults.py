"""The agent killed (SIGKILL) in the middle of work, then restarted on the same port and store.

Extends tests/test_agent_faults.py (which kills the agent between calls, cuts a client off mid-upload and
corrupts a stored model while it is down): here the agent itself dies during an upload, during inferences
from several clients, and during both at once. After each restart the store verifies, holds only files that
hash to their names, never serves a partial model, and the hosts carry on by themselves.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from agent_fixtures import AgentProcess

from rkfarm import RKNN
from rkfarm.remote.client import AgentClient
from rkfarm.samples import TextLine
from rkfarm_proto.package import pack, read_package, sha256_hex
from rkfarm_proto.v1 import agent_pb2, agent_pb2_grpc

CHUNK = 64 * 1024


def blob_of(path: Path) -> bytes:
    package = read_package(path)
    return pack(package.header, package.payload)[1]


def start_agent(root: Path) -> AgentProcess:
    return AgentProcess(root / "store", f"crash-{uuid.uuid4().hex[:8]}", advertise=False).start()


def stored_models(agent: AgentProcess) -> set[str]:
    """The models in the store, each checked to hash to its name."""
    shas = set()
    for path in (agent.store / "models").iterdir():
        assert path.suffix == ".rkfm" and hashlib.sha256(path.read_bytes()).hexdigest() == path.stem, path
        shas.add(path.stem)
    return shas


def verified_at_start(agent: AgentProcess) -> set[str]:
    """Right after a restart: what the start-up verification kept, and that it quarantined nothing."""
    shas = stored_models(agent)
    verified = re.findall(r"(\d+) model\(s\) verified, (\d+) quarantined", agent.log())
    assert verified and verified[-1] == (str(len(shas)), "0"), verified[-1:]
    return shas


def expected_outputs(package: Path, images: list[np.ndarray]) -> list[np.ndarray]:
    with RKNN(raise_errors=True) as sim:
        sim.load_rknn(str(package))
        sim.init_runtime()
        return [sim.inference([img])[0] for img in images]  # type: ignore[index]


class SlowUpload:
    """An upload that sends a few chunks, then waits (the agent dies meanwhile), from its own thread."""

    def __init__(self, agent: AgentProcess, blob: bytes, chunks_before_pause: int) -> None:
        self.sha = sha256_hex(blob)
        self.paused = threading.Event()
        self.release = threading.Event()
        self.error: grpc.RpcError | None = None

        def chunks() -> Iterator[agent_pb2.UploadChunk]:
            for i, start in enumerate(range(0, len(blob), CHUNK)):
                if i == chunks_before_pause:
                    self.paused.set()
                    self.release.wait(30)
                first = i == 0
                yield agent_pb2.UploadChunk(
                    sha256=self.sha if first else "", total_size=len(blob) if first else 0,
                    data=blob[start : start + CHUNK],
                )  # fmt: skip

        def run() -> None:
            with grpc.insecure_channel(agent.address) as channel:
                try:
                    agent_pb2_grpc.AgentStub(channel).Upload(chunks(), timeout=30)
                except grpc.RpcError as exc:
                    self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.release.set()
        self.thread.join(30)


def test_killed_during_an_upload_resumes_and_never_serves_the_partial(
    tmp_path: Path, cls_package: Path, cls_package_fp32: Path, cls_lines: list[TextLine]
) -> None:
    agent = start_agent(tmp_path)
    small, big = blob_of(cls_package), blob_of(cls_package_fp32)
    with agent.client() as client:
        client.ensure_model(small)  # a complete model already in the store
    upload = SlowUpload(agent, big, chunks_before_pause=3)
    assert upload.paused.wait(10)
    time.sleep(0.3)  # the agent writes what arrived
    agent.kill()
    upload.finish()
    assert upload.error is not None and upload.error.code() == grpc.StatusCode.UNAVAILABLE
    agent.start()
    try:
        assert verified_at_start(agent) == {sha256_hex(small)}
        with agent.client() as client:
            status = client.model_status(upload.sha)
            assert not status.present and 0 < status.partial_bytes <= 3 * CHUNK
            with pytest.raises(Exception, match="NOT_FOUND"):
                client.load(agent_pb2.LoadRequest(model_sha256=upload.sha))  # a partial is never loadable
            sent = client.ensure_model(big)
            assert sent == len(big) - status.partial_bytes, "the host resumed where the agent left off"
            session = client.load(agent_pb2.LoadRequest(model_sha256=upload.sha)).session_id
            image = cls_lines[0].image[np.newaxis]
            got = client.infer(AgentClient.infer_request(session, [image], None, None))[0]
        np.testing.assert_allclose(got, expected_outputs(cls_package_fp32, [image])[0], rtol=0, atol=1e-6)
        assert stored_models(agent) == {sha256_hex(small), upload.sha}
    finally:
        agent.stop()


@pytest.mark.parametrize("damage", ["header", "payload"])
def test_a_damaged_partial_upload_is_sent_again_whole(tmp_path: Path, cls_package_fp32: Path, damage: str) -> None:
    """A kept partial damaged while the agent was down: the resume is refused, the host starts over."""
    agent = start_agent(tmp_path)
    big = blob_of(cls_package_fp32)
    upload = SlowUpload(agent, big, chunks_before_pause=3)
    assert upload.paused.wait(10)
    time.sleep(0.3)
    agent.kill()
    upload.finish()
    part = agent.store / "partial" / f"{upload.sha}.part"
    data = bytearray(part.read_bytes())
    data[10 if damage == "header" else len(data) - 100] ^= 0xFF
    part.write_bytes(bytes(data))
    agent.start()
    try:
        assert verified_at_start(agent) == set()
        with agent.client() as client:
            assert client.model_status(upload.sha).partial_bytes > 0
            assert client.ensure_model(big) == len(big)
            assert client.model_status(upload.sha).present
            client.load(agent_pb2.LoadRequest(model_sha256=upload.sha))
        assert stored_models(agent) == {upload.sha}
        assert agent.alive()
    finally:
        agent.stop()


@pytest.mark.slow
def test_killed_during_runs_and_uploads_hosts_carry_on(
    tmp_path: Path, cls_package: Path, cls_package_fp32: Path, cls_lines: list[TextLine]
) -> None:
    """4 RKNN clients inferring, an upload in flight, SIGKILL, restart: every answer right, none missing."""
    agent = start_agent(tmp_path)
    images = [line.image for line in cls_lines[:8]]
    expected = expected_outputs(cls_package, images)
    clients, per_client = 4, 40
    results: list[list[bool]] = [[] for _ in range(clients)]
    errors: list[str] = []
    progress = threading.Semaphore(0)

    def run(index: int) -> None:
        try:
            with RKNN(raise_errors=True) as rknn:
                rknn.load_rknn(str(cls_package))
                rknn.init_runtime(target="rk3588", device_id=agent.address)
                for i in range(per_client):
                    k = (index + i) % len(images)
                    out = rknn.inference([images[k]])
                    results[index].append(out is not None and np.allclose(out[0], expected[k], rtol=0, atol=1e-6))
                    progress.release()
        except Exception as exc:
            errors.append(f"client {index}: {exc!r}")

    with agent.client() as client:
        # Uploaded once up front: clients racing to upload the same model can hit a store.status race
        # (FileNotFoundError -> INTERNAL), left to the store's owner.
        client.ensure_model(blob_of(cls_package))
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        for _ in range(clients * 5):  # everyone is running
            assert progress.acquire(timeout=30)
        upload = SlowUpload(agent, blob_of(cls_package_fp32), chunks_before_pause=2)
        assert upload.paused.wait(10)
        agent.kill()  # SIGKILL: runs and an upload in flight
        upload.finish()
        time.sleep(0.5)  # the hosts see the agent gone
        agent.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert [len(r) for r in results] == [per_client] * clients, "no inference lost"
        assert all(all(r) for r in results), "every answer equals the simulator's"
        shas = stored_models(agent)
        assert re.findall(r"(\d+) model\(s\) verified, (\d+) quarantined", agent.log())[-1] == ("1", "0")
        assert sha256_hex(blob_of(cls_package)) in shas and upload.sha not in shas
        with agent.client() as client:
            assert len(client.list_sessions()) == 0, "the re-opened sessions were closed by their hosts"
    finally:
        agent.stop()
