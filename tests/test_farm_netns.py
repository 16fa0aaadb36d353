"""A farm of real agents, each in its own network namespace on one bridge, driven from a host in another.

Nothing here touches this machine's own interfaces or loopback: the namespaces, the bridge and the veths are
made by the fixture and removed afterwards (also on failure), so other test runs' loopback agents and these never
see each other's adverts. Host-side code runs in the host namespace as this file run as a script
(``python tests/test_farm_netns.py SCENARIO ARGS``): it prints one JSON object per line, the test reads them and
stops or starts agents in between. Skipped, with the reason, where network namespaces cannot be made.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

BASE = 16  # the farm: 12 rk3588 and 4 rk3576, tagged
SLOTS = BASE + 10  # spare namespaces: joiners, a duplicate id, the lease board, second hosts
LEASE_SLOT, DUP_SLOT, CRASH_SLOT, JOIN_SLOTS, HOST2_SLOT = BASE, BASE + 1, BASE + 2, (BASE + 3, BASE + 4), BASE + 9


def base_agents() -> list[tuple[int, str, str, list[str]]]:
    """(slot, id, platform, tags) of the farm every test starts from."""
    farm = []
    for i in range(BASE):
        platform = "rk3588" if i < 12 else "rk3576"
        tags = [f"lab={1 + i % 2}"] + (["camera"] if i % 3 == 0 else [])
        farm.append((i, f"board-{i:03d}", platform, tags))
    return farm


# -- models built in the test ------------------------------------------------------------------------------------
def conv_onnx(path: Path, channels: int, size: int, layers: int = 1) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx_models import make_model

    rng = np.random.default_rng(channels * 31 + size)
    nodes, inits, current, c_in = [], [], "x", 3
    for i in range(layers):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (channels, c_in, 3, 3)).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("Conv", [current, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]  # fmt: skip
        current, c_in = f"r{i}", channels
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, size, size])], inits,
    )  # fmt: skip
    onnx.save(make_model(graph, 17), path)
    return path


def package(onnx_path: Path) -> Path:
    from rkfarm import RKNN

    out = onnx_path.with_suffix(".rkfm")
    with RKNN(raise_errors=True) as rknn:
        rknn.config(target_platform="rk3588", float_dtype="float32")
        rknn.load_onnx(str(onnx_path))
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(out))
    return out


# -- the farm fixture --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from rkfarm.farm.netns import NetnsFarm, available

    ok, why = available()
    if not ok:
        pytest.skip(f"a farm in network namespaces cannot run here: {why}")
    work = tmp_path_factory.mktemp("farm")
    lab = NetnsFarm(work, SLOTS)
    try:
        lab.create()
        started = [lab.start_agent(slot, agent_id, platform=p, tags=tags) for slot, agent_id, p, tags in base_agents()]
        lab.wait_serving(started, timeout_s=120)
        lab.wait_advertised(started, timeout_s=120)
        lab.models = {  # type: ignore[attr-defined]
            "tiny": package(conv_onnx(work / "tiny.onnx", 8, 16)),
            "slow": package(conv_onnx(work / "slow.onnx", 32, 96, layers=3)),
        }
        yield lab
    finally:
        lab.close()
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"rkf{lab.tag}" not in leftover, leftover


class Driver:
    """This file run as a script in the host namespace (or a slot's): JSON lines out, read with a timeout."""

    def __init__(self, farm: Any, scenario: str, args: dict[str, Any], slot: int | None = None, **env: str) -> None:
        self.proc = farm.popen_host([sys.executable, __file__, scenario, json.dumps(args)], slot=slot, **env)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                try:
                    self.lines.put(json.loads(line))
                except ValueError:
                    self.lines.put({"event": "error", "error": f"not one JSON object: {line[:200]!r}"})
        self.lines.put(None)

    def next(self, event: str, timeout_s: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                item = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {event!r} within {timeout_s} s; seen {self.seen[-5:]}") from None
            if item is None:
                self.proc.wait(10)
                rc = self.proc.returncode
                raise AssertionError(f"driver ended (rc {rc}) before {event!r}; seen {self.seen[-5:]}")
            self.seen.append(item)
            if item.get("event") == "error":
                raise AssertionError(f"driver failed: {item['error']}")
            if item.get("event") == event:
                return item

    def finish(self, timeout_s: float = 120.0) -> dict[str, Any]:
        result = self.next("result", timeout_s)
        self.proc.wait(30)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture()
def drivers() -> Iterator[list[Driver]]:
    made: list[Driver] = []
    yield made
    for driver in made:
        driver.kill()


# -- the tests ---------------------------------------------------------------------------------------------------
def test_one_process_drives_every_board_by_id(farm: Any, drivers: list[Driver]) -> None:
    """Every board found by id from one process at once (one registry, not one browser per call), each
    running the model with the same outputs as ONNX Runtime on the same input."""
    ids = [agent_id for _, agent_id, _, _ in base_agents()]
    args = {"ids": ids, "package": str(farm.models["tiny"]), "onnx": str(farm.work / "tiny.onnx")}
    driver = Driver(farm, "by_id", args)
    drivers.append(driver)
    result = driver.finish()
    assert result["failed"] == {}, result["failed"]
    assert sorted(result["ran"]) == sorted(ids)
    assert result["max_abs_diff"] <= 1e-4 * max(1.0, result["output_range"]), result


def test_duplicate_id_is_reported_on_both_sides(farm: Any, drivers: list[Driver]) -> None:
    original = farm.agents[3]
    dup = farm.start_agent(DUP_SLOT, original.agent_id, platform="rk3588")
    try:
        farm.wait_serving([dup])
        deadline = time.monotonic() + 20
        while "id conflict" not in dup.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = dup.log()
        assert f"already advertises the id {original.agent_id!r} (at {original.address})" in log, log[-2000:]
        assert "keeps serving" in log
        driver = Driver(farm, "dup", {"id": original.agent_id, "dup_address": dup.address})
        drivers.append(driver)
        result = driver.finish()
        assert sorted(result["listed"]) == sorted([original.address, dup.address])
        assert "2 agents claim the id" in result["refused"] and original.address in result["refused"]
        assert dup.address in result["refused"]
        assert "CONFLICT" in result["cli"] and dup.address in result["cli"]
        assert result["dup_status"].startswith("id conflict") and result["dup_serves"]
        assert original.agent_id not in result["pool_ids"]  # a pool leaves an ambiguous id out
    finally:
        farm.stop_agent(DUP_SLOT)


def test_crashed_board_leaves_and_a_new_one_joins(farm: Any, drivers: list[Driver]) -> None:
    victim = farm.start_agent(CRASH_SLOT, "crash-me", platform="rk3566", tags=["doomed"])
    farm.wait_serving([victim])
    driver = Driver(farm, "watch", {"id": victim.agent_id, "joiner": "late-joiner"})
    drivers.append(driver)
    driver.next("seen", 30)
    killed = time.monotonic()
    farm.stop_agent(CRASH_SLOT, signal.SIGKILL)  # no goodbye packet
    gone = driver.next("left", 30)
    left_after = time.monotonic() - killed
    joiner = farm.start_agent(CRASH_SLOT, "late-joiner", platform="rk3566")
    started = time.monotonic()
    driver.next("joined", 30)
    joined_after = time.monotonic() - started
    result = driver.finish()
    farm.stop_agent(CRASH_SLOT)
    assert gone["id"] == victim.agent_id
    assert left_after < 10.0, f"a crashed board stayed in the registry {left_after:.1f} s"
    assert joined_after < 10.0 and joiner.agent_id in result["final"]
    assert victim.agent_id not in result["final"]


def test_devices_cli_is_fast_once_warm(farm: Any) -> None:
    env = farm.host_env()
    cold = subprocess.run(farm.host_command(sys.executable, "-m", "rkfarm.cli", "devices", "--json"), env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert cold.returncode == 0, cold.stderr
    assert len({d["agent_id"] for d in json.loads(cold.stdout)}) >= BASE
    started = time.perf_counter()
    warm = subprocess.run(farm.host_command(sys.executable, "-m", "rkfarm.cli", "devices"), env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    took = time.perf_counter() - started
    assert warm.returncode == 0 and all(agent_id in warm.stdout for _, agent_id, _, _ in base_agents())
    assert took < 2.0, f"`rkfarm devices` took {took:.2f} s with a warm registry cache"


def test_cli_sweep_list_and_hold(farm: Any) -> None:
    """`rkfarm perf --devices` (table, --json, --csv, --html, progress), `rkfarm farm list|hold`, a bad selector."""
    env = farm.host_env()

    def rkfarm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(farm.host_command(sys.executable, "-m", "rkfarm.cli", *args), env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    rk3576 = sorted(agent_id for _, agent_id, p, _ in base_agents() if p == "rk3576")
    out = farm.work / "cli-sweep"
    swept = rkfarm("perf", str(farm.models["tiny"]), "--devices", "platform=rk3576", "--runs", "20", "--json",
                   "--csv", f"{out}.csv", "--html", f"{out}.html")  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    data = json.loads(swept.stdout)
    assert sorted(b["agent_id"] for b in data["boards"]) == rk3576 and data["failed"] == 0
    assert all(b["latency_us"]["runs"] == 20 for b in data["boards"])
    assert f"boards done {len(rk3576)}/{len(rk3576)}" in swept.stderr
    rows = (out.parent / f"{out.name}.csv").read_text().splitlines()
    assert len(rows) == 1 + len(rk3576) and rows[0].startswith("agent_id,")
    assert "<svg" in (out.parent / f"{out.name}.html").read_text()
    table = rkfarm("perf", str(farm.models["tiny"]), "--devices", "platform=rk3576,lab=2", "--runs", "5")
    assert table.returncode == 0 and "MEDIAN ms" in table.stdout and "board(s) measured (0 failed)" in table.stdout
    listed = rkfarm("farm", "list", "tag:camera,platform=rk3588", "--json")
    expected = sorted(i for _, i, p, tags in base_agents() if p == "rk3588" and "camera" in tags)
    assert sorted(b["agent_id"] for b in json.loads(listed.stdout)["boards"]) == expected
    bad = rkfarm("farm", "list", "npu_cores>=many")
    assert bad.returncode == 1 and "npu_cores>=many" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    held = rkfarm("farm", "hold", f"id={rk3576[0]}", "--for", "0.5")
    assert held.returncode == 0 and f"holding {rk3576[0]}" in held.stdout and "released" in held.stderr


def test_exclusive_lease(farm: Any, drivers: list[Driver]) -> None:
    """A perf measurement holds the board: another host's runs are refused naming the holder and the expiry,
    and go through once the holder releases, or once its lease lapses after it died; two pools acquiring one
    board never both get it."""
    board = farm.start_agent(LEASE_SLOT, "lease-board", platform="rk3588", tags=["lease"])
    farm.wait_serving([board])
    model = str(farm.models["slow"])
    holder = Driver(farm, "hold_exclusive", {"address": board.address, "package": model})
    drivers.append(holder)
    held = holder.next("holding")
    other = Driver(farm, "try_run", {"address": board.address, "package": model, "until_ok_s": 40}, slot=HOST2_SLOT)
    drivers.append(other)
    refused = other.next("refused")
    assert "RESOURCE_EXHAUSTED" in refused["error"] and held["client"] in refused["error"]
    assert "holds this board exclusively" in refused["error"]
    assert refused["info_holder"] == held["client"]
    assert held["yours"] and held["expires_unix"] == 0  # it lives as long as the session
    measured = holder.finish()  # eval_perf under the hold, then release
    assert measured["where"].endswith(", exclusive"), measured  # and not "shared with N call(s) of others"
    ran = other.finish()
    assert ran["ok"] and ran["waited_s"] > 0
    assert ran["first_ok_unix"] >= measured["released_unix"] - 0.05  # it ran only after the release

    # without a hold, a measurement that shared the board says so (it used to come back as a normal result)
    shared = Driver(farm, "contended", {"address": board.address, "package": model})
    drivers.append(shared)
    contended = shared.finish()
    assert "shared with" in contended["where"] and "their load is in these times" in contended["where"]
    assert contended["alone_where"].endswith("onnxruntime"), contended  # measured alone: no such note

    # a holder that dies: its lease lapses (6 s), nobody cleans up
    dying = Driver(farm, "hold_and_die", {"address": board.address, "lease_s": 6.0})
    drivers.append(dying)
    dying.next("holding")
    dying.kill()
    died = time.monotonic()
    late = Driver(farm, "try_run", {"address": board.address, "package": model, "until_ok_s": 20}, slot=HOST2_SLOT)
    drivers.append(late)
    assert "about-to-die holds this board exclusively until" in late.next("refused")["error"]
    after = late.finish()
    assert after["ok"] and time.monotonic() - died < 12.0

    # many pools on two hosts race for one board: exactly one holds it at a time
    racers = [Driver(farm, "race", {"selector": "id=lease-board", "hold_s": 1.0}, slot=s)
              for s in (None, HOST2_SLOT, None, HOST2_SLOT)]  # fmt: skip
    drivers.extend(racers)
    spans = [r.finish(90) for r in racers]
    got = sorted((s["from"], s["to"]) for s in spans if s["got"])
    assert got, spans
    for (_, end), (start, _) in itertools.pairwise(got):
        assert start >= end - 0.05, f"two pools held the board at once: {got}"
    farm.stop_agent(LEASE_SLOT)


def test_pool_reserves_through_a_coordinator_then_holds(farm: Any, drivers: list[Driver]) -> None:
    """With a coordinator (``reservations=``, what RKFARM_LABGRID gives), the pool asks it first, then takes the
    agents' own holds on exactly the ids it granted, and gives both back on release."""
    driver = Driver(farm, "reserved", {"selector": "platform=rk3576,lab=2", "count": 2})
    drivers.append(driver)
    result = driver.finish()
    granted = sorted(i for _, i, p, tags in base_agents() if p == "rk3576" and "lab=2" in tags)[:2]
    assert result["asked"] == [{"tags": {"platform": "rk3576", "tag_lab": "2"}, "count": 2}]
    assert sorted(result["held"]) == granted and result["holders"] == [result["label"]] * 2
    assert result["released"] == [sorted(granted)] and result["after"] == ["", ""]


def test_map_reports_a_vanished_board_and_retries_its_job_elsewhere(farm: Any, drivers: list[Driver]) -> None:
    """pool.map on two rk3576 boards; one is killed mid-job: the other's result stands, the lost job is reported
    and run again on a spare rk3576, with outputs equal to ONNX Runtime's everywhere."""
    tiny, onnx_path = str(farm.models["tiny"]), str(farm.work / "tiny.onnx")
    args = {"ids": ["board-012", "board-013"], "package": tiny, "onnx": onnx_path}
    driver = Driver(farm, "map_retry", args)
    drivers.append(driver)
    started = driver.next("job-started", 60)
    victim = int(started["id"].split("-")[1])
    farm.stop_agent(victim, signal.SIGKILL)
    result = driver.finish(120)
    farm.wait_serving([farm.start_agent(victim, started["id"], platform="rk3576", tags=base_agents()[victim][3])])
    jobs = {r["attempts"][0]: r for r in result["results"]}
    lost = jobs[started["id"]]
    assert lost["ok"] and len(lost["attempts"]) == 2 and lost["attempts"][1] in ("board-014", "board-015")
    assert started["id"] in lost["replaced"] and farm.agents[victim].address in lost["replaced"]
    survivor = jobs[next(i for i in args["ids"] if i != started["id"])]
    assert survivor["ok"] and survivor["attempts"] == [survivor["agent_id"]]
    for job in (lost, survivor):
        assert job["value"]["max_abs_diff"] <= 1e-4 * max(1.0, job["value"]["range"]), job


def test_pool_selects_and_sweeps_while_boards_come_and_go(farm: Any, drivers: list[Driver]) -> None:
    """The must-show: the pool finds all 16 over mDNS across the bridge, selects by platform and tag, and a sweep
    stays correct while a quarter of the boards stop (killed or stopped) and new ones start mid-sweep."""
    expected = {agent_id: (p, tags) for _, agent_id, p, tags in base_agents()}
    history = farm.work / "history.db"
    driver = Driver(farm, "sweep", {
        "ids": sorted(expected), "package": str(farm.models["slow"]), "runs": 300, "workers": 2,
        "html": str(farm.work / "sweep.html"),
    }, RKFARM_HISTORY=str(history))  # fmt: skip
    drivers.append(driver)
    found = driver.next("discovered", 60)
    assert sorted(found["all"]) == sorted(expected)
    assert sorted(found["rk3576"]) == sorted(i for i, (p, _) in expected.items() if p == "rk3576")
    assert sorted(found["rk3588_camera"]) == sorted(
        i for i, (p, tags) in expected.items() if p == "rk3588" and "camera" in tags
    )
    assert sorted(found["lab2_cores"]) == sorted(i for i, (_, tags) in expected.items() if "lab=2" in tags)
    progress = driver.next("progress", 120)
    while progress["done"] < 3:
        progress = driver.next("progress", 120)
    # a quarter stop mid-sweep: the next two boards to start measuring are killed outright as they start, two
    # still waiting are stopped gracefully; two new boards start
    slots = {agent_id: slot for slot, agent_id, _, _ in base_agents()}
    measuring: list[int] = []
    while len(measuring) < 2:
        begun = driver.next("started", 120)["id"]
        farm.stop_agent(slots[begun], signal.SIGKILL)
        measuring.append(slots[begun])
    started_ids = {e["id"] for e in driver.seen if e["event"] == "started"}
    waiting = [s for i, s in slots.items() if i not in started_ids][-2:]
    for slot in waiting:
        farm.stop_agent(slot, signal.SIGTERM, timeout_s=5)
    victims = measuring + waiting
    joiners = [farm.start_agent(s, f"joiner-{s}", platform="rk3588", tags=["lab=2"]) for s in JOIN_SLOTS]
    farm.wait_serving(joiners)
    result = driver.finish(240)
    stopped = {farm.agents[s].agent_id for s in victims}
    boards = {b["agent_id"]: b for b in result["boards"]}
    # every board that stayed up was measured, exactly once, with the runs asked for
    for agent_id in set(expected) - stopped:
        run = boards[agent_id]
        assert run["ok"], run
        assert run["latency_us"]["runs"] == 300 and 0 < run["latency_us"]["min_us"] <= run["latency_us"]["median_us"]
        assert run["address"] == farm.agents[int(agent_id.split("-")[1])].address
    # a stopped board either finished first or is reported, with its job run on another board if one was free
    for agent_id in stopped:
        entries = [b for b in result["boards"] if agent_id in b["attempts"]]
        assert len(entries) == 1, entries
        entry = entries[0]
        assert entry["ok"] or (entry["vanished"] and entry["address"] in entry["error"]), entry
    summary = [(b["agent_id"], b["ok"], b["vanished"], round(b["elapsed_s"], 2), b["error"][:60])
               for b in result["boards"]]  # fmt: skip
    killed = [farm.agents[s].agent_id for s in measuring]
    hit = [x for x in summary if x[0] in killed]
    assert any(b["vanished"] and b["elapsed_s"] > 0.5 for b in result["boards"]), ("none vanished mid-job", hit)
    # the new boards got a turn: the sweep follows boards that join
    measured = [b["agent_id"] for b in result["boards"] if b["ok"]]
    for joiner in joiners:
        assert joiner.agent_id in measured, (joiner.agent_id, summary, result["wall_s"])
    assert len(measured) == len(set(measured)), "a board was measured twice"
    assert result["wall_s"] < 200
    # every board's eval_perf and eval_memory went to the perf history (RKFARM_HISTORY), under its own id
    from rkfarm.farm.history import runs

    recorded = runs(path=str(history))
    pairs = sorted((r.agent_id, r.kind) for r in recorded)
    for agent_id in measured:
        assert pairs.count((agent_id, "perf")) == 1 and pairs.count((agent_id, "memory")) == 1, (agent_id, pairs)
    for agent_id, kind in pairs:  # a board killed between its timing and its memory has its timing kept
        assert agent_id in measured or (agent_id in killed and kind == "perf"), (agent_id, kind)
    for board in result["boards"]:
        if board["ok"]:
            ids = {r.id for r in recorded if r.agent_id == board["agent_id"]}
            assert set(board["history_runs"]) == ids and len(ids) == 2
    perf = {r.agent_id: r for r in recorded if r.kind == "perf"}
    assert perf["board-000"].median_us == pytest.approx(boards["board-000"]["latency_us"]["median_us"])
    page = (farm.work / "sweep.html").read_text()
    assert "<script" not in page and page.count("<title>median") == len(measured)
    for slot in victims:
        restarted = farm.start_agent(slot, farm.agents[slot].agent_id, platform="rk3588" if slot < 12 else "rk3576")
        farm.wait_serving([restarted])


# -- the host side: this file run as a script in a namespace -----------------------------------------------------
_EMIT = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """One JSON line, written whole (jobs on several threads emit at once)."""
    line = json.dumps({"event": event, **fields}, default=str) + "\n"
    with _EMIT:
        sys.stdout.write(line)
        sys.stdout.flush()


def scenario_by_id(args: dict[str, Any]) -> None:
    import onnxruntime as ort

    from rkfarm import RKNN

    x = np.random.default_rng(5).normal(size=(1, 3, 16, 16)).astype(np.float32)
    reference = ort.InferenceSession(args["onnx"], providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    outputs: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}

    def one(agent_id: str) -> None:
        rknn = RKNN(raise_errors=True)
        try:
            rknn.load_rknn(args["package"])
            rknn.init_runtime(target="rk3588" if agent_id < "board-012" else "rk3576", device_id=agent_id)
            result = rknn.inference([x], data_format="nchw")
            assert result is not None
            outputs[agent_id] = result[0]
        except Exception as exc:
            failed[agent_id] = f"{type(exc).__name__}: {exc}"
        finally:
            rknn.release()

    threads = [threading.Thread(target=one, args=(i,)) for i in args["ids"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    diff = max((float(np.abs(out - reference).max()) for out in outputs.values()), default=np.inf)
    emit("result", ran=sorted(outputs), failed=failed, max_abs_diff=diff,
         output_range=float(reference.max() - reference.min()))  # fmt: skip


def scenario_dup(args: dict[str, Any]) -> None:
    from rkfarm.errors import RemoteError
    from rkfarm.farm.pool import DevicePool
    from rkfarm.remote.client import AgentClient
    from rkfarm.remote.discovery import list_devices, resolve

    deadline = time.monotonic() + 20
    listed: list[str] = []
    while time.monotonic() < deadline and len(listed) < 2:
        listed = [d.address for d in list_devices(2.0) if d.agent_id == args["id"]]
        time.sleep(0.2)
    try:
        resolve(args["id"], None)
        refused = "NOT REFUSED"
    except RemoteError as exc:
        refused = str(exc)
    cli = subprocess.run([sys.executable, "-m", "rkfarm.cli", "devices"], capture_output=True, text=True)
    with AgentClient(args["dup_address"], timeout_s=10) as client:
        info = client.info()
    with DevicePool() as pool:
        pool_ids = [d.agent_id for d in pool.boards()]
    emit("result", listed=listed, refused=refused, cli=cli.stdout, dup_status=info.advertise_status,
         dup_serves=info.agent_id == args["id"], pool_ids=pool_ids)  # fmt: skip


def scenario_watch(args: dict[str, Any]) -> None:
    from rkfarm.remote.registry import shared_registry

    registry = shared_registry()
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    registry.subscribe(lambda event, device: events.put((event, device.agent_id)))
    registry.settle(5.0, want=args["id"])
    emit("seen", ids=[d.agent_id for d in registry.devices()])
    wanted = [("left", args["id"]), ("joined", args["joiner"])]
    while wanted:
        event, agent_id = events.get(timeout=60)
        if (event, agent_id) == wanted[0]:
            emit(event, id=agent_id)
            wanted.pop(0)
    emit("result", final=sorted(d.agent_id for d in registry.devices()))


def scenario_hold_exclusive(args: dict[str, Any]) -> None:
    """The public API: init_runtime(exclusive=True), eval_perf under the hold, release()."""
    from rkfarm import RKNN
    from rkfarm.remote.client import AgentClient
    from rkfarm.remote.runtime import client_name

    rknn = RKNN(raise_errors=True)
    rknn.load_rknn(args["package"])
    rknn.init_runtime(target="rk3588", device_id=args["address"], exclusive=True)
    with AgentClient(args["address"]) as client:
        client.use_hold(rknn._runtime.hold_id)  # type: ignore[union-attr]
        hold = client.info().hold
    emit("holding", client=client_name(), yours=hold.yours, expires_unix=hold.expires_unix)
    time.sleep(3.0)  # the other host tries meanwhile
    report = rknn.eval_perf(is_print=False, runs=20)
    rknn.release()  # the session ends, and its hold with it
    assert report is not None
    emit("result", where=report.where, released_unix=time.time())


def scenario_try_run(args: dict[str, Any]) -> None:
    """Run the model on the board, asking again while it is held; report the first refusal and the success."""
    from rkfarm.errors import RemoteError
    from rkfarm.packages import load_package
    from rkfarm.remote.client import AgentClient
    from rkfarm.remote.discovery import probe
    from rkfarm.remote.runtime import RemoteRuntime
    from rkfarm_proto.records import LoadOptions

    package = load_package(Path(args["package"]))
    started = time.monotonic()
    refused = False
    while time.monotonic() - started < args["until_ok_s"]:
        try:
            runtime = RemoteRuntime(package, probe(args["address"], 10), LoadOptions(), timeout_s=5)
            x = np.zeros((1, 96, 96, 3), np.float32)
            runtime.inference([x])
            runtime.close()
            emit("result", ok=True, waited_s=time.monotonic() - started, first_ok_unix=time.time())
            return
        except RemoteError as exc:
            if exc.refused != "held":
                raise
            if not refused:
                with AgentClient(args["address"]) as client:
                    holder = client.info().hold.client
                emit("refused", error=str(exc), info_holder=holder)
                refused = True
            time.sleep(0.1)
    emit("result", ok=False, waited_s=time.monotonic() - started)


def scenario_contended(args: dict[str, Any]) -> None:
    """eval_perf alone, then while another session runs inferences on the same board."""
    from rkfarm.packages import load_package
    from rkfarm.remote.discovery import probe
    from rkfarm.remote.runtime import RemoteRuntime
    from rkfarm_proto.records import LoadOptions, PerfOptions

    package = load_package(Path(args["package"]))
    device = probe(args["address"], 10)
    timed = RemoteRuntime(package, device, LoadOptions())
    alone = timed.eval_perf(PerfOptions(runs=10))
    other = RemoteRuntime(package, device, LoadOptions())
    stop = threading.Event()

    def load() -> None:
        x = np.zeros((1, 96, 96, 3), np.float32)
        while not stop.is_set():
            other.inference([x])

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(0.3)
    try:
        shared = timed.eval_perf(PerfOptions(runs=30))
    finally:
        stop.set()
        worker.join()
        other.close()
        timed.close()
    emit("result", where=shared.where, alone_where=alone.where)


def scenario_hold_and_die(args: dict[str, Any]) -> None:
    from rkfarm.remote.client import AgentClient

    with AgentClient(args["address"]) as client:
        client.hold(args["lease_s"], "about-to-die")
    emit("holding")
    time.sleep(600)  # killed by the test


def scenario_race(args: dict[str, Any]) -> None:
    from rkfarm.farm.pool import DevicePool
    from rkfarm.farm.reservations import ReservationTimeoutError

    with DevicePool(label=f"racer-{os.getpid()}") as pool:
        try:
            boards = pool.acquire(args["selector"], 1, timeout_s=30)
        except ReservationTimeoutError as exc:
            emit("result", got=False, error=str(exc))
            return
        began = time.time()
        time.sleep(args["hold_s"])
        ended = time.time()
        pool.release(boards)
    emit("result", got=True, **{"from": began, "to": ended})


def scenario_reserved(args: dict[str, Any]) -> None:
    from rkfarm.farm.pool import DevicePool
    from rkfarm.farm.selector import Selector
    from rkfarm.remote.client import AgentClient

    class Coordinator:  # a stand-in for labgrid: hands out the first matching ids by tags
        def __init__(self) -> None:
            self.asked: list[dict[str, Any]] = []
            self.released: list[list[str]] = []

        def acquire(self, selector: Selector, count: int, timeout_s: float) -> list[str]:
            self.asked.append({"tags": selector.tags(), "count": count})
            return sorted(matching)[:count]  # the boards whose tags match, as a tag scheduler would pick

        def release(self, agent_ids: Sequence[str]) -> None:
            self.released.append(sorted(agent_ids))

    coordinator = Coordinator()
    with DevicePool(reservations=coordinator, label="reserver") as pool:
        matching = [d.agent_id for d in pool.boards(args["selector"])]
        boards = pool.acquire(args["selector"], args["count"], timeout_s=20)
        holders = []
        for board in boards:
            with AgentClient(board.device.address) as client:
                holders.append(client.info().hold.client)
        pool.release(boards)
        after = []
        for board in boards:
            with AgentClient(board.device.address) as client:
                after.append(client.info().hold.client)
        emit("result", asked=coordinator.asked, held=[b.agent_id for b in boards], holders=holders,
             label=pool.client_name, released=coordinator.released, after=after)  # fmt: skip


def scenario_map_retry(args: dict[str, Any]) -> None:
    import onnxruntime as ort

    from rkfarm.farm.pool import Board, DevicePool
    from rkfarm.packages import load_package

    package = load_package(Path(args["package"]))
    x = np.random.default_rng(9).normal(size=(1, 3, 16, 16)).astype(np.float32)
    reference = ort.InferenceSession(args["onnx"], providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    def job(board: Board) -> dict[str, float]:
        runtime = board.open(package)
        try:
            emit("job-started", id=board.agent_id)
            worst = 0.0
            until = time.monotonic() + 3.0  # long enough for the test to kill the board meanwhile
            while time.monotonic() < until:
                out = runtime.inference([x], "nchw")[0]
                worst = max(worst, float(np.abs(out - reference).max()))
                time.sleep(0.05)
            return {"max_abs_diff": worst, "range": float(reference.max() - reference.min())}
        finally:
            runtime.close()

    with DevicePool(timeout_s=5.0, reconnect_s=3.0) as pool:
        targets = [d for d in pool.wait_for(None, 16, 30) if d.agent_id in args["ids"]]
        results = pool.map(job, targets, retry_elsewhere=True, max_workers=1)
    emit("result", results=[{**r.__dict__, "ok": r.ok} for r in results])


def scenario_sweep(args: dict[str, Any]) -> None:
    from rkfarm.farm.pool import DevicePool
    from rkfarm.farm.sweep import sweep

    with DevicePool(timeout_s=5.0, reconnect_s=3.0) as pool:
        found = pool.wait_for(None, len(args["ids"]), 30)
        emit("discovered", all=[d.agent_id for d in found],
             rk3576=[d.agent_id for d in pool.boards("platform=rk3576")],
             rk3588_camera=[d.agent_id for d in pool.boards("platform=rk3588,tag:camera")],
             lab2_cores=[d.agent_id for d in pool.boards("lab=2,npu_cores>=2,backend=onnxruntime")])  # fmt: skip
        done: list[str] = []

        def progress(finished: int, total: int, run: Any) -> None:
            done.append(run.agent_id)
            emit("progress", done=finished, total=total, done_ids=list(done))

        result = sweep(args["package"], None, pool=pool, runs=args["runs"], max_workers=args["workers"],
                       follow=True, memory=True, progress=progress,
                       started=lambda agent_id: emit("started", id=agent_id))  # fmt: skip
    result.to_html(args["html"])
    emit("result", **result.to_dict())


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(relativeCreated)d %(threadName)s %(name)s: %(message)s")
    logging.getLogger("zeroconf").setLevel(logging.WARNING)
    try:
        globals()[f"scenario_{sys.argv[1]}"](json.loads(sys.argv[2]))
    except Exception as exc:
        emit("error", error=f"{type(exc).__name__}: {exc}")
        raise
