"""labgrid as the farm's coordinator (rkfarm.farm.labgrid), against a real labgrid-coordinator on loopback: agents
exported as places with their attributes as tags (and as resources by a real labgrid-exporter), two hosts
reserving by tags (the second waits until the first releases), and a reservation never released expiring.

The agents are fake ids in the places' resource data: no rkfarm agent is started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("labgrid", reason="labgrid is not installed (pip install 'rkfarm[labgrid]')")

import grpc

from rkfarm.farm.labgrid import LabgridReservations, exporter_config
from rkfarm.farm.reservations import ReservationError, ReservationTimeoutError, reservations_from_env

pytestmark = pytest.mark.slow

AGENTS: list[dict[str, Any]] = [
    {"agent_id": "board-001", "platform": "rk3588", "npu_cores": 3, "backends": ["onnxruntime", "rknnrt"],
     "tags": {"camera": "", "lab": "2"}, "address": "10.0.0.1:50551"},
    {"agent_id": "board-002", "platform": "rk3588", "npu_cores": 3, "backends": ["onnxruntime"],
     "tags": {"lab": "2"}, "address": "10.0.0.2:50551"},
    {"agent_id": "board-003", "platform": "rk3576", "npu_cores": 2, "backends": ["onnxruntime"],
     "tags": {"camera": ""}, "address": "10.0.0.3:50551"},
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll ``check`` until it returns something true (or fail naming ``what``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def labgrid_client(address: str, *args: str, user: str = "someone-else") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LG_USERNAME": user}
    command = [sys.executable, "-m", "labgrid.remote.client", "-x", address, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture()
def coordinator(tmp_path: Path) -> Iterator[str]:
    """A labgrid-coordinator on a free loopback port, its state (places.yaml) in tmp_path."""
    for _ in range(3):
        address = f"127.0.0.1:{free_port()}"
        log = (tmp_path / "coordinator.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "labgrid.remote.coordinator", "-l", address],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            channel = grpc.insecure_channel(address)
            grpc.channel_ready_future(channel).result(timeout=30)
            channel.close()
            break
        except grpc.FutureTimeoutError:
            process.kill()
            process.wait()
            log.close()
    else:
        pytest.fail(f"labgrid-coordinator did not start: {(tmp_path / 'coordinator.log').read_text()[-2000:]}")
    try:
        yield address
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def show(address: str, place: str) -> str | None:
    """``labgrid-client show`` of a place once the exporter's RKFarmAgent resource is bound to it."""
    out = labgrid_client(address, "-p", place, "show").stdout
    return out if f"/{place.removeprefix('rkfarm-')}/RKFarmAgent/RKFarmAgent)" in out else None


@pytest.fixture()
def admin(coordinator: str, tmp_path: Path) -> Iterator[LabgridReservations]:
    """The lab's admin: one place per agent, and a real labgrid-exporter exporting the agents as resources."""
    config = tmp_path / "exporter.yaml"
    config.write_text(exporter_config(AGENTS))
    log = (tmp_path / "exporter.log").open("w")
    exporter = subprocess.Popen(
        [sys.executable, "-m", "labgrid.remote.exporter", "-c", coordinator, "--name", "rack1", str(config)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with LabgridReservations(coordinator, name="lab/admin") as session:
            assert session.sync_places(AGENTS) == ["rkfarm-board-001", "rkfarm-board-002", "rkfarm-board-003"]
            wait_for("the exporter's resources on the places", lambda: show(coordinator, "rkfarm-board-003"))
            yield session
    finally:
        exporter.terminate()
        exporter.wait(timeout=15)
        log.close()


def test_agents_are_exported_as_places_and_resources(admin: LabgridReservations, coordinator: str) -> None:
    places = admin.places()
    assert places["rkfarm-board-001"]["agent_id"] == "board-001"
    assert places["rkfarm-board-001"]["tags"] == {
        "rkfarm": "1", "agent_id": "board_001", "platform": "rk3588", "npu_cores": "3",
        "backend_onnxruntime": "1", "backend_rknnrt": "1", "tag_camera": "1", "tag_lab": "2",
    }  # fmt: skip
    out = show(coordinator, "rkfarm-board-001")
    assert out is not None and "rack1/board-001/RKFarmAgent/RKFarmAgent" in out and "*/board-001/RKFarmAgent" in out
    assert "'agent_id': 'board-001'" in out and "'address': '10.0.0.1:50551'" in out and "'avail': True" in out
    # a lab admin's own tag survives a sync; an attribute the agent lost is removed; a gone agent is pruned
    tagged = labgrid_client(coordinator, "-p", "rkfarm-board-002", "set-tags", "rack=r7", user="admin")
    assert tagged.returncode == 0, tagged.stderr
    changed = [AGENTS[0], {**AGENTS[1], "tags": {}, "npu_cores": 1}]
    assert admin.sync_places(changed, prune=True) == ["rkfarm-board-001", "rkfarm-board-002"]
    places = admin.places()
    assert sorted(places) == ["rkfarm-board-001", "rkfarm-board-002"]
    tags = places["rkfarm-board-002"]["tags"]
    assert tags["rack"] == "r7" and tags["npu_cores"] == "1" and "tag_lab" not in tags
    assert admin.sync_places(changed) == ["rkfarm-board-001", "rkfarm-board-002"]  # idempotent
    with pytest.raises(ReservationError, match="cannot name a labgrid resource"):
        exporter_config([{"agent_id": "bad/id"}])


def test_a_second_host_waits_until_the_first_releases(
    admin: LabgridReservations, coordinator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RKFARM_LABGRID", coordinator)
    host_b = reservations_from_env()  # how DevicePool finds the coordinator
    assert isinstance(host_b, LabgridReservations)
    with LabgridReservations(coordinator, name="host-a/ci") as host_a:
        assert host_a.acquire("platform=rk3588,tag:camera", 1, timeout_s=10) == ["board-001"]
        got: dict[str, Any] = {}

        def wait_in_b() -> None:
            try:
                got["ids"] = host_b.acquire("platform=rk3588,tag:camera", 1, timeout_s=60)
            except BaseException as exc:  # pragma: no cover - reported below
                got["error"] = exc
            got["at"] = time.monotonic()

        waiter = threading.Thread(target=wait_in_b)
        waiter.start()
        queued = wait_for(
            "host B's reservation to queue",
            lambda: [r for r in admin.reservations() if r["owner"] == host_b._session.name and r["state"] == "waiting"],
        )
        assert queued[0]["filter"] == {"rkfarm": "1", "platform": "rk3588", "tag_camera": "1"}
        # others' tags select other boards at once: the rk3576 camera board, the rk3588 one without a camera
        assert host_a.acquire("platform=rk3576,tag:camera", 1, timeout_s=10) == ["board-003"]
        assert host_a.acquire("platform=rk3588", 1, timeout_s=10) == ["board-002"]
        # a labgrid user cannot take the board a reservation holds
        refused = labgrid_client(coordinator, "-p", "rkfarm-board-001", "acquire")
        assert refused.returncode != 0 and "was not reserved for" in refused.stdout + refused.stderr
        assert waiter.is_alive() and "ids" not in got  # still waiting: A holds the only rk3588 camera board
        released_at = time.monotonic()
        host_a.release(["board-001", "not-held"])
        waiter.join(timeout=30)
        assert not waiter.is_alive() and "error" not in got, got
        assert got["ids"] == ["board-001"] and got["at"] >= released_at
        assert host_b.held() == {"board-001": queued[0]["token"]}
        # nothing left to take: count=2 of the rk3576 boards times out and holds nothing
        with pytest.raises(ReservationTimeoutError, match="0 of 2 board"):
            host_b.acquire("platform=rk3576", 2, timeout_s=1.5)
        mine = [r for r in admin.reservations() if r["owner"] == host_b._session.name]
        assert [(r["place"], r["state"]) for r in mine] == [("rkfarm-board-001", "allocated")]
    assert {r["owner"] for r in admin.reservations()} == {host_b._session.name}  # A's were cancelled on close
    host_b.release(["board-001"])
    host_b.close()
    assert admin.reservations() == []


DEAD_HOST = """
import sys, time
from rkfarm.farm.labgrid import LabgridReservations
session = LabgridReservations(sys.argv[1], name="dead-host/ci", refresh_s=5.0)
print(session.acquire("id=board-002", 1, timeout_s=10)[0], session.held()["board-002"], flush=True)
time.sleep(600)
"""


def test_a_reservation_never_released_expires(admin: LabgridReservations, coordinator: str) -> None:
    dead = subprocess.Popen(
        [sys.executable, "-c", DEAD_HOST, coordinator], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert dead.stdout is not None
        agent, token = dead.stdout.readline().split()
        assert agent == "board-002"
    finally:
        dead.send_signal(signal.SIGKILL)  # no release, no cancel: the host is gone
        dead.wait()
    killed_at = time.monotonic()
    with LabgridReservations(coordinator, name="host-b/ci") as host_b:
        # board-001 matches too (lab=2) but the selector names the board by id: B waits for the dead host's one
        assert host_b.acquire("id=board-002", 1, timeout_s=150) == ["board-002"]
        waited = time.monotonic() - killed_at
        states = {r["token"]: r["state"] for r in admin.reservations()}
        assert states.get(token, "removed") in ("expired", "removed")
    # labgrid expires a reservation 60 s after its last refresh (the dead host refreshed every 5 s) when it next
    # schedules: on its 15 s tick, or when host B's waiting acquire makes it schedule (every 5 s). B gets the board
    # 55-65 s after the kill (61 s measured here), never before the dead host's reservation ran out
    print(f"the dead host's board went to host B {waited:.1f} s after the dead host was killed")
    assert 50.0 <= waited <= 90.0, waited


def test_an_unreachable_coordinator_is_one_clear_error() -> None:
    started = time.monotonic()
    with pytest.raises(ReservationError, match=r"did not answer within 2 s .*RKFARM_LABGRID"):
        LabgridReservations(f"127.0.0.1:{free_port()}", timeout_s=2)
    assert time.monotonic() - started < 10
    with pytest.raises(ReservationError, match="refresh_s must be"):
        LabgridReservations("127.0.0.1:1", refresh_s=40)
