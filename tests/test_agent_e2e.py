"""Host and a real agent on 127.0.0.1: discovery, upload, remote inference, eval_perf, eval_memory."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from agent_fixtures import AgentProcess
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rkfarm import RKNN
from rkfarm.errors import RemoteError, StateError
from rkfarm.remote.client import AgentClient
from rkfarm.remote.discovery import list_devices, resolve
from rkfarm.remote.runtime import RemoteRuntime
from rkfarm.samples import TextLine
from rkfarm_proto.package import pack, read_package, sha256_hex
from rkfarm_proto.records import LoadOptions


def test_discovered_by_mdns_on_loopback(agent: AgentProcess) -> None:
    devices = list_devices(timeout_s=4.0, stop_when=agent.agent_id)
    ours = [d for d in devices if d.agent_id == agent.agent_id]
    assert ours, f"agent not found by mDNS; found {devices}"
    d = ours[0]
    assert d.source == "mdns" and d.address == agent.address
    assert d.platform == "rk3588" and d.npu_cores == 3 and "onnxruntime" in d.backends


def test_inventory_finds_agents_without_multicast(agent: AgentProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RKFARM_AGENTS", agent.address)
    devices = list_devices(timeout_s=0.1, use_mdns=False)
    assert [(d.agent_id, d.source) for d in devices] == [(agent.agent_id, "inventory")]


def test_end_to_end_remote_equals_simulator(agent: AgentProcess, cls_package: Path, cls_lines: list[TextLine]) -> None:
    images = [line.image for line in cls_lines[:6]]
    with RKNN(raise_errors=True) as sim:
        sim.load_rknn(str(cls_package))
        sim.init_runtime()
        expected = [sim.inference([img]) for img in images]
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package))
        assert rknn.init_runtime(target="rk3588", device_id=agent.agent_id) == 0  # found by mDNS
        assert "rkfarm-agent" in rknn.get_sdk_version()
        for img, want in zip(images, expected):
            got = rknn.inference([img])
            assert got is not None and want is not None
            np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-6)


def test_eval_perf_layers_add_up(agent: AgentProcess, cls_package: Path) -> None:
    """Per-layer kernel times sum to no more than the profiled run time, and cover most of it."""
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package))
        rknn.init_runtime(target="rk3588", device_id=agent.address, perf_debug=True)
        rknn.inference([np.zeros((1, 48, 192, 3), np.uint8)])
        perf = rknn.eval_perf(is_print=False, runs=30, warmup=3)
        assert perf is not None
    assert perf.stats.runs == 30 and perf.fps > 0
    assert perf.layers and perf.profiled_run_times_us
    # Layer times are means over the profiled runs, so their sum is the mean kernel time per run, which must
    # fit inside the mean profiled run time (1% for timestamp rounding) and make up most of it: the rest is
    # the executor's bookkeeping between kernels (about 10-30% here; 50% allows for a loaded machine).
    layer_sum = sum(layer.time_us for layer in perf.layers)
    profiled = float(np.mean(perf.profiled_run_times_us))
    assert 0.5 * profiled <= layer_sum <= 1.01 * profiled, (layer_sum, profiled)
    assert "Total Operator Elapsed Per Frame Time(us)" in str(perf)
    assert {"ID", "OpType", "DataType", "Target", "InputShape", "OutputShape", "Time(us)", "FullName"} <= set(
        str(perf).split()
    )


def test_eval_memory_weights_match_package(agent: AgentProcess, cls_package: Path) -> None:
    header = read_package(cls_package).header
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package))
        rknn.init_runtime(target="rk3588", device_id=agent.address, eval_mem=True)
        mem = rknn.eval_memory(is_print=False)
    assert mem is not None
    assert mem["weight_memory"] == header.weight_bytes > 0
    assert mem["internal_memory"] == header.activation_bytes > 0
    assert mem["total_memory"] == mem["weight_memory"] + mem["internal_memory"] + mem["other_memory"]
    assert agent.agent_id in mem["where"]


def test_second_upload_sends_nothing_and_clients_share(agent: AgentProcess, cls_package_fp32: Path) -> None:
    package = read_package(cls_package_fp32)
    device = resolve(agent.address, None)
    first = RemoteRuntime(package, device, LoadOptions())
    second = RemoteRuntime(package, device, LoadOptions())
    try:
        assert first.uploaded_bytes in (0, len(pack(package.header, package.payload)[1]))
        assert second.uploaded_bytes == 0, "the agent already had the model"
        with AgentClient(agent.address) as client:
            sessions = {s.session_id for s in client.list_sessions()}
        assert {first.session_id, second.session_id} <= sessions
        x = np.zeros((1, 48, 192, 3), np.uint8)
        np.testing.assert_array_equal(first.inference([x])[0], second.inference([x])[0])
    finally:
        first.close()
        second.close()
    with AgentClient(agent.address) as client:
        sessions = {s.session_id for s in client.list_sessions()}
    assert first.session_id not in sessions and second.session_id not in sessions


def test_wrong_target_platform_is_refused(agent: AgentProcess, cls_package: Path) -> None:
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package))
        with pytest.raises(StateError, match="is a rk3588 board, not rk3566"):
            rknn.init_runtime(target="rk3566", device_id=agent.address)
        with pytest.raises(RemoteError, match="no agent with id 'nobody'"):
            rknn.init_runtime(target="rk3588", device_id="nobody")


def test_health_and_reflection(agent: AgentProcess) -> None:
    with grpc.insecure_channel(agent.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "rkfarm.v1.Agent"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
        assert "rkfarm.v1.Agent" in names and "grpc.health.v1.Health" in names


def test_stream_inference(agent: AgentProcess, cls_package: Path) -> None:
    package = read_package(cls_package)
    _, blob = pack(package.header, package.payload)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (1, 48, 192, 3), dtype=np.uint8) for _ in range(20)]
    with AgentClient(agent.address) as client:
        client.ensure_model(blob)
        from rkfarm_proto.v1 import agent_pb2

        session = client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(blob))).session_id
        single = [client.infer(AgentClient.infer_request(session, [img], None, None)) for img in images]
        requests = (AgentClient.infer_request(session, [img], None, None, request_id=i) for i, img in enumerate(images))
        streamed = list(client.infer_stream(requests))
        assert [r.request_id for r in streamed] == list(range(20))
        from rkfarm_proto.tensors import from_tensor

        for one, many in zip(single, streamed):
            np.testing.assert_array_equal(one[0], from_tensor(many.outputs[0]))
        client.unload(session)
