"""Perf history (rkfarm.farm.history, `rkfarm history`, `rkfarm compare`): results recorded by the RKNN API on the
simulator survive a restart, a slower model is flagged as a regression and a model against itself is not, bad
databases and run ids are one clear line, and the schema migrates. No agent is started."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model

from rkfarm import RKNN
from rkfarm.cli import main
from rkfarm.farm import history as hist
from rkfarm.farm.history import History, HistoryError, Where, compare
from rkfarm.perf import PerfData, PerfReport
from rkfarm_proto.records import LayerTiming
from rkfarm_proto.v1 import package_pb2

# The simulator on a shared 2-core machine: a model's median moved by up to 1.9x between two measurements here
# (ONNX Runtime's second thread gets the other core, or not). A 3x threshold (2.0) keeps a model against itself
# quiet; the "regression" model is ~30x slower (16 vs 48 channels, 3 vs 6 convolutions), far beyond it.
NOISE_THRESHOLD = 2.0


def convnet(path: Path, channels: int, depth: int, size: int = 64) -> Path:
    rng = np.random.default_rng(channels * 100 + depth)
    nodes, inits = [], []
    prev, cin = "x", 3
    for i in range(depth):
        weight = (rng.standard_normal((channels, cin, 3, 3)) * 0.1).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        prev, cin = f"r{i}", channels
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["y"], name="gap"))
    graph = helper.make_graph(
        nodes, "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 1, 1])], inits,
    )  # fmt: skip
    onnx.save(make_model(graph, 17), path)
    return path


def build(onnx_path: Path) -> Path:
    out = onnx_path.with_suffix(".rkfm")
    with RKNN(raise_errors=True) as rknn:
        rknn.config(target_platform="rk3588")
        rknn.load_onnx(str(onnx_path))
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(out))
    return out


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("history-models")
    return {
        "small": build(convnet(root / "small.onnx", 16, 3)),
        "big": build(convnet(root / "big.onnx", 48, 6)),
    }


@pytest.fixture(autouse=True)
def _cli_logging_undone() -> Iterator[None]:
    """main() attaches a stderr handler to the rkfarm logger (stderr is pytest's capture then): take it off again."""
    logger = logging.getLogger("rkfarm")
    propagate = logger.propagate
    yield
    for handler in [h for h in logger.handlers if getattr(h, "_rkfarm_cli", False)]:
        logger.removeHandler(handler)
    logger.propagate = propagate


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def header(name: str = "net.onnx", sha: str = "ab" * 32) -> package_pb2.PackageHeader:
    return package_pb2.PackageHeader(
        source_model_name=name, payload_sha256=sha, source_model_sha256="cd" * 32, target_platform="rk3588"
    )


def report(times_us: list[float], layers: dict[str, float] | None = None) -> PerfReport:
    rows = [
        LayerTiming(i, "Conv", "float16", "NPU", "1x3", "1x8", t, name)
        for i, (name, t) in enumerate((layers or {}).items())
    ]
    return PerfReport(PerfData(run_times_us=times_us, layers=rows, where="test"))


# -- the must-shows ------------------------------------------------------------------------------------------
WRITER = """
import json, sys
from rkfarm import RKNN
with RKNN(raise_errors=True) as rknn:
    rknn.load_rknn(sys.argv[1])
    rknn.init_runtime(perf_debug=True)
    perf = rknn.eval_perf(is_print=False, runs=20)
    memory = rknn.eval_memory(is_print=False)
print(json.dumps({"median": perf.stats.median_us, "p90": perf.stats.p90_us, "runs": perf.run_times_us,
                  "layers": [l.name for l in perf.layers], "memory": memory["total_memory"]}))
"""


@pytest.mark.slow
def test_results_survive_a_restart(packages: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    env = {**os.environ, "RKFARM_HISTORY": str(db), "RKFARM_HISTORY_LABEL": "ci-job-7"}
    wrote = subprocess.run(
        [sys.executable, "-c", WRITER, str(packages["small"])], capture_output=True, text=True, env=env, timeout=120
    )
    assert wrote.returncode == 0, wrote.stderr
    measured = json.loads(wrote.stdout.strip().splitlines()[-1])
    assert db.is_file()

    env.pop("RKFARM_HISTORY")  # the reader names the database on the command line
    read = subprocess.run(
        [sys.executable, "-m", "rkfarm.cli", "history", str(packages["small"]), "--db", str(db), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr
    runs = {r["kind"]: r for r in json.loads(read.stdout)}
    assert set(runs) == {"perf", "memory"}
    perf, memory = runs["perf"], runs["memory"]
    from rkfarm.packages import load_package

    sha = load_package(packages["small"]).header.payload_sha256
    assert perf["model_sha256"] == memory["model_sha256"] == sha
    assert perf["model_name"] == "small.onnx" and perf["agent_id"] == "simulator" and perf["platform"] == "rk3588"
    assert perf["median_us"] == measured["median"] and perf["p90_us"] == measured["p90"]
    assert perf["stats"]["run_times_us"] == measured["runs"] and perf["stats"]["runs"] == 20
    assert [layer["name"] for layer in perf["layers"]] == measured["layers"] and measured["layers"]
    assert perf["options"] == {"runs": 20, "warmup": 5, "perf_debug": True}
    assert perf["header"]["target_platform"] == "rk3588" and perf["header"]["inputs"][0]["shape"] == [1, 3, 64, 64]
    assert "simulator" in perf["versions"] and perf["label"] == "ci-job-7"
    assert memory["total_memory"] == measured["memory"] > 0

    listed = subprocess.run(
        [sys.executable, "-m", "rkfarm.cli", "history", "--db", str(db)], capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0
    lines = listed.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["ID", "TIME", "(UTC)"] and "MEDIAN" in lines[0] and "MEMORY" in lines[0]
    assert len(lines) == 3 and f"{measured['median'] / 1000:.3f}" in listed.stdout


@pytest.mark.slow
def test_a_slower_model_is_a_regression_and_a_model_against_itself_is_not(
    packages: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "history.db"
    monkeypatch.setenv("RKFARM_HISTORY", str(db))
    for name in ("small", "big", "small"):
        with RKNN(raise_errors=True) as rknn:
            rknn.load_rknn(str(packages[name]))
            rknn.init_runtime()
            rknn.eval_perf(is_print=False, runs=50)
    small_new, big, small_old = History(db).runs(kind="perf")
    assert small_old.model_sha256 == small_new.model_sha256 != big.model_sha256
    assert big.median_us is not None and small_old.median_us is not None
    assert big.median_us > (1 + NOISE_THRESHOLD) * 2 * small_old.median_us  # the margin the test relies on

    threshold = str(NOISE_THRESHOLD)
    rc, out, _ = cli(capsys, "compare", str(small_old.id), str(big.id), "--db", str(db), "--threshold", threshold)
    assert rc == 1 and "REGRESSION: median latency" in out
    rc, out, _ = cli(capsys, "compare", str(small_old.id), str(small_new.id), "--db", str(db), "--threshold", threshold)
    assert rc == 0 and out.strip().splitlines()[-1].startswith("ok: median latency")
    # two models, by package file: the latest run of each on the board of A's latest run (the simulator)
    rc, out, _ = cli(capsys, "compare", str(packages["small"]), str(packages["big"]), "--db", str(db), "--json")
    result = json.loads(out)
    assert rc == 1 and result["regressed"] and result["a"]["id"] == small_new.id and result["b"]["id"] == big.id
    assert small_new.median_us is not None
    assert result["primary"]["ratio"] == pytest.approx(big.median_us / small_new.median_us - 1)
    # the other way round is an improvement, not a regression
    rc, out, _ = cli(capsys, "compare", str(big.id), str(small_new.id), "--db", str(db))
    assert rc == 0 and "(faster)" in out


def test_bad_databases_and_run_ids_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.db"
    History(good).record(report([100.0, 110.0, 120.0]), header(), Where("board-1", "rk3588"))
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database\n" * 200)
    damaged = tmp_path / "damaged.db"
    shutil.copy(good, damaged)
    data = bytearray(damaged.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # keep SQLite's magic, wreck every page
    damaged.write_bytes(bytes(data))
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    newer = tmp_path / "newer.db"
    shutil.copy(good, newer)
    with sqlite3.connect(newer) as conn:
        conn.execute("INSERT INTO rkfarm_schema VALUES (99, 'from the future', '2099-01-01')")

    cases = [
        (["history", "--db", str(garbage)], "not a history database"),
        (["history", "--db", str(damaged)], "damaged.db:"),
        (["compare", "1", "2", "--db", str(garbage)], "not a history database"),
        (["history", "--db", str(foreign)], "not an rkfarm history database: it has other tables (invoices)"),
        (["history", "--db", str(newer)], "newer rkfarm (schema version 99"),
        (["history", "--db", str(tmp_path)], "is a directory"),
        (["compare", "1", "42", "--db", str(good)], f"no run 42 in {good}"),
        (["compare", "1", "board-9", "--db", str(good)], "give two run ids, two boards or two models"),
        (["compare", "nosuchmodel", "net.onnx", "--db", str(good)], "no perf run of model 'nosuchmodel'"),
        (["compare", "1", "1", "--db", str(good), "--threshold", "-1"], "threshold must be >= 0"),
    ]
    for args, expected in cases:
        rc, out, err = cli(capsys, *args)
        assert rc != 0, args
        assert out == "" and err.count("\n") == 1 and err.startswith("rkfarm: error: "), (args, err)
        assert expected in err, (args, err)
    assert newer.read_bytes()[:16] == b"SQLite format 3\x00"  # refused, never rewritten
    with pytest.raises(HistoryError, match="not a run id"):
        History(good).run("latest")


def test_an_unusable_database_never_fails_eval_perf(
    packages: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00garbage" * 500)
    readonly = tmp_path / "ro"
    readonly.mkdir()
    for target in (str(garbage), str(readonly / "sub" / "history.db"), "postgresql://nobody@127.0.0.1:1/none"):
        monkeypatch.setenv("RKFARM_HISTORY", target)
        if target.startswith(str(readonly)):
            readonly.chmod(0o500)
            if os.access(readonly, os.W_OK):  # root writes anyway: make the parent a file instead
                readonly.chmod(0o700)
                monkeypatch.setenv("RKFARM_HISTORY", str(garbage / "history.db"))
        caplog.clear()
        with RKNN(raise_errors=True) as rknn, caplog.at_level("WARNING", logger="rkfarm"):
            rknn.load_rknn(str(packages["small"]))
            rknn.init_runtime()
            result = rknn.eval_perf(is_print=False, runs=3)
            memory = rknn.eval_memory(is_print=False)
        assert isinstance(result, PerfReport) and result.stats.runs == 3 and memory is not None
        warnings = [r.getMessage() for r in caplog.records if "perf history: result not recorded" in r.getMessage()]
        assert len(warnings) == 2, (target, [r.getMessage() for r in caplog.records])
    readonly.chmod(0o700)


def test_recording_is_opt_in(packages: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    default = tmp_path / "data" / "rkfarm" / "history.db"
    assert hist.default_path() == default
    for value in (None, "", "0", "off"):
        if value is None:
            monkeypatch.delenv("RKFARM_HISTORY", raising=False)
        else:
            monkeypatch.setenv("RKFARM_HISTORY", value)
        assert hist.recording_database() is None
        with RKNN(raise_errors=True) as rknn:
            rknn.load_rknn(str(packages["small"]))
            rknn.init_runtime()
            rknn.eval_perf(is_print=False, runs=2)
        assert not default.exists()
    monkeypatch.setenv("RKFARM_HISTORY", "1")
    assert hist.recording_database() == str(default) == hist.database()
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(packages["small"]))
        rknn.init_runtime()
        rknn.eval_perf(is_print=False, runs=2)
    assert [r.kind for r in History().runs()] == ["perf"]


# -- the database and the comparison ------------------------------------------------------------------------
def test_schema_migrates_from_version_1(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    conn = hist._Conn(sqlite3.connect(db, isolation_level=None), "sqlite")
    assert hist._migrate(conn, write=True, upto=1)
    columns = [c for c in hist._COLUMNS if c != "label"]
    conn.execute(
        f"INSERT INTO rkfarm_runs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        ["2026-01-01T00:00:00Z", "memory", "ab" * 32, "", "old.onnx", "board-1", "rk3588", "h", "", "", "0.0.1",
         None, None, None, 1234, "{}", "{}", None, '{"total_memory": 1234}', "[]"],
    )  # fmt: skip
    assert hist._version(conn) == 1
    conn.close()
    history = History(db)
    (old,) = history.runs()
    assert history.schema_version() == hist.SCHEMA_VERSION == 2
    assert old.label == "" and old.total_memory == 1234 and old.memory == {"total_memory": 1234}
    new_id = history.record(
        {"total_memory": 99, "weight_memory": 9, "where": "x"}, header(), Where("b", "p"), label="r2"
    )
    assert [r.id for r in history.runs(agent="b")] == [new_id] and history.run(new_id).label == "r2"


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(5):
                History(db).record(report([100.0 + worker, 101.0 + i]), header(), Where(f"board-{worker}", "rk3588"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    runs = History(db).runs()
    assert len(runs) == 40 and len({r.id for r in runs}) == 40
    assert sorted(History(db).agents()) == [f"board-{w}" for w in range(8)]
    assert len(History(db).runs(agent="board-3")) == 5 and len(History(db).runs(model_sha="abab", limit=3)) == 3


def test_compare_figures(tmp_path: Path) -> None:
    history = History(tmp_path / "h.db")
    layers_a = {"conv1": 600.0, "conv2": 300.0, "tiny": 5.0}
    layers_b = {"conv1": 610.0, "conv2": 450.0, "tiny": 50.0}
    a = history.run(history.record(report([1000.0] * 9 + [1500.0], layers_a), header(), Where("board-1", "rk3588")))
    b = history.run(history.record(report([1050.0] * 9 + [2000.0], layers_b), header(), Where("board-2", "rk3588")))
    result = compare(a, b, threshold=0.10)
    assert result.primary.metric == "median_us" and result.primary.ratio == pytest.approx(0.05)
    assert not result.regressed
    assert result.p90 is not None and result.p90.a == pytest.approx(1050.0) and result.p90.b == pytest.approx(1145.0)
    # "tiny" is under 1 % of A's layer time: timer noise, not compared; conv2 is +50 %
    assert {c.metric: round(c.ratio, 4) for c in result.layers} == {"layer conv1": 0.0167, "layer conv2": 0.5}
    assert [c.metric for c in result.regressions] == ["layer conv2"] and result.strict_regressed
    assert compare(a, b, 0.04).regressed
    assert compare(a.id, b.id, 0.04, path=history.target).primary == compare(a, b).primary  # by run id
    instant = history.run(history.record(report([0.0, 0.0]), header(), Where("board-1", "rk3588")))
    assert instant.median_us == 0.0 and instant.fps is None and instant.stats is not None  # no infinity in JSON
    mem_a = history.run(history.record({"total_memory": 1000, "where": "x"}, header(), Where("board-1", "rk3588")))
    mem_b = history.run(history.record({"total_memory": 1200, "where": "x"}, header(), Where("board-1", "rk3588")))
    assert compare(mem_a, mem_b, 0.1).regressed and not compare(mem_a, mem_b, 0.25).regressed
    with pytest.raises(HistoryError, match="nothing to compare"):
        compare(a, mem_a)
    assert "REGRESSION: total memory +20.0%" in compare(mem_a, mem_b, 0.1).format()
    # two boards, latest runs of the newest common model
    args = ["compare", "board-1", "board-2", "--db", str(history.target), "--threshold", "0.01"]
    assert main(args) == 1


# -- PostgreSQL ------------------------------------------------------------------------------------------------
def _postgres_bin() -> Path | None:
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / "initdb").exists() and (root / "postgres").exists():
            return root
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install 'rkfarm[postgres]')")
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres) on this machine")
    if os.geteuid() != 0:
        pytest.skip("starting a throwaway PostgreSQL server needs root (to run it as the postgres user)")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user to run a throwaway PostgreSQL server as")
    root = Path(tempfile.mkdtemp(prefix="rkfarm-pg-"))
    shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    as_pg: dict[str, Any] = {"user": "postgres", "group": "postgres", "extra_groups": [], "cwd": root}
    subprocess.run([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True, timeout=120, **as_pg)  # fmt: skip
    # Unix socket only, in our own folder: no TCP port to collide with anything else on the machine
    server = subprocess.Popen(
        [str(bindir / "postgres"), "-D", str(data), "-k", str(root), "-c", "listen_addresses=", "-p", "5544"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **as_pg,
    )  # fmt: skip
    url = f"postgresql://postgres@/postgres?host={root}&port=5544"
    try:
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        server.send_signal(signal.SIGINT)  # the server's fast shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_postgresql_history(postgres_url: str, packages: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    history = History(postgres_url)
    assert "host=" in history.name
    first = history.record(report([200.0, 210.0, 220.0], {"conv1": 150.0}), header(), Where("board-1", "rk3588"))
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(packages["small"]))
        rknn.init_runtime(perf_debug=True)
        perf = rknn.eval_perf(is_print=False, runs=10)
        memory = rknn.eval_memory(is_print=False)
        assert memory is not None and isinstance(perf, PerfReport)
        from rkfarm.packages import load_package

        pkg_header = load_package(packages["small"]).header
        second = history.record(perf, pkg_header, Where("simulator", "rk3588"), options={"runs": 10})
        third = history.record(memory, pkg_header, Where("simulator", "rk3588"))
    assert history.schema_version() == hist.SCHEMA_VERSION
    runs = {r.id: r for r in History(postgres_url).runs()}  # a new connection reads what the others wrote
    assert sorted(runs) == [first, second, third]
    got = runs[second]
    assert got.median_us == perf.stats.median_us and got.stats is not None
    assert got.stats["run_times_us"] == perf.run_times_us and [x["name"] for x in got.layers] == [
        layer.name for layer in perf.layers
    ]
    assert runs[third].total_memory == memory["total_memory"] and got.options == {"runs": 10}
    assert runs[first].layers == [asdict_layer(0, "conv1", 150.0)]
    rc, out, _ = cli(capsys, "history", pkg_header.payload_sha256[:12], "--db", postgres_url, "--json")
    assert rc == 0 and sorted(r["id"] for r in json.loads(out)) == [second, third]
    rc, out, err = cli(capsys, "compare", str(first), "777", "--db", postgres_url)
    assert rc == 1 and out == "" and "no run 777 in postgresql://postgres@/postgres" in err


def asdict_layer(index: int, name: str, time_us: float) -> dict[str, Any]:
    return {"index": index, "op_type": "Conv", "data_type": "float16", "target": "NPU", "input_shapes": "1x3",
            "output_shapes": "1x8", "time_us": time_us, "name": name}  # fmt: skip


def test_where_reads_a_board_runtime(tmp_path: Path) -> None:
    """What a remote runtime tells (agent, platform, versions from Info with a short deadline, the core mask); an
    agent gone before its versions are asked still gets its result recorded. A stand-in runtime: no agent."""
    from rkfarm.errors import AgentUnavailableError
    from rkfarm_proto.records import LoadOptions

    class Info:
        agent_version = "0.1.0"
        versions: ClassVar[dict[str, str]] = {"driver.rknpu": "0.9.8", "backend.rknnrt": "2.3.2"}

    class Client:
        def __init__(self, gone: bool) -> None:
            self.gone, self.until = gone, 0.0

        def info(self, until: float) -> Info:
            self.until = until
            if self.gone:
                raise AgentUnavailableError("board-7 did not answer")
            return Info()

    class Device:
        agent_id, platform, version = "board-7", "rk3588", "0.1.0"

    class Remote:
        where = "agent board-7 @ 10.0.0.7:50551 (rk3588)"
        device = Device()
        _options = LoadOptions(core_mask=3)

        def __init__(self, client: Client) -> None:
            self.client = client

    client = Client(gone=False)
    asked = time.monotonic()
    where = Where.of(Remote(client))
    assert where == Where(
        "board-7", "rk3588", Remote.where, "rkfarm-agent 0.1.0; backend.rknnrt=2.3.2; driver.rknpu=0.9.8", 3
    )
    assert asked < client.until <= asked + hist.VERSIONS_TIMEOUT_S + 0.5
    gone = Where.of(Remote(Client(gone=True)))
    assert gone.versions == "rkfarm-agent 0.1.0" and gone.agent_id == "board-7"
    history = History(tmp_path / "h.db")
    run = history.run(history.record(report([500.0, 520.0]), header(), Remote(Client(gone=True)), options={"runs": 2}))
    assert run.options == {"runs": 2, "core_mask": 3} and run.board == "board-7" and run.location == Remote.where
