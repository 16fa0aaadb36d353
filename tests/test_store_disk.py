"""The model store's disk use: models, unfinished uploads and quarantine all count against its capacity, and
what can go is pruned in a fixed order before an upload writes anything (issue 11, item 4)."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from agent_fixtures import AgentProcess

from rkfarm.errors import RemoteError
from rkfarm.keys import make_farm_key
from rkfarm.remote.client import AgentClient
from rkfarm_agent.cli import _config, build_parser
from rkfarm_agent.errors import UploadTooLargeError
from rkfarm_agent.store import QUARANTINE_MAX_FILES, QUARANTINE_SHARE, ModelStore
from rkfarm_proto.crypto import encrypt_package, read_farm_key
from rkfarm_proto.package import ModelPackage, pack, sha256_hex
from rkfarm_proto.v1 import agent_pb2, agent_pb2_grpc, package_pb2

MiB = 1 << 20
FOLDERS = ("models", "partial", "quarantine")


def _header(tag: int) -> package_pb2.PackageHeader:
    return package_pb2.PackageHeader(source_model_name=f"m{tag}", payload_kind=package_pb2.PAYLOAD_KIND_ONNX)


def package(payload_bytes: int, tag: int) -> bytes:
    """A valid package file of a little over ``payload_bytes``; ``tag`` makes its sha256 unique."""
    return pack(_header(tag), tag.to_bytes(4, "big") + b"\0" * (payload_bytes - 4))[1]


def on_disk(root: Path) -> int:
    """Bytes in the store's three folders, measured independently of the store."""
    return sum(p.stat().st_size for d in FOLDERS for p in (root / d).iterdir() if p.is_file())


def files(root: Path, folder: str) -> list[Path]:
    return sorted((root / folder).iterdir())


def put(store: ModelStore, blob: bytes) -> str:
    sha = sha256_hex(blob)
    upload = store.begin_upload(sha, len(blob), 0)
    assert upload is not None
    upload.write(blob)
    upload.commit()
    return sha


def cut(store: ModelStore, blob: bytes, upto: int) -> str:
    """An upload cut off after ``upto`` bytes: its partial stays for a resume."""
    sha = sha256_hex(blob)
    upload = store.begin_upload(sha, len(blob), 0)
    assert upload is not None
    upload.write(blob[:upto])
    upload.abort()
    return sha


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- a real store on a tmp dir -------------------------------------------------------------------------------
def test_a_30_mib_store_never_holds_more_than_30_mib(tmp_path: Path) -> None:
    """Bound: models + partials + quarantine <= 30 MiB after every upload, cut upload and quarantine move, and
    used_bytes() equals the bytes on disk exactly. (Before: 124.8 MB on disk while Info said 21.7 MB.)"""
    cap = 30 * MiB
    store = ModelStore(tmp_path, capacity_bytes=cap, max_upload_bytes=cap)
    refused = 0
    for i in range(12):
        model = package(6 * MiB, i)
        steps: list[Callable[[], object]] = [
            functools.partial(cut, store, package(6 * MiB, 1000 + i), 3 * MiB),
            functools.partial(put, store, model),
        ]
        if i % 3 == 1:
            steps.append(functools.partial(store.quarantine, sha256_hex(model), "failed a test"))
        for step in steps:
            before = on_disk(tmp_path)
            try:
                step()
            except UploadTooLargeError as exc:
                assert "rkfarm-agent serve --store-capacity" in str(exc)
                assert on_disk(tmp_path) == before, "a refused upload wrote nothing"
                refused += 1
            used = on_disk(tmp_path)
            assert used <= cap, f"step {i}: {used} bytes on disk in a {cap}-byte store"
            assert store.used_bytes() == used
    assert files(tmp_path, "partial") and files(tmp_path, "models"), "partials and models share the room"
    assert refused == 0, "an idle partial or a model could always be pruned for these"


def test_quarantine_keeps_within_its_share_and_file_count(tmp_path: Path) -> None:
    """Bound: six quarantined 4 MiB models leave at most 4 files and 25 % of the 40 MiB capacity (10 MiB) in
    quarantine, the newest kept; a model quarantined twice keeps one copy; one over the share is deleted."""
    cap = 40 * MiB
    share = int(cap * QUARANTINE_SHARE)
    store = ModelStore(tmp_path, capacity_bytes=cap, max_upload_bytes=cap)
    shas = []
    for i in range(6):
        shas.append(put(store, package(4 * MiB, i)))
        store.quarantine(shas[-1], "does not decrypt")
        held = files(tmp_path, "quarantine")
        assert len(held) <= QUARANTINE_MAX_FILES and sum(p.stat().st_size for p in held) <= share
        assert on_disk(tmp_path) <= cap and store.used_bytes() == on_disk(tmp_path)
    assert [p.name[:64] for p in files(tmp_path, "quarantine")] == sorted(shas[4:]), "the oldest went first"
    put(store, package(4 * MiB, 5))
    store.quarantine(shas[5], "does not decrypt")
    assert sum(p.name.startswith(shas[5]) for p in files(tmp_path, "quarantine")) == 1, "one copy per model"
    big = put(store, package(12 * MiB, 99))
    before = files(tmp_path, "quarantine")
    store.quarantine(big, "does not decrypt")
    assert not store.status(big).present and files(tmp_path, "quarantine") == before, "too big to keep: deleted"


def test_stale_partials_go_at_start_up_and_when_room_is_needed(tmp_path: Path) -> None:
    """Bound: a partial with no write for longer than partial_max_age_s (60 s here) is deleted at start-up and
    when an upload needs room; a fresh one and an upload in progress (however old its file) are kept."""
    cap, blob_payload = 10 * MiB + 4096, 2 * MiB  # room for the headers
    store = ModelStore(tmp_path, cap, cap, partial_max_age_s=60)
    stale = cut(store, package(blob_payload, 1), MiB)
    fresh = cut(store, package(blob_payload, 2), MiB)
    age(tmp_path / "partial" / f"{stale}.part", 120)
    store = ModelStore(tmp_path, cap, cap, partial_max_age_s=60)  # a restart
    store.verify()
    assert store.status(stale).partial_bytes == 0, "stale partial pruned at start-up"
    assert store.status(fresh).partial_bytes == MiB, "fresh partial kept for a resume"

    active_blob = package(blob_payload, 3)
    active = store.begin_upload(sha256_hex(active_blob), len(active_blob), 0)
    assert active is not None
    active.write(active_blob[:MiB])
    age(active.path, 120)  # its writer is slow, not gone
    age(tmp_path / "partial" / f"{fresh}.part", 120)  # now stale too
    models = [put(store, package(blob_payload, 10 + i)) for i in range(3)]  # 1 + 2 (reserved) + 6 MiB + headers
    models.append(put(store, package(blob_payload, 13)))  # needs room: the stale partial goes, no model
    assert store.status(fresh).partial_bytes == 0, "stale partial pruned when room was needed"
    assert all(store.status(sha).present for sha in models), "no model evicted while a stale partial could go"
    assert active.path.stat().st_size == MiB, "the upload in progress kept its partial"
    active.write(active_blob[MiB:])
    assert active.commit() == len(active_blob)
    assert on_disk(tmp_path) <= cap and store.used_bytes() == on_disk(tmp_path)


def test_room_is_made_quarantine_first_then_stale_partials_then_lru(tmp_path: Path) -> None:
    """Order: oldest quarantined file, then stale partials, then unpinned models by LRU; pinned ones stay."""
    blobs = [package(MiB, i) for i in range(9)]
    n = len(blobs[0])
    cap = 6 * n + n // 2  # quarantine share ~1.6 n: one model fits
    store = ModelStore(tmp_path, cap, cap, partial_max_age_s=60)
    m = [put(store, blob) for blob in blobs[:5]]
    store.quarantine(m[4], "does not decrypt")
    partial = cut(store, blobs[8], n // 2)
    age(tmp_path / "partial" / f"{partial}.part", 120)
    m[4] = put(store, blobs[5])  # models 0-3 and 5, one quarantined, one stale partial: exactly full
    for rank, sha in enumerate(m):
        age(store.model_path(sha), 100 - rank)  # LRU clock: model 0 is the least recently used
    assert on_disk(tmp_path) == cap
    store.pin(m[0])
    m.append(put(store, blobs[6]))  # n bytes over: the quarantined file is enough
    assert not files(tmp_path, "quarantine"), "quarantine went first"
    assert store.status(partial).partial_bytes == n // 2, "the stale partial stayed: quarantine made the room"
    assert all(store.status(sha).present for sha in m)
    m.append(put(store, blobs[7]))  # n bytes over again: the stale partial, then the LRU unpinned model 1
    assert store.status(partial).partial_bytes == 0
    assert store.status(m[0]).present, "pinned: never evicted"
    assert not store.status(m[1]).present, "least recently used unpinned model evicted"
    assert all(store.status(sha).present for sha in m[2:])
    assert on_disk(tmp_path) <= cap and store.used_bytes() == on_disk(tmp_path)
    store.unpin(m[0])


def test_an_upload_without_room_is_refused_before_a_byte_is_written(tmp_path: Path) -> None:
    """Bound: with every byte held by pinned models and an upload in progress, a new upload is refused up front
    (RESOURCE_EXHAUSTED's UploadTooLargeError naming --store-capacity) and nothing is deleted for it."""
    blobs = [package(MiB, i) for i in range(4)]
    n = len(blobs[0])
    store = ModelStore(tmp_path, 3 * n + n // 2, 10 * n)
    pinned = [put(store, blob) for blob in blobs[:2]]
    for sha in pinned:
        store.pin(sha)
    small = put(store, package(1000, 7))
    store.quarantine(small, "failed a test")  # prunable, but not enough
    active = store.begin_upload(sha256_hex(blobs[2]), n, 0)
    assert active is not None
    active.write(blobs[2][:100])
    before = {p: p.stat().st_size for d in FOLDERS for p in (tmp_path / d).iterdir()}
    with pytest.raises(UploadTooLargeError, match=r"store is full.*\(rkfarm-agent serve --store-capacity\)"):
        store.begin_upload(sha256_hex(blobs[3]), n, 0)
    assert {p: p.stat().st_size for d in FOLDERS for p in (tmp_path / d).iterdir()} == before
    with pytest.raises(UploadTooLargeError, match=r"over this agent's limit.*\(rkfarm-agent serve --max-upload\)"):
        store.begin_upload("a" * 64, 10 * n + 1, 0)
    assert build_parser().parse_args(["serve", "--max-upload", "3M"]).max_upload == 3 * MiB, "the flag named exists"
    active.abort()
    for sha in pinned:
        store.unpin(sha)


def test_partial_max_age_is_a_serve_option() -> None:
    parser = build_parser()
    assert _config(parser.parse_args(["serve", "--partial-max-age-seconds", "90"])).partial_max_age_s == 90
    assert _config(parser.parse_args(["serve"])).partial_max_age_s == 3600
    serve_help = parser._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    assert "--partial-max-age-seconds" in serve_help and "unfinished upload" in serve_help
    with pytest.raises(ValueError, match="--partial-max-age-seconds must be 0 or more"):
        _config(parser.parse_args(["serve", "--partial-max-age-seconds", "-1"]))


# -- a real agent process ------------------------------------------------------------------------------------
def _info_matches_disk(client: AgentClient, store: Path, cap: int) -> int:
    used = on_disk(store)
    assert used <= cap, f"{used} bytes on disk in a {cap}-byte store"
    reported = client.info().store_used_bytes
    assert abs(reported - used) <= used // 100, f"Info says {reported} bytes, {used} on disk"
    return used


def test_agent_with_cut_uploads_stays_within_30_mib(make_agent: Callable[..., AgentProcess]) -> None:
    """Bound: a 30 MiB agent given four cut 6 MiB uploads and six whole ones never holds more than 30 MiB on
    disk, and Info's store_used_bytes equals what is on disk within 1 %."""
    cap = 30 * MiB
    agent = make_agent("--store-capacity", "30M", "--max-upload", "30M")
    with agent.client() as client, grpc.insecure_channel(agent.address) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        for i in range(4):
            blob = package(6 * MiB, 1000 + i)
            first = agent_pb2.UploadChunk(sha256=sha256_hex(blob), total_size=len(blob), data=blob[: 3 * MiB])
            with pytest.raises(grpc.RpcError) as err:
                stub.Upload(iter([first]), timeout=30)
            assert err.value.code() == grpc.StatusCode.DATA_LOSS
            sha = sha256_hex(blob)
            assert wait_until(lambda sha=sha: client.model_status(sha).partial_bytes == 3 * MiB)
            _info_matches_disk(client, agent.store, cap)
        for i in range(6):
            blob = package(6 * MiB, i)
            client.ensure_model(blob)
            assert client.model_status(sha256_hex(blob)).present
            _info_matches_disk(client, agent.store, cap)
        assert len(files(agent.store, "partial")) == 4, "fresh partials are kept for a resume"
    assert agent.alive()


def test_agent_six_failed_decrypts_keep_quarantine_bounded(
    make_agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    """Bound: six forged 1 MiB packages that fail to decrypt on an 8 MiB agent leave at most 4 files and
    25 % of the capacity (2 MiB) in quarantine (before: it grew by the size of every one)."""
    cap = 8 * MiB
    key = make_farm_key(tmp_path / "farm.key")
    agent = make_agent("--store-capacity", "8M", "--farm-key-file", str(key))
    with agent.client() as client:
        for i in range(6):
            sealed = encrypt_package(ModelPackage(_header(i), os.urandom(MiB)), 1, read_farm_key(key))
            forged = bytearray(sealed.payload)
            forged[1000 + i] ^= 0x80
            blob = pack(sealed.header, bytes(forged))[1]  # hashes recomputed: only decryption can tell
            client.ensure_model(blob)
            with pytest.raises(RemoteError, match="INVALID_ARGUMENT"):
                client.load(agent_pb2.LoadRequest(model_sha256=sha256_hex(blob)))
            assert not client.model_status(sha256_hex(blob)).present
            held = files(agent.store, "quarantine")
            assert len(held) <= QUARANTINE_MAX_FILES
            assert sum(p.stat().st_size for p in held) <= int(cap * QUARANTINE_SHARE)
            _info_matches_disk(client, agent.store, cap)
        assert files(agent.store, "quarantine"), "the newest are kept for a post-mortem"
    assert agent.alive()


def test_agent_prunes_stale_partials_at_start_up(make_agent: Callable[..., AgentProcess]) -> None:
    """Bound: a partial idle for 2 h (over the default max age of 1 h) is gone once the agent starts; one idle
    for a minute is still offered for a resume, and Info counts it."""
    agent = make_agent()
    agent.stop()
    stale, fresh = package(MiB, 1), package(MiB, 2)
    for blob, idle_s in ((stale, 2 * 3600), (fresh, 60)):
        part = agent.store / "partial" / f"{sha256_hex(blob)}.part"
        part.write_bytes(blob[: MiB // 2])
        age(part, idle_s)
    agent.start()
    with agent.client() as client:
        assert client.model_status(sha256_hex(stale)).partial_bytes == 0
        assert client.model_status(sha256_hex(fresh)).partial_bytes == MiB // 2
        assert _info_matches_disk(client, agent.store, 2 << 30) == MiB // 2
        assert client.ensure_model(fresh) == len(fresh) - MiB // 2, "the fresh partial resumed"
    assert agent.alive()
