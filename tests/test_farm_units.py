"""The farm's parts on their own (no agent, no network): the selector grammar, the TXT contract, the agent's
exclusive hold, the registry's bookkeeping and the sweep reports."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rkfarm.farm.report import format_table, render_html, slowest_layers, to_csv
from rkfarm.farm.reservations import Reservations, reservations_from_env
from rkfarm.farm.results import BoardRun
from rkfarm.farm.selector import Selector, SelectorError, device_tags, parse_size, version_key
from rkfarm.farm.sweep import Sweep
from rkfarm.remote.discovery import Device, format_devices
from rkfarm.remote.registry import Registry, _Entry
from rkfarm_agent.cli import build_parser
from rkfarm_agent.holds import HeldError, HoldManager, UnknownHoldError
from rkfarm_proto.discovery import TXT_TAGS_MAX, AgentAdvert, format_tags, parse_tags


def board(agent_id: str = "board-001", **fields: object) -> Device:
    base: dict[str, object] = {
        "agent_id": agent_id, "address": "10.0.0.2:50551", "platform": "rk3588", "npu_cores": 3, "version": "0.1.0",
        "backends": ("onnxruntime",), "auth": "none", "source": "mdns", "tags": {"lab": "2", "camera": ""},
        "mem_free_bytes": 1 << 30, "load": 0.3, "sessions": 1,
    }  # fmt: skip
    base.update(fields)
    return Device(**base)  # type: ignore[arg-type]


# -- selectors ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("platform=rk3588,tag:camera,lab=2,npu_cores>=2,backend=onnxruntime,free_mem>=512M,version>=0.1", True),
        ("platform=rk3576", False),
        ("platform=rk3566|rk3588", True),
        ("platform!=rk3588", False),
        ("id=board-0*", True),
        ("id=board-1*", False),
        ("tag:camera", True),
        ("!tag:camera", False),
        ("tag:lab=2", True),
        ("tag:lab=3", False),
        ("lab=2", True),
        ("lab!=3", True),
        ("lab>=3", False),
        ("lab<3", True),
        ("site=berlin", False),  # a tag the board does not have
        ("site!=berlin", True),
        ("npu_cores=3", True),
        ("npu_cores>3", False),
        ("free_mem>=1G", True),
        ("free_mem>1G", False),
        ("load<0.5", True),
        ("load>=0.5", False),
        ("sessions=1", True),
        ("version=0.1", True),  # 0.1 == 0.1.0
        ("version>0.1", False),
        ("version<0.10", True),  # compared part by part, not as decimals
        ("backend=rknnrt", False),
        ("backend!=rknnrt", True),
        ("holder=", True),
        ("holder!=", False),
        (" platform = rk3588 , tag:camera ", True),
    ],
)
def test_selector_matches(text: str, expected: bool) -> None:
    assert Selector.parse(text).matches(board()) is expected
    assert Selector.parse(text).matches(board().to_dict()) is expected  # a plain mapping works too


def test_selector_on_what_a_board_does_not_report() -> None:
    old = board(mem_free_bytes=None, load=None, sessions=None, tags={})
    assert not Selector.parse("free_mem>=1").matches(old)
    assert not Selector.parse("load<100").matches(old)
    assert not Selector.parse("tag:camera").matches(old)
    assert Selector.parse("platform=rk3588").matches(old)
    held = board(holder="ci@runner-3")
    assert Selector.parse("holder!=").matches(held) and not Selector.parse("holder=").matches(held)
    assert Selector.parse("holder=ci@*").matches(held)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("npu_cores>=two", ["npu_cores>=two", "'two' is not a whole number"]),
        ("platform>rk3588", ["platform>rk3588", "= or != only"]),
        ("platform=rk3588,,tag:x", ["empty term"]),
        ("free_mem>=lots", ["free_mem>=lots", "512M"]),
        ("!platform=x", ["!platform=x"]),
        ("tag:", ["tag:"]),
        ("camera", ["'camera'", "KEY=VALUE"]),
        ("version>=abc", ["version>=abc", "version"]),
        ("lab>x", ["lab>x", "a number"]),
        ("platform=", ["platform=", "no value"]),
        ("npu_cores>=1|2", ["'|'"]),
        ("holder>=x", ["holder>=x", "= or != only"]),
    ],
)
def test_selector_errors_name_the_bad_term(text: str, names: list[str]) -> None:
    with pytest.raises(SelectorError) as caught:
        Selector.parse(text)
    message = str(caught.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message


def test_selector_tags_agree_with_the_tags_a_board_is_exported_with() -> None:
    """What a tag scheduler (labgrid) filters by is always a subset of the matching boards' tags."""
    selector = Selector.parse("platform=rk3588,tag:camera,lab=2,npu_cores=3,backend=onnxruntime,id=board-001")
    assert selector.tags() == {
        "platform": "rk3588", "tag_camera": "1", "tag_lab": "2", "npu_cores": "3", "backend_onnxruntime": "1",
        "agent_id": "board_001",
    }  # fmt: skip
    assert selector.matches(board())
    assert selector.tags().items() <= device_tags(board()).items()
    for key, value in device_tags(board()).items():
        assert re.fullmatch(r"[a-z][a-z0-9_]+", key) and re.fullmatch(r"[a-z0-9_]*", value), (key, value)
    # ranges, globs, alternatives and negations are checked by matches(), not expressed as tags
    assert Selector.parse("free_mem>=1G,id=board-*,platform=rk3588|rk3576,!tag:x,lab!=3").tags() == {}


def test_sizes_and_versions() -> None:
    assert parse_size("512M") == 512 << 20 and parse_size("2G") == 2 << 30 and parse_size("1.5k") == 1536
    assert version_key("0.1.0") == version_key("0.1") < version_key("0.10") < version_key("1.0rc1")
    with pytest.raises(ValueError):
        parse_size("lots")


def test_reservations_interface() -> None:
    class Fake:
        def acquire(self, selector: Selector, count: int, timeout_s: float) -> list[str]:
            return ["a"] * count

        def release(self, agent_ids: list[str]) -> None:
            return None

    assert isinstance(Fake(), Reservations)
    assert reservations_from_env() is None  # RKFARM_LABGRID unset


# -- the TXT record -----------------------------------------------------------------------------------------------
def test_advert_carries_what_a_pool_needs() -> None:
    advert = AgentAdvert(
        "board-1", "rk3588", 3, "0.1.0", ("onnxruntime",), "none", tags={"lab": "2", "camera": ""},
        mem_free_bytes=3 << 30, load=0.25, sessions=2, holder="alice@laptop", held_until=1_900_000_000.0,
        npu_ready=False,
    )  # fmt: skip
    txt = {k.encode(): v.encode() for k, v in advert.to_txt().items()}
    back = AgentAdvert.from_txt(txt)
    assert back == advert and txt[b"npu"] == b"missing"
    assert "npu" not in AgentAdvert("b", "rk3588", 3, "0.1", (), "none").to_txt()  # not said: an older agent
    assert AgentAdvert.from_txt({b"npu": b"ready"}).npu_ready is True
    assert AgentAdvert.from_txt({b"npu": b"maybe"}).npu_ready is None
    assert txt[b"tags"] == b"camera,lab=2" and txt[b"mem_free"] == b"3072"


def test_many_tags_stay_within_one_txt_string() -> None:
    tags = {f"tag{i:02d}": "x" * 20 for i in range(32)}
    text, more = format_tags(tags)
    assert more and len(text.encode()) <= TXT_TAGS_MAX
    kept = parse_tags(text)
    assert kept and all(tags[k] == v for k, v in kept.items())  # whole tags only, never a cut one
    txt = AgentAdvert("b", "rk3588", 3, "0.1", (), "none", tags=tags).to_txt()
    assert txt["tags_more"] == "1"
    assert all(len(f"{k}={v}".encode()) <= 255 for k, v in txt.items())  # each a DNS character-string


def test_agent_tag_options() -> None:
    args = build_parser().parse_args(["serve", "--tag", "lab=2", "--tag", "camera", "--tag", "site=ber-1"])
    assert args.tag == [("lab", "2"), ("camera", ""), ("site", "ber-1")]
    for bad in ("la b=1", "x=a,b", "=1", "k=" + "v" * 65):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "--tag", bad])


# -- the agent's exclusive hold -----------------------------------------------------------------------------------
def test_hold_refuses_others_and_names_holder_and_expiry() -> None:
    holds = HoldManager(max_lease_s=60.0)
    assert holds.admit(None) is None  # nothing held: everyone runs
    hold, drained = holds.take("alice@laptop", 30.0)
    assert drained == 0 and holds.admit(hold.id) is hold
    with pytest.raises(HeldError) as refused:
        holds.admit(None)
    message = str(refused.value)
    assert "alice@laptop" in message and "until" in message and "s left" in message
    assert refused.value.kind == "held"
    with pytest.raises(HeldError):
        holds.admit("not-the-id")
    with pytest.raises(HeldError):
        holds.take("bob@desk", 30.0)  # a second holder waits for none by default
    assert holds.release(hold.id) and not holds.release(hold.id)
    assert holds.admit(None) is None


def test_hold_lapses_unless_renewed() -> None:
    holds = HoldManager(max_lease_s=60.0)
    hold, _ = holds.take("alice", 0.3)
    time.sleep(0.2)
    holds.admit(hold.id)  # a call carrying the id renews it
    time.sleep(0.2)
    assert holds.current() is hold
    time.sleep(0.35)
    assert holds.current() is None and holds.admit(None) is None
    with pytest.raises(UnknownHoldError):
        holds.renew(hold.id)


def test_a_second_holder_waits_for_the_first() -> None:
    holds = HoldManager(max_lease_s=60.0)
    first, _ = holds.take("alice", 30.0)
    threading.Timer(0.3, holds.release, args=[first.id]).start()
    started = time.monotonic()
    second, _ = holds.take("bob", 30.0, wait_s=5.0)
    assert 0.2 < time.monotonic() - started < 3.0 and second.client == "bob"


def test_session_hold_lives_with_its_session() -> None:
    holds = HoldManager(max_lease_s=60.0, default_lease_s=0.1)
    hold, _ = holds.take("alice", 0.0, session_id="s1")
    time.sleep(0.2)
    assert holds.current() is hold  # no lease: it follows the session
    assert holds.admit(None, session_hold=hold.id) is hold  # a call on the session goes through
    holds.session_closed("other")
    assert holds.current() is hold
    holds.session_closed("s1")
    assert holds.current() is None


def test_granting_a_hold_waits_for_running_calls_of_others() -> None:
    busy = {"n": 2}
    holds = HoldManager(max_lease_s=60.0, others_busy=lambda hold: busy["n"])

    def finish() -> None:
        busy["n"] = 0

    threading.Timer(0.3, finish).start()
    started = time.monotonic()
    _, drained = holds.take("alice", 10.0)
    assert drained == 2 and time.monotonic() - started >= 0.25


# -- the registry's bookkeeping -----------------------------------------------------------------------------------
def test_registry_marks_ids_that_several_agents_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RKFARM_REGISTRY_CACHE", str(tmp_path))
    registry = Registry(("10.0.0.1",))  # not started: its entries are filled in by hand
    now = time.monotonic()
    first = board("board-7", address="10.0.0.7:50551", instance="board-7")
    second = board("board-7", address="10.0.0.9:50551", instance="board-7-dup-ab12", dup=True)
    other = board("board-8", address="10.0.0.8:50551", instance="board-8")
    for device in (first, second, other):
        registry._entries[device.instance] = _Entry(device.instance, now, now, device)
    listed = registry.devices()
    assert [(d.agent_id, d.address, d.conflict) for d in listed] == [
        ("board-7", "10.0.0.7:50551", ("10.0.0.9:50551",)),
        ("board-7", "10.0.0.9:50551", ("10.0.0.7:50551",)),
        ("board-8", "10.0.0.8:50551", ()),
    ]
    table = format_devices(listed)
    assert "CONFLICT: 2 agents claim the id 'board-7'" in table and "board-7-dup-ab12" in table
    events: list[tuple[str, str]] = []
    registry.subscribe(lambda event, device: events.append((event, device.agent_id)))
    registry._drop("board-8", "no answer for 6 s")
    assert events == [("left", "board-8")] and [d.agent_id for d in registry.devices()] == ["board-7", "board-7"]
    registry._write_cache()
    cached = json.loads(next(tmp_path.glob("registry-*.json")).read_text())
    assert cached["names"] == ["board-7", "board-7-dup-ab12"]
    assert Registry(("10.0.0.1",))._expected == {"board-7", "board-7-dup-ab12"}  # the next process expects them


# -- sweep reports ------------------------------------------------------------------------------------------------
def synthetic_sweep() -> Sweep:
    rng = np.random.default_rng(3)
    result = Sweep("cls.rkfm", "ab" * 32, ["platform=rk3588"], 40, 5, True, 0, 1_700_000_000.0, wall_s=2.5)
    for i, base in enumerate((1000.0, 1500.0, 1200.0)):
        times = list(base + rng.normal(0, 30, 40))
        a = np.asarray(times)
        latency = {"median_us": float(np.median(a)), "p90_us": float(np.percentile(a, 90)), "min_us": float(a.min()),
                   "max_us": float(a.max()), "runs": 40}  # fmt: skip
        result.boards.append(BoardRun(
            f"board-{i}", f"10.0.0.{i + 2}:50551", "rk3588", "0.1.0", {"lab": str(i)}, ok=True,
            attempts=[f"board-{i}"], latency_us=latency,
            fps=1e6 / float(np.median(a)), run_times_us=times,
            layers=[{"name": "conv1", "op_type": "Conv", "index": 0, "time_us": base * 0.6},
                    {"name": "relu", "op_type": "Relu", "index": 1, "time_us": base * 0.1 + i}],
            memory={"total_memory": (5 + i) << 20}, open_s=0.2,
        ))  # fmt: skip
    result.boards.append(BoardRun("board-9", "10.0.0.11:50551", "rk3588", ok=False, vanished=True,
                                  error="agent at 10.0.0.11:50551: UNAVAILABLE: connection refused",
                                  attempts=["board-9"]))  # fmt: skip
    return result


def test_table_csv_json_agree_with_the_measurements() -> None:
    result = synthetic_sweep()
    table = format_table(result)
    lines = table.splitlines()
    assert lines[1].startswith("board-0") and lines[2].startswith("board-2") and lines[3].startswith("board-1")
    assert "vanished: agent at 10.0.0.11:50551" in table and "3 of 4 board(s) measured (1 failed)" in table
    median0 = float(np.median(result.boards[0].run_times_us)) / 1000
    assert f"{median0:.3f}" in lines[1]
    rows = list(csv.DictReader(io.StringIO(to_csv(result))))
    assert [r["agent_id"] for r in rows] == ["board-0", "board-1", "board-2", "board-9"]
    assert float(rows[1]["median_us"]) == pytest.approx(float(np.median(result.boards[1].run_times_us)))
    assert rows[3]["ok"] == "0" and rows[3]["vanished"] == "1"
    data = json.loads(result.to_json())
    assert data["succeeded"] == 3 and data["failed"] == 1 and len(data["boards"][0]["run_times_us"]) == 40
    order, per_layer = slowest_layers(result)
    assert order[0] == "conv1" and per_layer["conv1"]["board-1"] == pytest.approx(900.0)


def test_html_report_is_self_contained(tmp_path: Path) -> None:
    result = synthetic_sweep()
    page = render_html(result)
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page
    assert page.count("<title>median") == 3  # one median marker per measured board
    assert page.count("<circle") == 3 * 40  # every run of every board
    assert "conv1" in page and "1.50×" in page  # the slowest board's conv1 is 1.5x the fastest's
    assert "board-9" in page and "connection refused" in page
    written = result.to_html(tmp_path / "sweep.html")
    assert written.read_text() == page


def test_a_silent_agent_is_dropped_only_when_its_port_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent too busy to answer mDNS in time stays; one whose port refuses connections (it crashed) leaves."""
    import socket

    monkeypatch.setenv("RKFARM_REGISTRY_CACHE", "off")
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    registry = Registry(("127.0.0.1",), stale_s=1.0)
    long_ago = time.monotonic() - 10
    busy = board("busy", address=f"127.0.0.1:{listening.getsockname()[1]}", instance="busy")
    dead = board("dead", address=f"127.0.0.1:{closed_port}", instance="dead")
    for device in (busy, dead):
        registry._entries[device.instance] = _Entry(device.instance, long_ago, long_ago, device)
    left: list[str] = []
    registry.subscribe(lambda event, device: left.append(device.agent_id) if event == "left" else None)
    try:
        for entry in list(registry._entries.values()):
            registry._check(entry)
    finally:
        listening.close()
    assert left == ["dead"] and [d.agent_id for d in registry.devices()] == ["busy"]
    assert time.monotonic() - registry._entries["busy"].last_seen < 1.0  # asked about again soon
