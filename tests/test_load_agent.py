"""The agent under load and against clients that misbehave: real agent processes on 127.0.0.1.

* 32 clients x 50 inferences of the PP-OCR classifier at once, while one client is SIGKILLed mid-stream and
  another stops reading its responses: every answer equals the simulator's, none is lost, nobody stalls,
  and the agent's memory comes back near where it started.
* The bounds that make that true, one at a time: stream slots and the stalled-reader watchdog, the reserve
  of threads for short calls, and the model-run slots with their bounded wait.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import onnx
import psutil
import pytest
from agent_fixtures import AgentProcess
from onnx import TensorProto, helper
from onnx_models import make_model

from rkfarm import RKNN
from rkfarm.errors import RemoteError
from rkfarm.remote.client import AgentClient
from rkfarm.remote.discovery import probe
from rkfarm.remote.runtime import RemoteRuntime
from rkfarm.samples import TextLine
from rkfarm_proto.package import pack, read_package, sha256_hex
from rkfarm_proto.records import LoadOptions, PerfOptions
from rkfarm_proto.transport import REFUSED_STREAMS, refused_kind
from rkfarm_proto.v1 import agent_pb2, agent_pb2_grpc

DATA = Path(__file__).parent / "data"
CLIENTS = 32
PER_CLIENT = 50
NEG_ELEMENTS = 1024 * 1024  # 4 MB responses: one unread response fills the HTTP/2 flow-control window


def start_agent(root: Path, *extra: str) -> AgentProcess:
    return AgentProcess(root / f"store-{uuid.uuid4().hex[:6]}", f"load-{uuid.uuid4().hex[:8]}", *extra,
                        advertise=False).start()  # fmt: skip


def blob_of(path: Path) -> bytes:
    package = read_package(path)
    return pack(package.header, package.payload)[1]


@pytest.fixture(scope="module")
def neg_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = -x on float32[1, 1M]: big responses, trivial compute."""
    out = tmp_path_factory.mktemp("neg")
    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])],
        "neg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, NEG_ELEMENTS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, NEG_ELEMENTS])],
    )
    onnx.save(make_model(graph, 13), out / "neg.onnx")
    with RKNN(raise_errors=True) as rknn:
        rknn.config(float_dtype="float32")
        rknn.load_onnx(str(out / "neg.onnx"))
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(out / "neg.rkfm"))
    return out / "neg.rkfm"


class StuckReader:
    """Streams requests for a model with big outputs and never reads a response."""

    def __init__(self, agent: AgentProcess, package: Path, requests: int = 8) -> None:
        blob = blob_of(package)
        with agent.client() as client:
            client.ensure_model(blob)
            load = agent_pb2.LoadRequest(model_sha256=sha256_hex(blob), client="stuck-reader")
            self.session_id = client.load(load).session_id
        x = np.ones((1, NEG_ELEMENTS), np.float32)
        request = AgentClient.infer_request(self.session_id, [x], None, None)
        self._stop = threading.Event()

        def flood() -> Iterator[agent_pb2.InferRequest]:
            for _ in range(requests):
                yield request
            self._stop.wait()

        self._agent = agent
        self._channel = grpc.insecure_channel(agent.address)
        self.call = agent_pb2_grpc.AgentStub(self._channel).InferStream(flood())

    def close(self) -> None:
        self._stop.set()
        self.call.cancel()
        self._channel.close()
        with self._agent.client(timeout_s=5) as client:
            client.unload(self.session_id)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


def session_inferences(agent: AgentProcess, session_id: str) -> int:
    with agent.client() as client:
        return next((s.inferences for s in client.list_sessions() if s.session_id == session_id), -1)


def raw_stream(agent: AgentProcess, request: agent_pb2.InferRequest) -> list[agent_pb2.InferResponse]:
    with grpc.insecure_channel(agent.address) as channel:
        return list(agent_pb2_grpc.AgentStub(channel).InferStream(iter([request]), timeout=10))


# -- the bounds, one at a time -------------------------------------------------------------------------------
def test_stuck_reader_holds_one_stream_slot_until_the_watchdog_cancels_it(
    tmp_path: Path, cls_package: Path, neg_package: Path
) -> None:
    agent = start_agent(tmp_path, "--max-streams", "1", "--stream-stall-seconds", "2")
    stuck = StuckReader(agent, neg_package)
    try:
        wait_for(lambda: session_inferences(agent, stuck.session_id) >= 1, 10, "the stuck reader's first run")
        blob = blob_of(cls_package)
        image = np.zeros((1, 48, 192, 3), np.uint8)
        with agent.client(timeout_s=10) as client:
            client.ensure_model(blob)
            session = client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(blob))).session_id
            request = AgentClient.infer_request(session, [image], None, None)
            with pytest.raises(grpc.RpcError) as err:  # the only stream slot is taken...
                raw_stream(agent, request)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "streaming calls" in (err.value.details() or "")
            assert refused_kind(err.value.trailing_metadata()) == REFUSED_STREAMS  # the machine-readable reason
            started = time.monotonic()
            stream = client.lockstep()  # ...so the host's lock-step stream falls back to unary calls
            assert stream.call(request).outputs and stream.call(request).outputs
            assert time.monotonic() - started < 1.5, "refused and served at once, not after the stall"
            stream.close()
            assert "cancelling the call" not in agent.log()
            waited = wait_for(lambda: "cancelling the call" in agent.log(), 10, "the watchdog")
            wait_for(lambda: agent.client(timeout_s=5).list_sessions() is not None, 5, "answers")
            responses = raw_stream(agent, request)  # the slot is free again
            assert len(responses) == 1 and waited < 5
        assert "not read a response for 2 s" in agent.log()
        assert agent.alive()
    finally:
        stuck.close()
        agent.stop()


def test_idle_streams_do_not_starve_short_calls(tmp_path: Path, cls_package: Path) -> None:
    """Every stream slot held by an idle lock-step stream: Info, Load and Infer still answer at once."""
    agent = start_agent(tmp_path, "--max-streams", "8", "--max-streams-per-client", "8")
    blob = blob_of(cls_package)
    image = np.zeros((1, 48, 192, 3), np.uint8)
    with agent.client(timeout_s=5) as client:
        client.ensure_model(blob)
        session = client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(blob))).session_id
        request = AgentClient.infer_request(session, [image], None, None)
        streams = [client.lockstep() for _ in range(8)]
        try:
            for stream in streams:
                stream.call(request)  # each stream now holds an agent thread, idle
            started = time.monotonic()
            for _ in range(20):
                client.info()
                client.infer(request)
            client.unload(client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(blob))).session_id)
            assert time.monotonic() - started < 5
            with pytest.raises(grpc.RpcError) as err:
                raw_stream(agent, request)  # a ninth stream is refused, not queued
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            for stream in streams:
                stream.close()
    agent.stop()


def test_run_slots_are_bounded_and_the_wait_too(tmp_path: Path, cls_package: Path) -> None:
    agent = start_agent(tmp_path, "--max-concurrent-runs", "1", "--max-run-wait-seconds", "0.3")
    blob = blob_of(cls_package)
    image = np.zeros((1, 48, 192, 3), np.uint8)
    try:
        with agent.client(timeout_s=60) as client, ThreadPoolExecutor(1) as pool:
            client.ensure_model(blob)
            session = client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(blob))).session_id
            request = AgentClient.infer_request(session, [image], None, None)
            perf = pool.submit(client.eval_perf, session, PerfOptions(4000, 0))  # holds the only slot for a while
            wait_for(lambda: "EvalPerf" in agent.log() or perf.running(), 5, "EvalPerf to start")
            time.sleep(0.3)
            started = time.monotonic()
            with pytest.raises(RemoteError, match="RESOURCE_EXHAUSTED.*model-run slots.*--max-concurrent-runs"):
                client.infer(request)
            assert time.monotonic() - started < 2.0, "refused after the bounded wait, not queued"
            assert len(perf.result().run_times_us) == 4000
            assert client.infer(request)[0].shape == (1, 2)  # free again
    finally:
        agent.stop()


def test_32_clients_starting_together_share_one_upload(tmp_path: Path, cls_package: Path) -> None:
    """A fresh agent and 32 runtimes opened at once: one client uploads, the others wait for it (upload
    slots are bounded and uploads of one model exclusive), and every session opens."""
    agent = start_agent(tmp_path, "--max-sessions", "64", "--max-sessions-per-client", "64")
    package = read_package(cls_package)
    device = probe(agent.address)
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            runtimes = list(pool.map(lambda _: RemoteRuntime(package, device, LoadOptions()), range(CLIENTS)))
        try:
            assert sorted(rt.uploaded_bytes for rt in runtimes)[-2:] == [0, len(blob_of(cls_package))]
            image = np.zeros((1, 48, 192, 3), np.uint8)
            assert all(rt.inference([image])[0].shape == (1, 2) for rt in runtimes)
        finally:
            for rt in runtimes:
                rt.close()
    finally:
        agent.stop()


# -- the load test -------------------------------------------------------------------------------------------
@dataclass
class LoadRound:
    latencies_s: list[float] = field(default_factory=list)
    wrong: list[tuple[int, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    per_client: list[int] = field(default_factory=lambda: [0] * CLIENTS)
    wall_s: float = 0.0
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_round(
    runtimes: list[RemoteRuntime], images: list[np.ndarray], expected: list[np.ndarray], during: Callable[[], None]
) -> LoadRound:
    """Every runtime makes PER_CLIENT inferences at once; ``during`` runs in the middle of it."""
    result = LoadRound()
    gate = threading.Barrier(len(runtimes) + 1)

    def client(index: int, runtime: RemoteRuntime) -> None:
        gate.wait()
        for i in range(PER_CLIENT):
            k = (index + i) % len(images)
            t0 = time.perf_counter()
            try:
                out = runtime.inference([images[k]])
            except Exception as exc:
                with result.lock:
                    result.errors.append(f"client {index}: {exc}")
                return
            elapsed = time.perf_counter() - t0
            with result.lock:
                result.latencies_s.append(elapsed)
                result.per_client[index] += 1
                result.done += 1
                if not np.allclose(out[0], expected[k], rtol=0, atol=1e-6):
                    result.wrong.append((index, i))

    threads = [threading.Thread(target=client, args=(i, rt)) for i, rt in enumerate(runtimes)]
    for t in threads:
        t.start()
    started = time.perf_counter()
    gate.wait()
    during()
    for t in threads:
        t.join(120)
    result.wall_s = time.perf_counter() - started
    return result


def rss_mb(agent: AgentProcess) -> float:
    assert agent.proc is not None
    return float(psutil.Process(agent.proc.pid).memory_info().rss) / 2**20


@pytest.mark.slow
def test_32_clients_while_one_is_killed_and_one_stops_reading(
    tmp_path: Path, cls_package: Path, neg_package: Path, cls_lines: list[TextLine]
) -> None:
    agent = start_agent(
        tmp_path, "--max-sessions", "64", "--max-sessions-per-client", "64", "--max-streams-per-client", "64",
        "--stream-stall-seconds", "3", "--lease", "20",
    )  # fmt: skip
    images = [line.image for line in cls_lines[:16]]
    with RKNN(raise_errors=True) as sim:
        sim.load_rknn(str(cls_package))
        sim.init_runtime()
        expected = [sim.inference([img])[0] for img in images]  # type: ignore[index]
    package = read_package(cls_package)
    blob = blob_of(cls_package)
    device = probe(agent.address)
    try:
        # Baseline: the agent warmed up (a model loaded, run and unloaded once), nothing open.
        warm = RemoteRuntime(package, device, LoadOptions())
        for img in images:
            warm.inference([img])
        warm.close()
        time.sleep(0.5)
        baseline_mb = rss_mb(agent)

        def open_runtimes() -> list[RemoteRuntime]:
            with ThreadPoolExecutor(8) as pool:
                return list(pool.map(lambda _: RemoteRuntime(package, device, LoadOptions()), range(CLIENTS)))

        def close_all(runtimes: list[RemoteRuntime]) -> float:
            for rt in runtimes:
                rt.close()
            wait_for(lambda: not agent.client(timeout_s=5).list_sessions(), 10, "all sessions closed")
            time.sleep(3.5)  # the agent trims its heap about a second after sessions close, then twice more
            return rss_mb(agent)

        runtimes = open_runtimes()
        stuck = StuckReader(agent, neg_package)
        doomed = subprocess.Popen(
            [sys.executable, str(DATA / "stream_client.py"), agent.address, sha256_hex(blob), "2"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert doomed.stdout is not None and doomed.stdout.readline().strip() == "streaming"

        def faults() -> None:
            time.sleep(0.3)  # mid-load
            doomed.kill()  # SIGKILL mid-stream

        try:
            first = run_round(runtimes, images, expected, faults)
            # The stuck reader held its stream all along; the watchdog cuts it off after 3 s even if the
            # load was quicker than that.
            wait_for(lambda: "cancelling the call" in agent.log(), 10, "the watchdog to cut off the stuck reader")
        finally:
            doomed.kill()
            doomed.wait(10)
            stuck.close()
        peak_mb = rss_mb(agent)
        counts = {rt.session_id: session_inferences(agent, rt.session_id) for rt in runtimes}
        after_mb = close_all(runtimes)
    finally:
        agent.stop()

    assert not first.errors, first.errors[:3]
    assert first.done == CLIENTS * PER_CLIENT and first.per_client == [PER_CLIENT] * CLIENTS, "none lost"
    assert not first.wrong, f"wrong answers (client, inference): {first.wrong[:5]}"
    # Nobody stalls: a stalled client would wait for the 3 s watchdog or its 30 s call timeout.
    assert max(first.latencies_s) < 2.5, f"slowest inference {max(first.latencies_s):.2f} s"
    assert set(counts.values()) == {PER_CLIENT}, "the agent counted every inference of every session"
    assert "InferStream from 127.0.0.1: the client has not read a response for 3 s" in agent.log()
    assert "failed unexpectedly" not in agent.log() and "Traceback" not in agent.log()
    # Memory. 32 sessions of the model (ONNX Runtime sessions, arenas, buffers) and the two misbehaving clients'
    # buffers come and go: RSS rises by ~160 MB. Once they are closed the agent trims its heap (memtrim.py)
    # and RSS falls back to 28-56 MB above the baseline (measured over 10 runs): what stays is one-time growth —
    # the RPC thread pool grew from ~16 to ~47 threads (stacks, per-thread malloc arenas) — and pages glibc
    # cannot give back from a fragmented heap. Allow 64 MB; without the trim RSS stays near the peak (+160 MB).
    print(f"agent RSS MB: baseline {baseline_mb:.1f}, loaded {peak_mb:.1f}, after {after_mb:.1f}")
    assert after_mb - baseline_mb < 64, (baseline_mb, peak_mb, after_mb)


# -- 128 clients opening sessions at once --------------------------------------------------------------------
MANY = 128
MANY_SESSIONS = 96  # --max-sessions: the last 32 clients are refused
MANY_INFERENCES = 10
# Agent RSS after every session closed, over the warmed-up baseline (~103 MB). 96 sessions of the classifier take
# it to ~550 MB; once they close and the agent trims its heap it falls back to +85 to +89 MB (6 runs): what stays is
# the RPC thread pool grown to its ceiling (streams + uploads + workers = 88 threads: stacks, per-thread malloc
# arenas) and pages of a fragmented heap. Without the trim it stays at ~350-540 MB for seconds.
MANY_RSS_BOUND_MB = 120


class PeakRss:
    """The agent's largest RSS seen, sampled every 50 ms in a thread until stopped."""

    def __init__(self, agent: AgentProcess) -> None:
        self._agent = agent
        self.peak_mb = rss_mb(agent)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_mb = max(self.peak_mb, rss_mb(self._agent))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5)
        return self.peak_mb


@pytest.mark.slow
def test_128_clients_opening_at_once_are_served_or_refused_cleanly(
    tmp_path: Path, cls_package: Path, cls_lines: list[TextLine]
) -> None:
    """128 RKNN objects call init_runtime(target, device_id='host:port') together: each one probes the agent,
    uploads or finds the model, opens a session. The agent is slow while they pile in (Info took 5 s when the
    probe's deadline was a fixed 3 s); every client is either served or refused with the limit that refused it
    named (--max-sessions), none fails on a timeout, and afterwards the agent's RSS falls back near its start."""
    agent = start_agent(tmp_path, "--max-sessions", str(MANY_SESSIONS), "--max-sessions-per-client", str(MANY))
    images = [line.image for line in cls_lines[:8]]
    with RKNN(raise_errors=True) as sim:
        sim.load_rknn(str(cls_package))
        sim.init_runtime()
        expected = [sim.inference([img])[0] for img in images]  # type: ignore[index]

    def sessions() -> int:
        with agent.client(timeout_s=10) as client:
            return len(client.list_sessions())

    try:
        with RKNN(raise_errors=True) as warm:  # baseline: the model stored, loaded, run and unloaded once
            warm.load_rknn(str(cls_package))
            warm.init_runtime(target="rk3588", device_id=agent.address)
            for img in images:
                warm.inference([img])
        wait_for(lambda: sessions() == 0, 10, "the warm-up session closed")
        baseline_mb = rss_mb(agent)
        clients = [RKNN(raise_errors=True) for _ in range(MANY)]
        for rknn in clients:
            rknn.load_rknn(str(cls_package))
        gate = threading.Barrier(MANY)

        def client(index: int) -> tuple[str, str]:
            rknn = clients[index]
            gate.wait()
            try:
                rknn.init_runtime(target="rk3588", device_id=agent.address)
            except RemoteError as exc:
                return ("refused" if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED else "failed"), str(exc)
            for i in range(MANY_INFERENCES):
                k = (index + i) % len(images)
                out = rknn.inference([images[k]])
                if out is None or not np.allclose(out[0], expected[k], rtol=0, atol=1e-6):
                    return "wrong", f"client {index}, inference {i}"
            return "served", ""

        peak = PeakRss(agent)
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(MANY) as pool:
                outcomes = list(pool.map(client, range(MANY)))
            served_in_s = time.monotonic() - started
            held = sessions()
        finally:
            for rknn in clients:
                rknn.release()
        peak_mb = peak.stop()
        wait_for(lambda: sessions() == 0, 10, "all sessions closed")
        # The agent trims its heap about a second after sessions close, then twice more: poll for the bound.
        trimmed = [rss_mb(agent)]

        def back_within_bound() -> bool:
            trimmed.append(rss_mb(agent))
            return trimmed[-1] - baseline_mb < MANY_RSS_BOUND_MB

        with contextlib.suppress(AssertionError):
            wait_for(back_within_bound, 10, "RSS back within the bound")
        after_mb = trimmed[-1]
    finally:
        agent.stop()

    kinds = [kind for kind, _ in outcomes]
    failed = [why for kind, why in outcomes if kind in ("failed", "wrong")]
    assert not failed, f"{len(failed)} clients failed: {failed[:3]}"
    assert "failed unexpectedly" not in agent.log() and "Traceback" not in agent.log()
    assert kinds.count("served") == MANY_SESSIONS and held == MANY_SESSIONS, (kinds.count("served"), held)
    refusals = [why for kind, why in outcomes if kind == "refused"]
    assert len(refusals) == MANY - MANY_SESSIONS
    assert all(f"the agent already holds {MANY_SESSIONS} sessions" in r and "--max-sessions" in r for r in refusals)
    print(
        f"128 clients in {served_in_s:.1f} s; agent RSS MB: baseline {baseline_mb:.1f}, peak {peak_mb:.1f}, "
        f"after {after_mb:.1f}"
    )
    assert after_mb - baseline_mb < MANY_RSS_BOUND_MB, (baseline_mb, peak_mb, after_mb)
