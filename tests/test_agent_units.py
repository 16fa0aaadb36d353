"""Agent parts on their own: platform detection, sizes, env config, the store's LRU and pins, deploy files."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from rkfarm_agent.backends.onnxruntime import threads_for_core_mask
from rkfarm_agent.cli import build_parser, parse_size
from rkfarm_agent.errors import UnknownModelError, UploadConflictError, UploadTooLargeError
from rkfarm_agent.store import ModelStore
from rkfarm_agent.system import platform_from_compatible
from rkfarm_proto.discovery import AgentAdvert
from rkfarm_proto.package import pack, sha256_hex
from rkfarm_proto.v1 import package_pb2

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


@pytest.mark.parametrize(
    ("raw", "platform"),
    [
        (b"rockchip,rk3588-evb1-lp4-v10\0rockchip,rk3588\0", "rk3588"),
        (b"radxa,rock-5b\0rockchip,rk3588\0", "rk3588"),
        (b"pine64,quartz64-a\0rockchip,rk3566\0", "rk3566"),
        (b"rockchip,rk3568-evb1-ddr4-v10\0rockchip,rk3568\0", "rk3568"),
        (b"rockchip,rv1106g-38x38-ipc-v10\0rockchip,rv1106\0", "rv1106"),
        (b"raspberrypi,4-model-b\0brcm,bcm2711\0", "unknown"),
        (b"", "unknown"),
    ],
)
def test_platform_from_device_tree(raw: bytes, platform: str) -> None:
    assert platform_from_compatible(raw) == platform


@pytest.mark.parametrize(("text", "size"), [("512M", 512 << 20), ("2G", 2 << 30), ("400K", 400 << 10), ("1024", 1024)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_core_mask_maps_to_threads() -> None:
    assert threads_for_core_mask(0x0, 8) == 0  # auto: ONNX Runtime decides
    assert threads_for_core_mask(0x1, 8) == 1
    assert threads_for_core_mask(0x3, 8) == 2
    assert threads_for_core_mask(0x7, 8) == 3
    assert threads_for_core_mask(0x7, 2) == 2  # capped at the CPU count
    assert threads_for_core_mask(0xFFFF, 4) == 4


def test_advert_round_trip() -> None:
    advert = AgentAdvert("board-1", "rk3588", 3, "0.1.0", ("onnxruntime", "rknnrt"), "token")
    txt = {k.encode(): v.encode() for k, v in advert.to_txt().items()}
    assert AgentAdvert.from_txt(txt) == advert


def test_example_env_file_configures_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = {}
    for line in (DEPLOY / "agent.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key] = value
            monkeypatch.setenv(key, value)
    assert all(key.startswith("RKFARM_AGENT_") for key in settings)
    args = build_parser().parse_args(["serve"])
    assert args.port == 50551 and args.store_dir == Path("/var/lib/rkfarm-agent")
    assert args.store_capacity == 2 << 30 and args.max_upload == 512 << 20
    assert args.max_sessions == 16 and args.lease == 60.0 and args.advertise is True


def test_deploy_files() -> None:
    subprocess.run(["bash", "-n", str(DEPLOY / "install-agent.sh")], check=True)
    unit = (DEPLOY / "rkfarm-agent.service").read_text()
    for needed in ("ExecStart=/opt/rkfarm/venv/bin/rkfarm-agent serve", "EnvironmentFile=/etc/rkfarm/agent.env",
                   "KillSignal=SIGTERM", "Restart=on-failure", "User=rkfarm"):  # fmt: skip
        assert needed in unit
    script = (DEPLOY / "install-agent.sh").read_text()
    assert "pip install" in script and "[host]" not in script, "the board installs the agent's packages only"


def _package(size: int, tag: bytes = b"") -> bytes:
    header = package_pb2.PackageHeader(source_model_name="m", payload_kind=package_pb2.PAYLOAD_KIND_ONNX)
    return pack(header, tag + b"\0" * (size - len(tag)))[1]


def _put(store: ModelStore, blob: bytes) -> str:
    sha = sha256_hex(blob)
    upload = store.begin_upload(sha, len(blob), 0)
    upload.write(blob)
    upload.commit()
    return sha


def test_store_evicts_least_recently_used_but_never_pinned(tmp_path: Path) -> None:
    blobs = [_package(1000, bytes([i])) for i in range(4)]
    size = len(blobs[0])
    store = ModelStore(tmp_path, capacity_bytes=3 * size, max_upload_bytes=10 * size)
    a, b, c = (_put(store, blob) for blob in blobs[:3])
    store.pin(a)
    store.load(b)  # b is now more recent than c
    os.utime(store.model_path(c), (time.time() - 100, time.time() - 100))
    d = _put(store, blobs[3])
    present = {sha for sha in (a, b, c, d) if store.status(sha).present}
    assert present == {a, b, d}, "c was the least recently used unpinned model"
    store.unpin(a)


def test_store_refuses_what_cannot_fit(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, capacity_bytes=5000, max_upload_bytes=2000)
    with pytest.raises(UploadTooLargeError, match="over this agent's limit"):
        store.begin_upload("a" * 64, 3000, 0)
    with pytest.raises(UnknownModelError, match="not a sha256"):
        store.begin_upload("../evil", 10, 0)
    blob = _package(500)
    sha = sha256_hex(blob)
    upload = store.begin_upload(sha, len(blob), 0)
    with pytest.raises(UploadConflictError, match="in progress"):
        store.begin_upload(sha, len(blob), 0)
    upload.write(blob[:100])
    upload.abort()
    with pytest.raises(UploadConflictError, match="cannot resume at byte 50"):
        store.begin_upload(sha, len(blob), 50)
    resumed = store.begin_upload(sha, len(blob), 100)
    resumed.write(blob[100:])
    assert resumed.commit() == len(blob)
    assert store.status(sha).present and store.load(sha).header.source_model_name == "m"
