"""Perf history: every eval_perf / eval_memory result kept in a database, listed and compared across time,
boards and models (``rkfarm history``, ``rkfarm compare``).

Where the results go: an SQLite file by default, ``$XDG_DATA_HOME/rkfarm/history.db`` (that is
``~/.local/share/rkfarm/history.db``), through the standard library's ``sqlite3``: no extra is needed.
``RKFARM_HISTORY=PATH`` (or ``History(path=...)``, ``--db`` on the command line) names another file, and a
``postgresql://`` URL a PostgreSQL database shared by a lab (``pip install 'rkfarm[postgres]'``).

PostgreSQL goes through psycopg 3, not SQLAlchemy. The schema is two tables and a handful of statements, and
SQLite must work with the standard library alone, so SQL written once for DB-API 2.0 (sqlite3 and psycopg both
implement it; only the parameter marker differs) serves both. SQLAlchemy Core would be a second abstraction used
for PostgreSQL only — two code paths to keep equal instead of one — and a large dependency for five queries;
psycopg 3 is PostgreSQL's maintained driver, ships binary wheels (``psycopg[binary]``) and maps JSONB to Python.

Recording from the ``RKNN`` API is opt-in: ``RKFARM_HISTORY=1`` (the default file) or ``RKFARM_HISTORY=PATH|URL``
turns it on; unset, empty or ``0`` leaves it off. ``RKNN`` is a drop-in for the vendor's API, whose eval_perf has
no side effects: scripts call it in loops and in unit tests, home directories may be read-only (containers, CI
sandboxes) or shared over NFS, and an always-on database would fill with simulator runs nobody asked to keep. A
lab or CI job sets the variable once in its environment. A database that cannot be written (corrupt, locked,
read-only, unreachable) never fails the user's call: the run is not recorded and a warning says why.
``RKFARM_HISTORY_LABEL`` (a commit, a CI job) is stored with each run recorded.

Schema: ``rkfarm_schema`` holds the versions applied, ``rkfarm_runs`` one row per result (statistics, options,
the package header summary and the per-layer table as JSON; JSONB on PostgreSQL). ``_MIGRATIONS`` upgrades an
older database in place when it is opened; one written by a newer rkfarm is refused, never rewritten.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkfarm.errors import RkfarmError

if TYPE_CHECKING:
    from rkfarm_proto.v1 import package_pb2

log = logging.getLogger("rkfarm.history")

ENV = "RKFARM_HISTORY"
LABEL_ENV = "RKFARM_HISTORY_LABEL"
_OFF = frozenset({"", "0", "off", "no", "false"})
_ON = frozenset({"1", "on", "yes", "true"})
_POSTGRES = ("postgresql://", "postgres://")
SCHEMA_TABLE = "rkfarm_schema"
RUNS_TABLE = "rkfarm_runs"
KINDS = ("perf", "memory")
VERSIONS_TIMEOUT_S = 3.0  # how long recording waits for an agent's versions

# (version, what it does, statements per dialect); applied in order, each in its own transaction
_MIGRATIONS: list[tuple[int, str, dict[str, list[str]]]] = [
    (
        1,
        "one row per eval_perf / eval_memory result",
        {
            "sqlite": [
                f"""CREATE TABLE {RUNS_TABLE} (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, created_utc TEXT NOT NULL, kind TEXT NOT NULL,
                    model_sha256 TEXT NOT NULL, source_sha256 TEXT NOT NULL, model_name TEXT NOT NULL,
                    agent_id TEXT NOT NULL, platform TEXT NOT NULL, host TEXT NOT NULL, location TEXT NOT NULL,
                    versions TEXT NOT NULL, rkfarm_version TEXT NOT NULL, median_us REAL, p90_us REAL, fps REAL,
                    total_memory INTEGER, options TEXT NOT NULL, header TEXT NOT NULL, stats TEXT, memory TEXT,
                    layers TEXT NOT NULL)""",
                f"CREATE INDEX {RUNS_TABLE}_model ON {RUNS_TABLE} (model_sha256, created_utc)",
            ],
            "postgres": [
                f"""CREATE TABLE {RUNS_TABLE} (
                    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, created_utc TEXT NOT NULL,
                    kind TEXT NOT NULL, model_sha256 TEXT NOT NULL, source_sha256 TEXT NOT NULL,
                    model_name TEXT NOT NULL, agent_id TEXT NOT NULL, platform TEXT NOT NULL, host TEXT NOT NULL,
                    location TEXT NOT NULL, versions TEXT NOT NULL, rkfarm_version TEXT NOT NULL,
                    median_us DOUBLE PRECISION, p90_us DOUBLE PRECISION, fps DOUBLE PRECISION, total_memory BIGINT,
                    options JSONB NOT NULL, header JSONB NOT NULL, stats JSONB, memory JSONB, layers JSONB NOT NULL)""",
                f"CREATE INDEX {RUNS_TABLE}_model ON {RUNS_TABLE} (model_sha256, created_utc)",
            ],
        },
    ),
    (
        2,
        "a label per run (RKFARM_HISTORY_LABEL: commit, CI job) and an index by board",
        {
            "sqlite": [
                f"ALTER TABLE {RUNS_TABLE} ADD COLUMN label TEXT NOT NULL DEFAULT ''",
                f"CREATE INDEX {RUNS_TABLE}_agent ON {RUNS_TABLE} (agent_id, created_utc)",
            ],
            "postgres": [
                f"ALTER TABLE {RUNS_TABLE} ADD COLUMN label TEXT NOT NULL DEFAULT ''",
                f"CREATE INDEX {RUNS_TABLE}_agent ON {RUNS_TABLE} (agent_id, created_utc)",
            ],
        },
    ),
]
SCHEMA_VERSION = _MIGRATIONS[-1][0]

_COLUMNS = (
    "created_utc", "kind", "model_sha256", "source_sha256", "model_name", "agent_id", "platform", "host",
    "location", "versions", "rkfarm_version", "median_us", "p90_us", "fps", "total_memory", "options", "header",
    "stats", "memory", "layers", "label",
)  # fmt: skip
_JSON_COLUMNS = frozenset({"options", "header", "stats", "memory", "layers"})


class HistoryError(RkfarmError):
    """The history database cannot be used (corrupt, not rkfarm's, newer schema), or a run is not in it."""


def default_path() -> Path:
    """``$XDG_DATA_HOME/rkfarm/history.db``, i.e. ``~/.local/share/rkfarm/history.db`` by default."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "rkfarm" / "history.db"


def database(explicit: str | os.PathLike[str] | None = None) -> str:
    """The database to read: ``explicit``, else ``RKFARM_HISTORY`` when it names one, else the default file."""
    if explicit is not None and str(explicit):
        return str(explicit)
    env = os.environ.get(ENV, "").strip()
    if env.lower() in _OFF or env.lower() in _ON:
        return str(default_path())
    return env


def recording_database() -> str | None:
    """Where the RKNN API records results: None unless ``RKFARM_HISTORY`` turns recording on."""
    env = os.environ.get(ENV, "").strip()
    if env.lower() in _OFF:
        return None
    return str(default_path()) if env.lower() in _ON else env


# -- records -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Where:
    """What ran a result: the agent (``simulator`` for the in-process simulator), its platform, the runtime's
    own description and versions, and the core mask the model was opened with when the runtime says."""

    agent_id: str
    platform: str
    description: str = ""
    versions: str = ""
    core_mask: int | None = None

    @classmethod
    def of(cls, runtime: object, header: package_pb2.PackageHeader | None = None) -> Where:
        """Read from a ``rkfarm.runtime.Runtime``: a remote one names its device, the simulator has none."""
        device = getattr(runtime, "device", None)
        try:
            versions = _versions(runtime, device)
        except Exception as exc:  # an agent that stopped answering still leaves its numbers worth keeping
            log.debug("versions of %s: %s", getattr(runtime, "where", runtime), exc)
            agent_version = str(getattr(device, "version", ""))
            versions = f"rkfarm-agent {agent_version}" if agent_version else ""
        options = getattr(runtime, "_options", None)  # RemoteRuntime keeps its LoadOptions; the simulator not
        core_mask = getattr(options, "core_mask", None)
        return cls(
            agent_id=str(getattr(device, "agent_id", "")) or "simulator",
            platform=str(getattr(device, "platform", "")) or (header.target_platform if header else "") or "",
            description=str(getattr(runtime, "where", "")),
            versions=versions,
            core_mask=int(core_mask) if isinstance(core_mask, int) else None,
        )


def _versions(runtime: object, device: object | None) -> str:
    """The runtime's and driver's versions: an agent's Info (the agent, each backend's library, the NPU driver)
    asked with a short deadline, so that a board gone after its run cannot stall eval_perf; the simulator's own."""
    client = getattr(runtime, "client", None)
    if device is not None and client is not None and hasattr(client, "info"):
        info = client.info(time.monotonic() + VERSIONS_TIMEOUT_S)
        parts = [f"rkfarm-agent {info.agent_version}", *(f"{k}={v}" for k, v in sorted(info.versions.items()))]
        return "; ".join(parts)
    versions = getattr(runtime, "versions", None)
    return str(versions()) if callable(versions) else ""


@dataclass(frozen=True)
class Run:
    """One recorded result. ``stats`` (perf) holds the latency statistics, fps and batch figures; ``memory``
    (memory) eval_memory's dict; ``layers`` the per-layer table (empty without perf_debug)."""

    id: int
    created_utc: str
    kind: str
    model_sha256: str
    source_sha256: str
    model_name: str
    agent_id: str
    platform: str
    host: str
    location: str
    versions: str
    rkfarm_version: str
    median_us: float | None
    p90_us: float | None
    fps: float | None
    total_memory: int | None
    options: dict[str, Any]
    header: dict[str, Any]
    stats: dict[str, Any] | None
    memory: dict[str, Any] | None
    layers: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def board(self) -> str:
        return self.agent_id if self.agent_id != "simulator" else f"simulator@{self.host}"


def header_summary(header: package_pb2.PackageHeader) -> dict[str, Any]:
    """The package header fields that tell two builds apart (not the payload, keys or per-tensor details)."""
    from rkfarm_proto.tensors import dtype_name
    from rkfarm_proto.v1 import package_pb2

    def tensor(t: Any) -> dict[str, Any]:
        return {"name": t.name, "dtype": dtype_name(t.dtype), "shape": [int(d) for d in t.shape]}

    q = header.quantization
    return {
        "source_model_name": header.source_model_name,
        "source_framework": header.source_framework,
        "source_model_sha256": header.source_model_sha256,
        "payload_sha256": header.payload_sha256,
        "payload_kind": package_pb2.PayloadKind.Name(header.payload_kind).removeprefix("PAYLOAD_KIND_").lower(),
        "payload_size": int(header.payload_size),
        "target_platform": header.target_platform,
        "float_dtype": header.float_dtype,
        "quantized": q.quantized,
        "quantized_dtype": q.dtype,
        "quantized_algorithm": q.algorithm,
        "float_tensors": len(q.float_tensors),
        "rknn_batch_size": int(header.rknn_batch_size) or 1,
        "shape_sets": len(header.shape_sets),
        "single_core": header.single_core,
        "opset": int(header.opset),
        "producer": header.producer,
        "created_utc": header.created_utc,
        "encrypted": bool(header.encryption.algorithm),
        "inputs": [tensor(spec.tensor) for spec in header.inputs],
        "outputs": [tensor(t) for t in header.outputs],
        "build_options": dict(sorted(header.build_options.items())),
    }


# -- the database --------------------------------------------------------------------------------------------
class History:
    """A history database: an SQLite file (``path``, default ``database()``) or a ``postgresql://`` URL."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.target = database(path)
        self.postgres = self.target.startswith(_POSTGRES)
        self.name = _redact(self.target) if self.postgres else str(Path(self.target).expanduser())

    def __repr__(self) -> str:
        return f"History({self.name!r})"

    # connections ------------------------------------------------------------------------------------------
    @contextmanager
    def _connect(self, write: bool) -> Iterator[_Conn | None]:
        """A connection with the schema current, or None when reading a database that does not exist yet."""
        try:
            conn = self._open(write)
            if conn is None:
                yield None
                return
            try:
                yield conn if _migrate(conn, write) else None
            finally:
                conn.close()
        except HistoryError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise HistoryError(f"{self.name}: {_reason(exc)}") from None
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg"):
                raise HistoryError(f"{self.name}: {_reason(exc)}") from None
            raise

    def _open(self, write: bool) -> _Conn | None:
        if self.postgres:
            try:
                import psycopg
            except ImportError:
                raise HistoryError(
                    f"{self.name}: a PostgreSQL history needs psycopg 3: pip install 'rkfarm[postgres]'"
                ) from None
            # autocommit: each transaction() is a real BEGIN ... COMMIT, not a savepoint in an implicit one
            return _Conn(psycopg.connect(self.target, connect_timeout=10, autocommit=True), "postgres")
        path = Path(self.target).expanduser()
        if path.is_dir():
            raise HistoryError(f"{self.name}: is a directory, not a history database file")
        if not path.exists():
            if not write:
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
        raw = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        return _Conn(raw, "sqlite")

    # writing ----------------------------------------------------------------------------------------------
    def record(
        self,
        report: Any,
        header: package_pb2.PackageHeader,
        where: Where | object,
        *,
        options: Mapping[str, Any] | None = None,
        label: str | None = None,
    ) -> int:
        """Store one result and return its run id: a ``PerfReport`` (eval_perf) or eval_memory's dict, for the
        model ``header`` describes, measured ``where`` (a ``Where`` or the runtime itself)."""
        from rkfarm import __version__
        from rkfarm.perf import PerfReport

        place = where if isinstance(where, Where) else Where.of(where, header)
        opts = dict(options or {})
        if place.core_mask is not None:
            opts.setdefault("core_mask", place.core_mask)
        row: dict[str, Any] = {
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "model_sha256": header.payload_sha256,
            "source_sha256": header.source_model_sha256,
            "model_name": header.source_model_name,
            "agent_id": place.agent_id,
            "platform": place.platform,
            "host": socket.gethostname(),
            "location": place.description,
            "versions": place.versions,
            "rkfarm_version": __version__,
            "options": opts,
            "header": header_summary(header),
            "label": os.environ.get(LABEL_ENV, "") if label is None else label,
            "median_us": None, "p90_us": None, "fps": None, "total_memory": None,
            "stats": None, "memory": None, "layers": [],
        }  # fmt: skip
        if isinstance(report, PerfReport):
            row["kind"] = "perf"
            row["median_us"] = report.stats.median_us
            row["p90_us"] = report.stats.p90_us
            row["fps"] = report.fps if report.fps != float("inf") else None
            row["stats"] = {
                **asdict(report.stats),
                "fps": row["fps"],
                "batch_size": report.batch_size,
                "per_sample_us": report.per_sample_us,
                "run_times_us": list(report.run_times_us),
                "per_shape": [p.to_dict() for p in report.per_shape],
            }
            row["layers"] = [asdict(layer) for layer in report.layers]
            if not place.description:
                row["location"] = report.where
        elif isinstance(report, Mapping) and "total_memory" in report:
            row["kind"] = "memory"
            row["memory"] = {k: v for k, v in report.items() if isinstance(v, (int, float, str))}
            row["total_memory"] = int(report["total_memory"])
            if not place.description:
                row["location"] = str(report.get("where", ""))
        else:
            raise HistoryError(f"record: {type(report).__name__} is neither a PerfReport nor eval_memory's dict")
        with self._connect(write=True) as conn:
            assert conn is not None
            values = [_to_db(c, row[c], conn.dialect) for c in _COLUMNS]
            marks = ", ".join("?" for _ in _COLUMNS)
            with conn.transaction():
                cur = conn.execute(
                    f"INSERT INTO {RUNS_TABLE} ({', '.join(_COLUMNS)}) VALUES ({marks}) RETURNING id", values
                )
                run_id = int(cur.fetchone()[0])
        log.info("recorded %s run %d of %s on %s in %s", row["kind"], run_id, row["model_name"], place.agent_id, self)
        return run_id

    # reading ----------------------------------------------------------------------------------------------
    def runs(
        self,
        model_sha: str | None = None,
        agent: str | None = None,
        *,
        kind: str | None = None,
        model_name: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        """Runs, newest first: of the model whose payload sha256 starts with ``model_sha`` (or whose source model
        has that sha256, or is named ``model_name``), on ``agent``, of ``kind`` (perf | memory)."""
        where: list[str] = []
        params: list[Any] = []
        if model_sha:
            sha = model_sha.lower()
            if not sha or any(c not in "0123456789abcdef" for c in sha):
                raise HistoryError(f"{model_sha!r} is not a sha256 (hex digits)")
            where.append("(model_sha256 LIKE ? OR source_sha256 = ?)")
            params += [sha + "%", sha]
        if model_name:
            where.append("model_name = ?")
            params.append(model_name)
        if agent:
            where.append("agent_id = ?")
            params.append(agent)
        if kind:
            if kind not in KINDS:
                raise HistoryError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
            where.append("kind = ?")
            params.append(kind)
        sql = f"SELECT id, {', '.join(_COLUMNS)} FROM {RUNS_TABLE}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_utc DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._connect(write=False) as conn:
            if conn is None:
                return []
            return [_run(row) for row in conn.execute(sql, params).fetchall()]

    def run(self, run_id: int | str) -> Run:
        """The run with this id; HistoryError names the database when there is none."""
        try:
            wanted = int(run_id)
        except (TypeError, ValueError):
            raise HistoryError(f"{run_id!r} is not a run id (a number from `rkfarm history`)") from None
        with self._connect(write=False) as conn:
            rows = [] if conn is None else conn.execute(
                f"SELECT id, {', '.join(_COLUMNS)} FROM {RUNS_TABLE} WHERE id = ?", [wanted]
            ).fetchall()  # fmt: skip
        if not rows:
            raise HistoryError(f"no run {wanted} in {self.name}")
        return _run(rows[0])

    def agents(self) -> list[str]:
        with self._connect(write=False) as conn:
            if conn is None:
                return []
            return [str(r[0]) for r in conn.execute(f"SELECT DISTINCT agent_id FROM {RUNS_TABLE}", []).fetchall()]

    def schema_version(self) -> int:
        with self._connect(write=False) as conn:
            return 0 if conn is None else _version(conn)


# -- comparison ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One figure in two runs: ``ratio`` is b / a - 1 (+0.25: b is 25 % higher, i.e. slower or bigger)."""

    metric: str
    a: float
    b: float

    @property
    def ratio(self) -> float:
        if self.a > 0:
            return self.b / self.a - 1.0
        return 0.0 if self.b <= 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "a": self.a, "b": self.b, "ratio": self.ratio}


@dataclass(frozen=True)
class Comparison:
    """Run ``b`` against the baseline ``a``. ``regressed`` follows the median latency (perf) or the total
    memory (memory): the figures robust to a noisy machine. p90 and per-layer changes beyond the threshold are
    listed in ``regressions`` too (``strict_regressed`` counts them)."""

    a: Run
    b: Run
    threshold: float
    primary: Change
    p90: Change | None
    layers: list[Change]

    @property
    def regressions(self) -> list[Change]:
        found = [c for c in (self.primary, self.p90) if c is not None and c.ratio > self.threshold]
        return found + [c for c in self.layers if c.ratio > self.threshold]

    @property
    def regressed(self) -> bool:
        return self.primary.ratio > self.threshold

    @property
    def strict_regressed(self) -> bool:
        return bool(self.regressions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": _brief(self.a),
            "b": _brief(self.b),
            "threshold": self.threshold,
            "regressed": self.regressed,
            "primary": self.primary.to_dict(),
            "p90": self.p90.to_dict() if self.p90 else None,
            "layers": [c.to_dict() for c in self.layers],
            "regressions": [c.to_dict() for c in self.regressions],
        }

    def format(self, top: int = 10) -> str:
        unit = "ms" if self.a.kind == "perf" else "MiB"
        scale = 1e-3 if self.a.kind == "perf" else 1 / (1024 * 1024)
        lines = [
            f"A: run {self.a.id}  {self.a.created_utc[:19]}  {self.a.model_name}  on {self.a.board}",
            f"B: run {self.b.id}  {self.b.created_utc[:19]}  {self.b.model_name}  on {self.b.board}",
            f"{'metric':<34}{'A':>12}{'B':>12}{'change':>10}",
        ]
        for change in (self.primary, self.p90):
            if change is not None:
                lines.append(_change_line(change, scale, unit, self.threshold))
        if self.layers:
            lines.append(f"layers (slowest in A; {len(self.layers)} compared):")
            for change in sorted(self.layers, key=lambda c: c.a, reverse=True)[:top]:
                lines.append(_change_line(change, 1e-3, "ms", self.threshold))
        what = "median latency" if self.a.kind == "perf" else "total memory"
        verdict = (
            f"REGRESSION: {what} {self.primary.ratio:+.1%} (threshold {self.threshold:.0%})"
            if self.regressed
            else f"ok: {what} {self.primary.ratio:+.1%} is within the threshold {self.threshold:.0%}"
        )
        others = [c.metric for c in self.regressions if c is not self.primary]
        if others:
            verdict += f"; also beyond it: {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}"
        return "\n".join([*lines, verdict])


def compare(
    a: Run | int,
    b: Run | int,
    threshold: float = 0.10,
    *,
    layer_floor: float = 0.01,
    path: str | os.PathLike[str] | None = None,
) -> Comparison:
    """Compare run ``b`` with the baseline ``a`` (runs, or run ids in the database ``path``): median latency and
    p90 (perf), or total memory (memory), and each layer both per-layer tables have (matched by name) that takes
    at least ``layer_floor`` of A's layer time (smaller layers are timer noise)."""
    if not isinstance(a, Run) or not isinstance(b, Run):
        history = History(path)
        a = a if isinstance(a, Run) else history.run(a)
        b = b if isinstance(b, Run) else history.run(b)
    if not threshold >= 0:
        raise HistoryError(f"threshold must be >= 0, not {threshold}")
    if a.kind != b.kind:
        raise HistoryError(f"run {a.id} is a {a.kind} result and run {b.id} a {b.kind} one: nothing to compare")
    if a.kind == "memory":
        primary = Change("total_memory", float(a.total_memory or 0), float(b.total_memory or 0))
        return Comparison(a, b, threshold, primary, None, [])
    primary = Change("median_us", float(a.median_us or 0.0), float(b.median_us or 0.0))
    p90 = Change("p90_us", float(a.p90_us or 0.0), float(b.p90_us or 0.0))
    return Comparison(a, b, threshold, primary, p90, _layer_changes(a.layers, b.layers, layer_floor))


def _layer_changes(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], floor: float) -> list[Change]:
    def keyed(layers: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], float]:
        seen: dict[str, int] = {}
        out: dict[tuple[str, int], float] = {}
        for layer in layers:
            name = str(layer.get("name", ""))
            seen[name] = seen.get(name, 0) + 1
            out[(name, seen[name])] = float(layer.get("time_us", 0.0))
        return out

    ka, kb = keyed(a), keyed(b)
    total = sum(ka.values())
    changes = []
    for key, time_a in ka.items():
        if key in kb and total > 0 and time_a >= floor * total:
            name = key[0] if key[1] == 1 else f"{key[0]}#{key[1]}"
            changes.append(Change(f"layer {name}", time_a, kb[key]))
    return changes


# -- the API's hook and module-level helpers -----------------------------------------------------------------
def autorecord(
    report: Any,
    header: package_pb2.PackageHeader,
    runtime: object,
    options: Mapping[str, Any] | None = None,
) -> int | None:
    """Record a result when ``RKFARM_HISTORY`` turns recording on; never raises (a warning says what failed)."""
    target = recording_database()
    if target is None:
        return None
    started = time.monotonic()
    try:
        run_id = History(target).record(report, header, runtime, options=options)
    except Exception as exc:
        log.warning("perf history: result not recorded: %s", exc if isinstance(exc, HistoryError) else _reason(exc))
        return None
    log.debug("perf history: run %d recorded in %.1f ms", run_id, (time.monotonic() - started) * 1e3)
    return run_id


def record(
    report: Any,
    header: package_pb2.PackageHeader,
    where: Where | object,
    *,
    options: Mapping[str, Any] | None = None,
    label: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> int:
    """``History(path).record(...)``: store one result, return its run id."""
    return History(path).record(report, header, where, options=options, label=label)


def runs(
    model_sha: str | None = None,
    agent: str | None = None,
    *,
    kind: str | None = None,
    limit: int | None = None,
    path: str | os.PathLike[str] | None = None,
) -> list[Run]:
    """``History(path).runs(...)``: runs of a model and/or board, newest first."""
    return History(path).runs(model_sha, agent, kind=kind, limit=limit)


# -- internals ---------------------------------------------------------------------------------------------------
class _Conn:
    """A DB-API connection and its dialect; SQL is written with ``?`` markers and translated for psycopg."""

    def __init__(self, raw: Any, dialect: str) -> None:
        self.raw = raw
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.dialect == "postgres":
            return self.raw.execute(sql.replace("?", "%s"), list(params))
        return self.raw.execute(sql, list(params))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.dialect == "postgres":
            with self.raw.transaction():
                yield
            return
        self.raw.execute("BEGIN IMMEDIATE")  # take the write lock now: concurrent writers queue on busy_timeout
        try:
            yield
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")

    def close(self) -> None:
        self.raw.close()


def _tables(conn: _Conn) -> set[str]:
    if conn.dialect == "postgres":
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {str(r[0]) for r in conn.execute(sql).fetchall()}


def _version(conn: _Conn) -> int:
    row = conn.execute(f"SELECT MAX(version) FROM {SCHEMA_TABLE}").fetchone()
    return int(row[0] or 0)


def _migrate(conn: _Conn, write: bool, upto: int = SCHEMA_VERSION) -> bool:
    """Bring the schema to ``upto``; False when reading an empty database (nothing recorded yet)."""
    tables = _tables(conn)
    if SCHEMA_TABLE not in tables:
        foreign = sorted(t for t in tables if not t.startswith("sqlite_"))
        if foreign:
            raise HistoryError(
                f"not an rkfarm history database: it has other tables ({', '.join(foreign[:5])}) and no {SCHEMA_TABLE}"
            )
        if not write:
            return False
        with conn.transaction():
            if SCHEMA_TABLE not in _tables(conn):  # another process may have created it meanwhile
                conn.execute(
                    f"CREATE TABLE {SCHEMA_TABLE} (version INTEGER NOT NULL PRIMARY KEY, description TEXT NOT NULL, "
                    "applied_utc TEXT NOT NULL)"
                )
    current = _version(conn)
    if current > SCHEMA_VERSION:
        raise HistoryError(
            f"written by a newer rkfarm (schema version {current}; this rkfarm knows up to {SCHEMA_VERSION}): "
            "upgrade rkfarm to use it"
        )
    for version, description, statements in _MIGRATIONS:
        if version <= current or version > upto:
            continue
        with conn.transaction():
            if _version(conn) >= version:  # applied by a concurrent writer while this one waited for the lock
                continue
            for sql in statements[conn.dialect]:
                conn.execute(sql)
            conn.execute(
                f"INSERT INTO {SCHEMA_TABLE} (version, description, applied_utc) VALUES (?, ?, ?)",
                [version, description, datetime.now(timezone.utc).isoformat(timespec="seconds")],
            )
        log.info("history database: schema version %d applied (%s)", version, description)
    return True


def _to_db(column: str, value: Any, dialect: str) -> Any:
    if column in _JSON_COLUMNS and value is not None:
        return json.dumps(_finite(value), allow_nan=False, default=str)  # psycopg sends str as unknown: JSONB casts
    return _finite(value)


def _finite(value: Any) -> Any:
    """JSON and SQL have no infinity: an infinite FPS (a 0 µs median) is stored as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _from_db(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _run(row: Sequence[Any]) -> Run:
    data = dict(zip(("id", *_COLUMNS), row))
    for column in _JSON_COLUMNS:
        data[column] = _from_db(data[column])
    data["layers"] = data["layers"] or []
    data["id"] = int(data["id"])
    return Run(**data)


def _brief(run: Run) -> dict[str, Any]:
    keys = ("id", "created_utc", "kind", "model_name", "model_sha256", "agent_id", "platform", "host", "label")
    return {k: getattr(run, k) for k in keys} | {
        "median_us": run.median_us, "p90_us": run.p90_us, "fps": run.fps, "total_memory": run.total_memory,
    }  # fmt: skip


def _change_line(change: Change, scale: float, unit: str, threshold: float) -> str:
    mark = "  <-- regression" if change.ratio > threshold else "  (faster)" if change.ratio < -threshold else ""
    name = change.metric if len(change.metric) <= 33 else change.metric[:32] + "…"
    return f"{name:<34}{change.a * scale:>10.3f}{unit:>2}{change.b * scale:>10.3f}{unit:>2}{change.ratio:>+10.1%}{mark}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return "not a history database (the file is not SQLite, or it is damaged)"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _redact(url: str) -> str:
    """A URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}{sep}{user}@{host}"
    return url
