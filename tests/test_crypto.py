"""Encrypted model packages: the envelope, the host API/CLI, and agents that open them in memory only."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from agent_fixtures import AgentProcess

from rkfarm import RKNN
from rkfarm.cli import main
from rkfarm.errors import PackageError, RemoteError
from rkfarm.keys import make_farm_key
from rkfarm.remote.client import AgentClient
from rkfarm_proto.crypto import (
    LEVELS,
    DecryptionError,
    KeyFileError,
    Keyring,
    KeyUnavailableError,
    encrypt_package,
    key_id,
    load_or_create_identity,
    raw_public,
    read_farm_key,
)
from rkfarm_proto.package import ModelPackage, pack, read_package, unpack, write_package

IMAGE = np.random.default_rng(5).integers(0, 255, (1, 48, 192, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def farm_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_farm_key(tmp_path_factory.mktemp("keys") / "farm.key")


def _tiny(size: int) -> ModelPackage:
    from rkfarm_proto.v1 import package_pb2

    header = package_pb2.PackageHeader(source_model_name="tiny", payload_kind=package_pb2.PAYLOAD_KIND_ONNX)
    payload = os.urandom(size)
    full, _ = pack(header, payload)
    return ModelPackage(full, payload)


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ["AES-256-GCM", "ChaCha20-Poly1305"])
def test_round_trip_every_level(level: int, algorithm: str) -> None:
    secret = os.urandom(32)
    plain = _tiny(200_000)  # several 64 KiB segments at level 3
    sealed = encrypt_package(plain, level, secret, algorithm=algorithm)
    assert sealed.payload != plain.payload and plain.payload[:64] not in sealed.payload
    assert sealed.header.encryption.crypt_level == level
    assert sealed.header.encryption.kdf == LEVELS[level].kdf
    assert secret not in sealed.header.SerializeToString()
    reread = unpack(pack(sealed.header, sealed.payload)[1])
    assert Keyring([secret]).decrypt(reread) == plain.payload


def test_wrong_key_tampering_and_truncation_are_refused() -> None:
    secret = os.urandom(32)
    sealed = encrypt_package(_tiny(150_000), 3, secret)
    with pytest.raises(KeyUnavailableError, match=f"farm:{key_id(secret)}"):
        Keyring([os.urandom(32)]).decrypt(sealed)
    flipped = bytearray(sealed.payload)
    flipped[70_000] ^= 0x01
    with pytest.raises(DecryptionError, match="segment 1 does not authenticate"):
        Keyring([secret]).decrypt(ModelPackage(sealed.header, bytes(flipped)))
    with pytest.raises(DecryptionError, match="truncated"):
        Keyring([secret]).decrypt(ModelPackage(sealed.header, sealed.payload[:-16]))
    header = type(sealed.header)()
    header.CopyFrom(sealed.header)
    header.custom_string = "swapped header"
    with pytest.raises(DecryptionError, match="altered"):
        Keyring([secret]).decrypt(ModelPackage(header, sealed.payload))


def test_sealed_to_an_agent_key_only(tmp_path: Path) -> None:
    identity = load_or_create_identity(tmp_path / "identity.key")
    assert (tmp_path / "identity.key").stat().st_mode & 0o777 == 0o600
    plain = _tiny(1000)
    sealed = encrypt_package(plain, 1, None, [raw_public(identity)])
    assert Keyring([], identity).decrypt(sealed) == plain.payload
    other = load_or_create_identity(tmp_path / "other.key")
    with pytest.raises(KeyUnavailableError, match="agent:"):
        Keyring([os.urandom(32)], other).decrypt(sealed)


def test_key_files_must_be_private(tmp_path: Path) -> None:
    path = make_farm_key(tmp_path / "farm.key")
    assert path.stat().st_mode & 0o777 == 0o600
    secret_text = path.read_text()
    with pytest.raises(KeyFileError, match="already exists"):
        make_farm_key(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600") as err:
        read_farm_key(path)
    assert secret_text.strip() not in str(err.value)
    path.chmod(0o600)
    garbage = tmp_path / "bad.key"
    garbage.write_text("hello")
    garbage.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an rkfarm farm key"):
        read_farm_key(garbage)


def _weight_run(package_path: Path) -> bytes:
    """64 bytes of the largest weight tensor of the plain payload: proof of plaintext if found on disk."""
    model = onnx.load_from_string(read_package(package_path).payload)
    biggest = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    return biggest.raw_data[1000:1064]


def _files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("level", [1, 2, 3])
def test_encrypted_round_trip_on_agent_without_plaintext_on_disk(
    level: int,
    cls_package: Path,
    farm_key_file: Path,
    make_agent: Callable[..., AgentProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encrypted = tmp_path / f"cls.l{level}.rkfm"
    with RKNN(raise_errors=True) as rknn:
        rknn.export_encrypted_rknn_model(str(cls_package), str(encrypted), level, key_file=str(farm_key_file))
    agent_tmp = tmp_path / "agent-tmp"
    agent_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(agent_tmp))
    agent = make_agent("--farm-key-file", str(farm_key_file))
    with RKNN(raise_errors=True) as plain, RKNN(raise_errors=True) as remote:
        plain.load_rknn(str(cls_package))
        plain.init_runtime()
        remote.load_rknn(str(encrypted))
        remote.init_runtime(target="rk3588", device_id=agent.address, perf_debug=True)
        want, got = plain.inference([IMAGE]), remote.inference([IMAGE])
        assert want is not None and got is not None
        np.testing.assert_array_equal(got[0], want[0])
        assert remote.eval_perf(is_print=False, runs=5, warmup=1) is not None  # the profiler runs too
    marker = _weight_run(cls_package)
    assert marker in read_package(cls_package).payload and marker not in encrypted.read_bytes()
    for path in _files_under(agent.store, agent_tmp):
        assert marker not in path.read_bytes(), f"plaintext found in {path}"
    assert marker not in agent.log().encode("latin-1", "replace")
    assert agent.alive()


def test_bad_encrypted_packages_refused_agent_keeps_serving(
    cls_package: Path, farm_key_file: Path, make_agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    agent = make_agent("--farm-key-file", str(farm_key_file))
    sealed = encrypt_package(read_package(cls_package), 2, read_farm_key(farm_key_file))
    blob = pack(sealed.header, sealed.payload)[1]
    other = encrypt_package(read_package(cls_package), 1, os.urandom(32))
    other_blob = pack(other.header, other.payload)[1]
    flipped = bytearray(blob)
    flipped[-500] ^= 0x04
    altered = bytearray(sealed.payload)
    altered[1234] ^= 0x80
    rehashed = pack(sealed.header, bytes(altered))[1]  # a deliberate forgery: hashes recomputed
    from rkfarm_proto.package import sha256_hex
    from rkfarm_proto.v1 import agent_pb2

    with AgentClient(agent.address) as client:
        with pytest.raises(RemoteError, match="sha256 does not match"):
            client.ensure_model(bytes(flipped))
        with pytest.raises(RemoteError, match="truncated"):
            _upload_truncated(client, blob)
        client.ensure_model(other_blob)
        with pytest.raises(RemoteError, match="FAILED_PRECONDITION.*encrypted for farm:") as err:
            client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(other_blob)))
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        client.ensure_model(rehashed)
        with pytest.raises(RemoteError, match="INVALID_ARGUMENT.*altered"):
            client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(rehashed)))
        assert not client.model_status(sha256_hex(rehashed)).present, "the forged model left the store"
        client.ensure_model(blob)
        session = client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(blob))).session_id
        assert client.infer(AgentClient.infer_request(session, [IMAGE], None, None))[0].shape == (1, 2)
    assert agent.alive()


def _upload_truncated(client: AgentClient, blob: bytes) -> None:
    """A file cut short but announced with its own (short) hash: the agent sees a truncated package."""
    client.ensure_model(blob[:-1000])


def test_sealed_model_opens_only_on_its_agent(
    cls_package: Path, farm_key_file: Path, make_agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    chosen = make_agent("--farm-key-file", str(farm_key_file))
    stranger = make_agent("--farm-key-file", str(farm_key_file))
    sealed = tmp_path / "sealed.rkfm"
    assert main(["encrypt", str(cls_package), "-o", str(sealed), "--for", chosen.address]) == 0
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(sealed))
        rknn.init_runtime(target="rk3588", device_id=chosen.address)
        assert rknn.inference([IMAGE]) is not None
        with pytest.raises(RemoteError, match="FAILED_PRECONDITION.*encrypted for agent:"):
            rknn.init_runtime(target="rk3588", device_id=stranger.address)
        with pytest.raises(KeyUnavailableError):
            rknn.init_runtime()  # the host's farm key cannot open it either


def test_simulator_needs_the_farm_key(
    cls_package: Path, farm_key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encrypted = tmp_path / "cls.crypt.rkfm"
    monkeypatch.setenv("RKFARM_FARM_KEY_FILE", str(farm_key_file))
    with RKNN(raise_errors=True) as rknn:
        rknn.export_encrypted_rknn_model(str(cls_package))  # default output name
    default_out = cls_package.with_name(cls_package.stem + ".crypt.rkfm")
    assert default_out.exists()
    default_out.rename(encrypted)
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(encrypted))
        rknn.init_runtime()
        assert rknn.inference([IMAGE]) is not None
    monkeypatch.setenv("RKFARM_FARM_KEY_FILE", str(tmp_path / "absent.key"))
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(encrypted))
        with pytest.raises(KeyUnavailableError, match="this side holds no keys"):
            rknn.init_runtime()


def test_cli_keygen_and_encrypt(cls_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k" / "farm.key"
    assert main(["keygen", "--out", str(key)]) == 0
    assert key_id(read_farm_key(key)) in capsys.readouterr().out
    out = tmp_path / "m.crypt.rkfm"
    assert main(["encrypt", str(cls_package), "-o", str(out), "--level", "3", "--key-file", str(key)]) == 0
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "AES-256-GCM level 3 (scrypt)" in shown and f"farm:{key_id(read_farm_key(key))}" in shown
    assert read_farm_key(key).hex() not in shown
    with pytest.raises(PackageError, match="already encrypted"):
        encrypt_package(read_package(out), 1, read_farm_key(key))
    write_package(tmp_path / "copy.rkfm", read_package(out).header, read_package(out).payload)
