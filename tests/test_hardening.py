"""What an adversary (or a careless client) did to a real agent, and the bound that now holds for each.

Every test drives a real agent process on 127.0.0.1 and states the figure it bounds.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from agent_fixtures import AgentProcess, PeakRss, rss

from rkfarm.errors import InputError, RemoteError, SessionLostError
from rkfarm.keys import make_farm_key
from rkfarm.remote.client import AgentClient
from rkfarm.remote.credentials import Credentials
from rkfarm_agent.backends.onnxruntime import profile as ort_profile
from rkfarm_agent.certs import make_lab_pki
from rkfarm_proto.crypto import encrypt_package, read_farm_key, scrypt_bytes
from rkfarm_proto.package import ModelPackage, pack, read_package, sha256_hex
from rkfarm_proto.records import PerfOptions
from rkfarm_proto.tensors import to_tensor
from rkfarm_proto.v1 import agent_pb2, agent_pb2_grpc, package_pb2

MiB = 1 << 20
IMAGE = np.zeros((1, 48, 192, 3), np.uint8)


def blob_of(package: ModelPackage) -> bytes:
    return pack(package.header, package.payload)[1]


def with_header(package: ModelPackage, change: Callable[[package_pb2.PackageHeader], None]) -> bytes:
    header = package_pb2.PackageHeader()
    header.CopyFrom(package.header)
    change(header)
    return pack(header, package.payload)[1]


def open_session(client: AgentClient, blob: bytes, name: str = "") -> str:
    client.ensure_model(blob)
    return client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(blob), client=name)).session_id


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def farm_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_farm_key(tmp_path_factory.mktemp("keys") / "farm.key")


# -- 1. memory cost chosen by the sender ----------------------------------------------------------------------
def test_the_sender_cannot_choose_the_key_derivation_cost(
    make_agent: Callable[..., AgentProcess], cls_package: Path, farm_key: Path
) -> None:
    """A package asking scrypt at 2^20 (1 GiB) is refused before deriving: RSS grows < 64 MiB (was 1.1 GiB);
    four concurrent level-3 Loads derive one at a time: peak growth < 2 x 128 MiB (was 4 x 128 MiB + models)."""
    agent = make_agent("--farm-key-file", str(farm_key))
    sealed = encrypt_package(read_package(cls_package), 3, read_farm_key(farm_key))
    costly = with_header(sealed, lambda h: setattr(h.encryption, "scrypt_log2_n", 20))
    with agent.client() as client, PeakRss(agent) as peak:
        client.ensure_model(costly)
        with pytest.raises(RemoteError, match="not those of level 3") as err:
            client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(costly)))
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert peak.growth < 64 * MiB, f"RSS grew {peak.growth / MiB:.0f} MiB"

    blob = blob_of(sealed)
    with agent.client() as client:
        client.ensure_model(blob)
    time.sleep(0.5)  # let the upload's buffers settle before the baseline
    with PeakRss(agent) as peak, ThreadPoolExecutor(4) as pool:

        def load(_: int) -> str:
            with agent.client() as c:
                return c.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(blob))).session_id

        sessions = list(pool.map(load, range(4)))
    assert len(set(sessions)) == 4
    assert peak.growth < 2 * scrypt_bytes(17), f"peak RSS growth {peak.growth / MiB:.0f} MiB"
    assert agent.alive()


def test_a_header_cannot_make_the_agent_allocate(make_agent: Callable[..., AgentProcess], cls_package: Path) -> None:
    """A header declaring a [1,3,8192,8192] input (805 MB) is refused at Load, naming the limit, with RSS
    growth < 64 MiB — ONNX Runtime's first import included (EvalPerf used to allocate 800 MiB); a header that
    disagrees with its payload is refused."""
    agent = make_agent()
    package = read_package(cls_package)
    huge = with_header(package, lambda h: h.inputs[0].tensor.shape.__setitem__(slice(None), [1, 3, 8192, 8192]))
    wrong = with_header(package, lambda h: h.inputs[0].tensor.shape.__setitem__(slice(None), [1, 3, 48, 193]))
    with agent.client() as client, PeakRss(agent) as peak:
        client.ensure_model(huge)
        with pytest.raises(RemoteError, match=r"takes 805306368 bytes.*--max-message") as err:
            client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(huge)))
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        client.ensure_model(wrong)
        with pytest.raises(RemoteError, match=r"header says \[1, 3, 48, 193\], the payload takes \[1, 3, 48, 192\]"):
            client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(wrong)))
    assert peak.growth < 64 * MiB, f"RSS grew {peak.growth / MiB:.0f} MiB"


# -- 2. sessions belong to who opened them ----------------------------------------------------------------------
def test_sessions_belong_to_who_opened_them(cls_package: Path, tmp_path: Path) -> None:
    """With client certificates, another client sees that a session exists but not its id, and cannot infer
    on, renew or unload it even with the id; the owner is unaffected."""
    pki = make_lab_pki(tmp_path / "pki", "board", clients=["alice", "mallory"])
    assert pki.agent_cert and pki.agent_key

    def creds(who: str) -> Credentials:
        cert, key = pki.clients[who]
        return Credentials.load(tls_ca=pki.ca_cert, tls_cert=cert, tls_key=key, env={})

    mtls = ["--tls-cert", str(pki.agent_cert), "--tls-key", str(pki.agent_key), "--tls-client-ca", str(pki.ca_cert)]
    blob = blob_of(read_package(cls_package))
    with (
        AgentProcess(tmp_path / "store", "owned", *mtls, advertise=False, credentials=creds("alice")) as agent,
        AgentClient(agent.address, credentials=creds("alice")) as alice,
    ):
        session = open_session(alice, blob, "alice")
        with AgentClient(agent.address, credentials=creds("mallory")) as mallory:
            listed = mallory.list_sessions()
            assert [(s.session_id, s.yours, s.client) for s in listed] == [("", False, "alice")]
            assert [(s.session_id, s.yours) for s in alice.list_sessions()] == [(session, True)]
            request = AgentClient.infer_request(session, [IMAGE], None, None)
            with pytest.raises(SessionLostError, match="no session"):
                mallory.infer(request)
            for call in (mallory.keep_alive, mallory.unload, mallory.eval_memory):
                with pytest.raises(RemoteError, match="NOT_FOUND"):
                    call(session)
            with pytest.raises(RemoteError, match="NOT_FOUND"):
                mallory.eval_perf(session, PerfOptions(runs=1))
        assert alice.infer(request)[0].shape == (1, 2)
        alice.unload(session)


# -- 3. per-client limits under concurrency -----------------------------------------------------------------------
def test_the_per_client_session_limit_holds_under_concurrency(
    make_agent: Callable[..., AgentProcess], cls_package: Path
) -> None:
    """16 concurrent Loads from one client with --max-sessions-per-client 4: exactly 4 sessions (was 16)."""
    agent = make_agent("--max-sessions-per-client", "4", "--max-sessions", "32")
    blob = blob_of(read_package(cls_package))
    with agent.client() as client:
        client.ensure_model(blob)
    start = threading.Barrier(16)

    def load(_: int) -> str:
        with agent.client() as c:
            start.wait()
            try:
                c.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(blob)))
                return "ok"
            except RemoteError as exc:
                assert exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "--max-sessions-per-client" in str(exc)
                return "refused"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(load, range(16)))
    assert outcomes.count("ok") == 4 and outcomes.count("refused") == 12
    with agent.client() as client:
        assert len(client.list_sessions()) == 4


# -- 5. slots held forever -----------------------------------------------------------------------------------------
def test_an_idle_upload_gives_its_slot_back(make_agent: Callable[..., AgentProcess], cls_package: Path) -> None:
    """An upload that sends part of a package then nothing is cancelled after --stream-stall-seconds (1 s
    here): the client's only upload slot is free again within 4 s (it was held as long as the connection)."""
    agent = make_agent("--max-uploads", "2", "--stream-stall-seconds", "1")
    idle = threading.Event()
    outcome: dict[str, object] = {}
    package = read_package(cls_package)
    first = blob_of(package)
    blob = with_header(package, lambda h: setattr(h, "custom_string", "another model"))

    def stalled() -> Iterator[agent_pb2.UploadChunk]:
        half = first[: len(first) // 2]
        yield agent_pb2.UploadChunk(sha256=sha256_hex(first), total_size=len(first), offset=0, data=half)
        idle.wait(30)

    def upload() -> None:
        with grpc.insecure_channel(agent.address) as channel:
            try:
                agent_pb2_grpc.AgentStub(channel).Upload(stalled(), timeout=30)
            except grpc.RpcError as exc:
                outcome["code"] = exc.code()

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    try:
        with agent.client(timeout_s=5) as client:

            def second_upload_admitted() -> bool:
                try:
                    client.ensure_model(blob, wait_s=0)
                    return True
                except RemoteError as exc:
                    assert exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                    return False

            # refused while the stalled upload holds the client's only slot, admitted once it is cancelled
            wait_for(lambda: not second_upload_admitted(), 10, "the stalled upload holds the slot")
            assert wait_for(second_upload_admitted, 4, "the idle upload's slot came free") < 4
        thread.join(10)
        assert outcome.get("code") == grpc.StatusCode.CANCELLED
        assert "has not sent anything for 1 s" in agent.log()
    finally:
        idle.set()


def test_eval_perf_keeps_to_the_request_limit_and_stops_with_its_client(
    make_agent: Callable[..., AgentProcess], cls_package: Path
) -> None:
    """warmup=10000 under --max-request-seconds 1 answers within 3 s (was 41 s); a client that cancels its
    EvalPerf frees the only run slot within 2 s, so another call runs at once."""
    blob = blob_of(read_package(cls_package))
    limited = make_agent("--max-request-seconds", "1")
    with limited.client() as client:
        session = open_session(client, blob)
        started = time.monotonic()
        response = client.eval_perf(session, PerfOptions(runs=5, warmup=10_000))
        assert time.monotonic() - started < 3.0 and len(response.run_times_us) >= 1

    agent = make_agent("--max-concurrent-runs", "1", "--max-run-wait-seconds", "30")
    with agent.client() as client:
        session = open_session(client, blob)
        request = AgentClient.infer_request(session, [IMAGE], None, None)
        client.infer(request)
        with grpc.insecure_channel(agent.address) as channel:
            call = agent_pb2_grpc.AgentStub(channel).EvalPerf.future(
                PerfOptions(runs=10, warmup=1_000_000).to_request(session), timeout=60
            )
            time.sleep(0.5)  # the agent is now warming up, holding the run slot
            call.cancel()
            cancelled_at = time.monotonic()
        client.infer(request)  # waits for the run slot
        assert time.monotonic() - cancelled_at < 2.0
    # the slot is freed before the refusal is logged: wait for the line rather than race it
    deadline = time.monotonic() + 10
    while not ("EvalPerf: client gone" in agent.log() or "caller went away" in agent.log()):
        assert time.monotonic() < deadline, agent.log()[-2000:]
        time.sleep(0.05)


# -- 6. log injection and amplification ------------------------------------------------------------------------------
def test_client_strings_cannot_forge_or_flood_the_log(
    make_agent: Callable[..., AgentProcess], cls_package: Path
) -> None:
    """A client name with a newline is escaped (no forged line); a 10 MiB name is kept as 64 characters and
    grows the log by < 64 KiB (was 10 MiB per Load and per listing); a 16 KiB data_format is refused as
    INVALID_ARGUMENT with a message of at most 1 KiB (it overflowed the metadata limit)."""
    agent = make_agent()
    blob = blob_of(read_package(cls_package))
    forged = "alice\n2026-12-02 00:00:00 INFO rkfarm_agent.auth: token accepted for root"
    with agent.client() as client:
        open_session(client, blob, forged)
        before = agent.log_path.stat().st_size
        session = open_session(client, blob, "x" * (10 * MiB))
        names = sorted(s.client for s in client.list_sessions())
        request = AgentClient.infer_request(session, [IMAGE], ["n" * 16384], None)
        with pytest.raises(InputError) as err:
            client.infer(request)
    assert len(str(err.value)) <= 1024
    assert agent.log_path.stat().st_size - before < 64 * 1024
    assert names[0].startswith("alice\\n2026") and "\n" not in names[0] and len(names[0]) <= 64
    assert names[1] == "x" * 63 + "…"
    assert "\n2026-12-02 00:00:00 INFO rkfarm_agent.auth" not in agent.log()


# -- 7. no profile trace on disk ---------------------------------------------------------------------------------
def test_profiling_leaves_no_trace_on_disk(
    make_agent: Callable[..., AgentProcess],
    cls_package: Path,
    farm_key: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Per-layer EvalPerf on an encrypted model writes ONNX Runtime's trace (node names, shapes) only to a
    private folder in memory (/dev/shm), removed when the call returns; nothing lands in TMPDIR."""
    if ort_profile.trace_root() != ort_profile.MEMORY_DIR:
        pytest.skip("this machine has no writable /dev/shm")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    agent = make_agent("--farm-key-file", str(farm_key))
    sealed = blob_of(encrypt_package(read_package(cls_package), 1, read_farm_key(farm_key)))
    leftovers_before = set(ort_profile.MEMORY_DIR.glob(ort_profile.PREFIX + "*"))
    with agent.client() as client:
        session = open_session(client, sealed)
        response = client.eval_perf(session, PerfOptions(runs=3, warmup=1, per_layer=True))
    assert response.layers, "no per-layer times"
    # ONNX Runtime itself leaves a 51-byte ``.ses`` marker (a timestamp and a random id), nothing of the model
    assert [p.name for p in tmpdir.rglob("*") if p.name != ".ses"] == []
    assert set(ort_profile.MEMORY_DIR.glob(ort_profile.PREFIX + "*")) <= leftovers_before


def test_trace_folders_are_private_removed_on_error_and_swept(tmp_path: Path) -> None:
    seen: list[Path] = []

    def failing_run(prefix: str) -> str:
        folder = Path(prefix).parent
        seen.append(folder)
        assert folder.stat().st_mode & 0o777 == 0o700 and folder.parent == ort_profile.trace_root()
        raise RuntimeError("profiling failed")

    with pytest.raises(RuntimeError):
        ort_profile.profiled(failing_run)
    assert seen and not seen[0].exists()
    stale, fresh = tmp_path / (ort_profile.PREFIX + "dead"), tmp_path / (ort_profile.PREFIX + "busy")
    stale.mkdir()
    fresh.mkdir()
    old = time.time() - ort_profile.STALE_S - 60
    os.utime(stale, (old, old))
    assert ort_profile.sweep_stale(tmp_path) == [stale]
    assert not stale.exists() and fresh.exists()


def test_memory_goes_back_after_cancelled_streams(make_agent: Callable[..., AgentProcess], cls_package: Path) -> None:
    """16 streams that each sent a 32 MiB request (refused: wrong shape) and were then cancelled: within 5 s the
    agent's RSS is back within 64 MiB of where it was (the memory trimmer ran only when sessions closed; streams
    ending left ~500 MiB).

    That the agent received the requests is shown by each call's INVALID_ARGUMENT (gRPC hands a handler only
    whole messages), not by catching RSS above a mark: on a fast machine the agent refuses and frees them all
    between two samples."""
    agent = make_agent()
    blob = blob_of(read_package(cls_package))
    with agent.client() as client:
        session = open_session(client, blob)
        client.infer(AgentClient.infer_request(session, [IMAGE], None, None))
    big = agent_pb2.InferRequest(session_id=session, inputs=[to_tensor(np.zeros(8 * MiB, np.float32))])
    stop = threading.Event()

    def held() -> Iterator[agent_pb2.InferRequest]:
        yield big
        stop.wait(60)

    options = [("grpc.max_send_message_length", 64 * MiB)]
    channels = [grpc.insecure_channel(agent.address, options=options) for _ in range(16)]
    with PeakRss(agent) as peak:
        try:
            calls = [agent_pb2_grpc.AgentStub(channel).InferStream(held()) for channel in channels]
            wait_for(lambda: all(call.done() for call in calls), 30, "the agent answered every stream")
            for call in calls:
                call.cancel()
        finally:
            stop.set()
            for channel in channels:
                channel.close()
    assert [call.code() for call in calls] == [grpc.StatusCode.INVALID_ARGUMENT] * 16
    assert peak.growth >= 32 * MiB, f"RSS never grew by one request ({peak.growth >> 20} MiB)"
    wait_for(lambda: rss(agent) - peak.before < 64 * MiB, 5, "RSS back within 64 MiB")
    assert agent.alive()


def test_an_agent_that_cannot_be_asked_is_not_left_running(tmp_path: Path) -> None:
    """LocalAgent.start() that fails after the process started (here: the host speaks TLS to a plaintext
    agent) stops that process instead of leaving it serving (and advertising) behind the caller."""
    pki = make_lab_pki(tmp_path / "pki", "board")
    tls_only = Credentials.load(tls_ca=pki.ca_cert, env={})
    agent = AgentProcess(tmp_path / "store", "unaskable", advertise=False, credentials=tls_only)
    with pytest.raises(RemoteError):
        agent.start(timeout_s=3)
    assert agent.proc is not None and agent.proc.poll() is not None
