"""Property-based tests of the agent's request handlers: random, truncated and mutated bytes on the wire.

Every Agent RPC (and server reflection) receives raw serialized requests (no stubs, no client-side
validation): random bytes, valid requests cut short or with bytes flipped, and well-formed messages with
hostile field values (tensors whose shape, dtype and data disagree, huge dimensions, unknown enum values).
The property: each call ends in a status the agent chose on purpose — or a valid response — never an
internal error (an unexpected exception surfaces as INTERNAL "internal error in ...", see service.py), and
the agent keeps serving, logs no traceback, and still shuts down gracefully.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from agent_fixtures import AgentProcess, agent_methods, raw_call
from google.protobuf.message import Message
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkfarm.remote.client import AgentClient
from rkfarm_proto.package import pack, read_package, sha256_hex
from rkfarm_proto.tensors import to_numpy_dtype
from rkfarm_proto.v1 import agent_pb2, common_pb2

REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
METHODS = {path.rsplit("/", 1)[1]: (path, cs, ss) for path, cs, ss in agent_methods()}
METHODS["ServerReflectionInfo"] = (REFLECTION, True, True)
RESPONSES: dict[str, type[Message]] = {
    name: getattr(agent_pb2, method.output_type.name)
    for name, method in agent_pb2.DESCRIPTOR.services_by_name["Agent"].methods_by_name.items()
}
RESPONSES["ServerReflectionInfo"] = reflection_pb2.ServerReflectionResponse
# Codes the servicer returns on purpose for bad input (service.STATUS_OF; malformed.py for undecodable bytes).
DELIBERATE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DATA_LOSS,
}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, cls_package: Path) -> Iterator[tuple[AgentProcess, str, str]]:
    """An agent holding the classifier, one open session, and short limits so hostile values stay cheap."""
    root = tmp_path_factory.mktemp("fuzz")
    agent = AgentProcess(
        root / "store", f"fuzz-{uuid.uuid4().hex[:8]}",
        "--max-sessions", "64", "--max-sessions-per-client", "64", "--lease", "3",
        "--max-request-seconds", "1", "--max-upload", "4M", "--max-hold-seconds", "1",
        advertise=False,
    ).start()  # fmt: skip
    package = read_package(cls_package)
    blob = pack(package.header, package.payload)[1]
    sha = sha256_hex(blob)
    with agent.client() as client:
        client.ensure_model(blob)
        session = client.load(agent_pb2.LoadRequest(model_sha256=sha, lease_s=3600)).session_id
    yield agent, sha, session
    agent.stop()


def valid_requests(sha: str, session: str) -> dict[str, list[Message]]:
    """One well-formed request (list: a stream) per RPC, aimed at the real model and session."""
    image = common_pb2.Tensor(name="x", dtype=common_pb2.DATA_TYPE_UINT8, shape=[1, 48, 192, 3], data=bytes(27648))
    infer = agent_pb2.InferRequest(session_id=session, inputs=[image], request_id=7)
    return {
        "Info": [agent_pb2.InfoRequest()],
        "GetModel": [agent_pb2.GetModelRequest(sha256=sha)],
        "Upload": [
            agent_pb2.UploadChunk(sha256=sha, total_size=1000, data=b"x" * 100),
            agent_pb2.UploadChunk(data=b"y"),
        ],
        "Load": [agent_pb2.LoadRequest(model_sha256=sha, lease_s=1, client="fuzz")],
        "KeepAlive": [agent_pb2.SessionRequest(session_id=session)],
        "Infer": [infer],
        "InferStream": [infer, infer],
        "EvalPerf": [agent_pb2.EvalPerfRequest(session_id=session, runs=2, warmup=1)],
        "EvalMemory": [agent_pb2.SessionRequest(session_id=session)],
        "Unload": [agent_pb2.SessionRequest(session_id="not-" + session)],
        "ListSessions": [agent_pb2.ListSessionsRequest()],
        "Hold": [agent_pb2.HoldRequest(hold_id="not-held", lease_s=1, client="fuzz")],
        "Release": [agent_pb2.ReleaseRequest(hold_id="not-held")],
        "ServerReflectionInfo": [reflection_pb2.ServerReflectionRequest(list_services="")],
    }


def check_call(agent: AgentProcess, method: str, payloads: list[bytes]) -> None:
    """The property: a valid response or a deliberate status; never an internal error."""
    path, client_streaming, server_streaming = METHODS[method]
    with grpc.insecure_channel(agent.address) as channel:
        try:
            responses = raw_call(channel, path, client_streaming, server_streaming, payloads, timeout_s=20)
        except grpc.RpcError as err:
            assert err.code() in DELIBERATE, f"{method}: {err.code().name}: {err.details()}"
            return
    for raw in responses:
        RESPONSES[method].FromString(raw)  # a well-formed answer


def still_serving(agent: AgentProcess) -> None:
    assert agent.proc is not None and agent.proc.poll() is None, agent.log()[-2000:]
    assert agent.alive()


@FUZZ
@given(method=st.sampled_from(sorted(METHODS)), payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=3))
def test_random_bytes(target: tuple[AgentProcess, str, str], method: str, payloads: list[bytes]) -> None:
    check_call(target[0], method, payloads)


@FUZZ
@given(method=st.sampled_from(sorted(METHODS)), data=st.data())
def test_truncated_and_mutated_requests(
    target: tuple[AgentProcess, str, str], method: str, data: st.DataObject
) -> None:
    agent, sha, session = target
    payloads = []
    for message in valid_requests(sha, session)[method]:
        raw = bytearray(message.SerializeToString())
        cut = data.draw(st.integers(min_value=0, max_value=len(raw)), label="cut")
        flips = data.draw(st.lists(st.tuples(st.integers(0, max(0, len(raw) - 1)), st.integers(1, 255)), max_size=3))
        for at, mask in flips:
            if raw:
                raw[at] ^= mask
        payloads.append(bytes(raw[:cut]))
    check_call(agent, method, payloads)


DIMS = st.integers(min_value=-3, max_value=2**40) | st.sampled_from([0, 1, 3, 48, 192])
TENSORS = st.builds(
    common_pb2.Tensor,
    name=st.text(max_size=8),
    dtype=st.integers(min_value=0, max_value=20),
    shape=st.lists(DIMS, max_size=6),
    data=st.binary(max_size=64) | st.sampled_from([bytes(27648), bytes(110592)]),
)


@FUZZ
@given(
    inputs=st.lists(TENSORS, max_size=3),
    formats=st.lists(st.sampled_from(["", "nhwc", "nchw", "NCHW", "bogus"]), max_size=3),
    passes=st.lists(st.booleans(), max_size=3),
    stream=st.booleans(),
)
def test_hostile_tensors(
    target: tuple[AgentProcess, str, str],
    inputs: list[common_pb2.Tensor],
    formats: list[str],
    passes: list[bool],
    stream: bool,
) -> None:
    agent, _, session = target
    request = agent_pb2.InferRequest(session_id=session, inputs=inputs, data_format=formats, pass_through=passes)
    check_call(agent, "InferStream" if stream else "Infer", [request.SerializeToString()])


@FUZZ
@given(
    dtype=st.sampled_from(sorted(common_pb2.DataType.values())),
    layout=st.sampled_from(
        [((1, 48, 192, 3), ""), ((1, 3, 48, 192), "nchw"), ((48, 192, 3), ""), ((1, 3, 48, 192), "")]
    ),
    seed=st.integers(0, 2**32 - 1),
    pass_through=st.booleans(),
)
def test_right_shape_any_dtype_any_values(
    target: tuple[AgentProcess, str, str],
    dtype: int,
    layout: tuple[tuple[int, ...], str],
    seed: int,
    pass_through: bool,
) -> None:
    """Inputs that pass the shape checks and reach the model: every dtype, random bits (NaN, inf, extremes)."""
    agent, _, session = target
    shape, data_format = layout
    itemsize = to_numpy_dtype(dtype).itemsize if dtype else 1
    data = np.random.default_rng(seed).bytes(int(np.prod(shape)) * itemsize)
    tensor = common_pb2.Tensor(name="x", dtype=dtype, shape=shape, data=data)  # type: ignore[arg-type]
    request = agent_pb2.InferRequest(
        session_id=session, inputs=[tensor], data_format=[data_format], pass_through=[pass_through]
    )
    check_call(agent, "Infer", [request.SerializeToString()])


def test_undecodable_bytes_are_invalid_argument(target: tuple[AgentProcess, str, str]) -> None:
    for method in ("Load", "InferStream", "Upload", "ServerReflectionInfo"):
        path, client_streaming, server_streaming = METHODS[method]
        with grpc.insecure_channel(target[0].address) as channel, pytest.raises(grpc.RpcError) as err:
            raw_call(channel, path, client_streaming, server_streaming, [b"\xff\xff\xff"], timeout_s=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        assert "not a valid message" in (err.value.details() or "")


def test_still_serving_after_the_fuzz(target: tuple[AgentProcess, str, str]) -> None:
    """Runs after the properties above (file order): the process lives, answers, logged no traceback, and
    stops gracefully (a bidirectional stream left half-finished would hold the shutdown forever)."""
    agent, _, session = target
    still_serving(agent)
    with agent.client() as client:
        deadline = time.monotonic() + 10  # a hold the fuzz took lapses (--max-hold-seconds 1)
        while client.info().HasField("hold") and time.monotonic() < deadline:
            time.sleep(0.1)
        image = np.zeros((1, 48, 192, 3), np.uint8)
        assert client.infer(AgentClient.infer_request(session, [image], None, None))[0].shape == (1, 2)
    assert "Traceback" not in agent.log() and "failed unexpectedly" not in agent.log()
    started = time.monotonic()
    assert agent.stop() == 0 and time.monotonic() - started < 8, "SIGTERM: a prompt, clean exit"
