"""The rknnrt backend (vendor .rknn models through librknnrt) against a test double of librknnrt.

librknnrt — Rockchip's NPU runtime — cannot exist on a PC, so these tests build `tests/data/fake_rknnrt.c`,
a TEST DOUBLE implementing the documented C API over a trivial model (per-channel means of the normalised
image), and check the backend's plumbing through it: struct layouts, dtype / layout / pass-through hand-off,
float outputs, the per-layer table, memory queries, core masks, and the whole path through a real agent.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from agent_fixtures import AgentProcess

from rkfarm import RKNN
from rkfarm.errors import InputError, NotSupportedError
from rkfarm_agent.backends import available_backends
from rkfarm_agent.backends.rknnrt import RknnrtBackend, parse_perf_detail
from rkfarm_agent.errors import BackendError
from rkfarm_proto.records import LoadOptions
from rkfarm_proto.v1 import package_pb2

DATA = Path(__file__).parent / "data"
H, W, C, MEAN, STD = 6, 8, 3, 127.5, 64.0


@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the librknnrt test double")
    out = tmp_path_factory.mktemp("rknnrt") / "libfake_rknnrt.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(out), str(DATA / "fake_rknnrt.c")], check=True)
    return out


@pytest.fixture()
def with_lib(fake_lib: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RKFARM_RKNNRT_LIB", str(fake_lib))
    return fake_lib


def fake_rknn(path: Path) -> Path:
    body = b"FAKE" + struct.pack("<IIIff", H, W, C, MEAN, STD)
    path.write_bytes(b"RKNN" + b"\0" * 4 + struct.pack("<QQ", 6, len(body)) + body)
    return path


def expected(image_nhwc: np.ndarray, normalise: bool = True) -> np.ndarray:
    x = image_nhwc.astype(np.float64)
    if normalise:
        x = (x - MEAN) / STD
    return x.reshape(-1, C).mean(axis=0).reshape(1, C).astype(np.float32)


def test_backend_through_the_double(with_lib: Path, tmp_path: Path) -> None:
    assert "rknnrt" in available_backends()
    payload = fake_rknn(tmp_path / "m.rknn").read_bytes()
    header = package_pb2.PackageHeader(payload_kind=package_pb2.PAYLOAD_KIND_RKNN)
    model = RknnrtBackend().load(header, payload, LoadOptions(perf_debug=True, core_mask=0x3))
    try:
        inputs, outputs = model.describe_io()  # type: ignore[misc]
        assert (inputs[0].tensor.name, list(inputs[0].tensor.shape)) == ("images", [1, H, W, C])
        assert (outputs[0].name, list(outputs[0].shape)) == ("channel_means", [1, C])
        adapter = model.make_adapter(header)
        image = np.random.default_rng(0).integers(0, 255, (1, H, W, C), dtype=np.uint8)
        out = model.run(adapter([image]))
        np.testing.assert_allclose(out[0], expected(image), rtol=1e-6)
        nchw = image.transpose(0, 3, 1, 2).astype(np.float32)
        np.testing.assert_allclose(model.run(adapter([nchw], "nchw"))[0], expected(image), rtol=1e-6)
        np.testing.assert_allclose(model.run(adapter([image], None, [1]))[0], expected(image, False), rtol=1e-6)
        with pytest.raises(InputError, match=r"input 'images': expected \[1, 6, 8, 3\]"):
            adapter([np.zeros((1, H, W, 4), np.uint8)])
        # per-input lists must have one entry per input, as for the ONNX Runtime backend
        with pytest.raises(InputError, match="data_format has 2 entries for 1 input"):
            adapter([image], ["nhwc", "nchw"])
        with pytest.raises(InputError, match="inputs_pass_through has 0 entries for 1 input"):
            adapter([image], None, [])
        profile = model.profile(adapter([image]), runs=3)
        assert [layer.op_type for layer in profile.layers] == ["InputOperator", "Conv", "ReduceMean"]
        assert sum(layer.time_us for layer in profile.layers) == 42 and profile.run_times_us == [42.0] * 3
        mem = model.memory()
        assert (mem.weight_bytes, mem.internal_bytes, mem.other_bytes) == (1000, 2048, 4096 - 3048)
    finally:
        model.close()


def test_bad_model_and_core_mask_are_refused(with_lib: Path, tmp_path: Path) -> None:
    header = package_pb2.PackageHeader(payload_kind=package_pb2.PAYLOAD_KIND_RKNN)
    with pytest.raises(BackendError, match="rknn_init failed"):
        RknnrtBackend().load(header, b"RKNN" + b"\0" * 60, LoadOptions())
    payload = fake_rknn(tmp_path / "m.rknn").read_bytes()
    with pytest.raises(BackendError, match="rknn_set_core_mask failed"):
        RknnrtBackend().load(header, payload, LoadOptions(core_mask=0x5))


def test_perf_detail_parser_skips_what_is_not_a_row() -> None:
    text = (
        "noise\nID OpType DataType Target InputShape OutputShape Time(us) FullName\n"
        "1 Conv INT8 NPU (1) (2) 12 c:1\nTotal 3\n"
    )
    layers = parse_perf_detail(text)
    assert len(layers) == 1 and layers[0].time_us == 12.0 and layers[0].name == "c:1"
    assert parse_perf_detail("no table here") == []


def test_vendor_rknn_runs_on_an_agent_with_librknnrt(
    with_lib: Path, make_agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    agent = make_agent()  # inherits RKFARM_RKNNRT_LIB: this agent "has" librknnrt
    with agent.client() as client:
        info = client.info()
        assert "rknnrt" in info.backends
        assert info.versions["backend.rknnrt"] == f"librknnrt at {with_lib} (version known after the first load)"
        assert info.versions["backend.onnxruntime"].startswith("onnxruntime 1.")
    model = fake_rknn(tmp_path / "yolo.rknn")
    image = np.random.default_rng(1).integers(0, 255, (H, W, C), dtype=np.uint8)
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(model))
        with pytest.raises(NotSupportedError, match="cannot run on the simulator"):
            rknn.init_runtime()
        rknn.init_runtime(target="rk3588", device_id=agent.address, perf_debug=True)
        out = rknn.inference([image[np.newaxis]])
        assert out is not None
        np.testing.assert_allclose(out[0], expected(image[np.newaxis]), rtol=1e-6)
        perf = rknn.eval_perf(is_print=False, runs=5, warmup=1)
        assert perf is not None and [layer.op_type for layer in perf.layers] == ["InputOperator", "Conv", "ReduceMean"]
        mem = rknn.eval_memory(is_print=False)
        assert mem is not None and mem["weight_memory"] == 1000 and mem["internal_memory"] == 2048
        assert "librknnrt" in mem["method"]
        # once a model is open, the agent reports the runtime and driver versions librknnrt gave
        assert "fake-librknnrt 0.0 (rkfarm test double) / driver none" in rknn.get_sdk_version()
