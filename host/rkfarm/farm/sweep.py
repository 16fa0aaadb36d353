"""Sweeps: one model timed (eval_perf, eval_memory) on every board a selector matches, at once, and compared.

``sweep(package, 'platform=rk3588')`` holds each matching board (the agent refuses everyone else's runs while it
is measured), uploads the package if the board lacks it, opens it, times it, measures its memory, closes it and
releases the board; up to ``max_workers`` boards at a time. A board that fails or vanishes is reported with its
error and never stops the others (``retry_elsewhere`` runs its share on another matching board; ``follow`` gives
boards that join mid-sweep a turn too). The result, a :class:`Sweep`, renders as a terminal table, JSON, CSV and
a self-contained HTML page (``rkfarm.farm.report``).

Every board's eval_perf and eval_memory result also goes to the perf history (``rkfarm.farm.history``) when
recording is on there (``RKFARM_HISTORY``), or to the database ``history=`` names.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkfarm.farm.pool import Board, DevicePool, JobResult
from rkfarm.farm.results import BoardRun, SweepResult
from rkfarm.farm.selector import Selector
from rkfarm_proto.records import PERF_RUNS, PERF_WARMUP, LoadOptions, PerfOptions

if TYPE_CHECKING:
    from rkfarm.perf import PerfReport
    from rkfarm.remote.runtime import RemoteRuntime
    from rkfarm_proto.package import ModelPackage

log = logging.getLogger(__name__)
Progress = Callable[[int, int, "BoardRun"], None]  # (boards done, boards in the sweep, the one just done)


@dataclass
class Sweep(SweepResult):
    """A sweep's outcome (``SweepResult``), with its renderings (``rkfarm.farm.report``)."""

    # renderings live in report.py; these are the short ways to reach them
    def table(self) -> str:
        from rkfarm.farm.report import format_table

        return format_table(self)

    def to_json(self) -> str:
        from rkfarm.farm.report import to_json

        return to_json(self)

    def to_csv(self) -> str:
        from rkfarm.farm.report import to_csv

        return to_csv(self)

    def to_html(self, path: str | Path) -> Path:
        from rkfarm.farm.report import write_html

        return write_html(self, Path(path))


def sweep(
    package: ModelPackage | str | Path,
    selectors: str | Selector | Sequence[str | Selector] | None = None,
    *,
    pool: DevicePool | None = None,
    runs: int = PERF_RUNS,
    warmup: int = PERF_WARMUP,
    per_layer: bool = False,
    memory: bool = True,
    core_mask: int = 0,
    max_workers: int | None = None,
    retry_elsewhere: bool = False,
    follow: bool = False,
    acquire_timeout_s: float = 30.0,
    settle_s: float = 2.0,
    history: str | None = None,
    progress: Progress | None = None,
    started: Callable[[str], None] | None = None,
) -> Sweep:
    """Time ``package`` on every board matching any of ``selectors`` (see the module docstring).
    ``progress(done, total, run)`` is called as each board finishes, ``started(agent_id)`` as one begins."""
    from rkfarm.packages import load_package

    model = package if not isinstance(package, (str, Path)) else load_package(Path(package))
    name = str(package) if isinstance(package, (str, Path)) else model.header.source_model_name or "model"
    wanted = [Selector.parse(s) for s in _as_list(selectors)] or [Selector.parse(None)]
    options = PerfOptions(runs, warmup, per_layer)
    owned = pool is None
    pool = pool or DevicePool()
    result = Sweep(
        model=name, model_sha256=model.header.payload_sha256, selectors=[str(s) for s in wanted], runs=runs,
        warmup=warmup, per_layer=per_layer, core_mask=core_mask, started_unix=time.time(),
    )  # fmt: skip
    began = time.monotonic()
    try:
        pool.registry.settle(settle_s)
        targets: dict[str, Any] = {}
        for selector in wanted:
            targets.update({d.agent_id: d for d in pool.boards(selector, settle_s=0.0)})
        if not targets:
            log.warning("sweep: no board matches %s", " or ".join(map(str, wanted)))
        load = LoadOptions(core_mask=core_mask, perf_debug=per_layer)

        def job(board: Board) -> BoardRun:
            if started is not None:
                started(board.agent_id)
            return _measure(board, model, load, options, memory, history)

        def done(outcome: JobResult[BoardRun], finished: int, total: int) -> None:
            run = _board_run(outcome, pool)
            result.boards.append(run)
            if progress is not None:
                progress(finished, total, run)

        follow_selector = wanted[0] if follow and len(wanted) == 1 else None
        pool.map(
            job, list(targets.values()) if follow_selector is None else follow_selector,
            retry_elsewhere=retry_elsewhere, acquire_timeout_s=acquire_timeout_s, max_workers=max_workers,
            on_result=done, follow=follow_selector is not None,
        )  # fmt: skip
    finally:
        if owned:
            pool.close()
    result.boards.sort(key=lambda b: b.agent_id)
    result.wall_s = time.monotonic() - began
    return result


def _as_list(selectors: str | Selector | Sequence[str | Selector] | None) -> list[str | Selector]:
    if selectors is None:
        return []
    if isinstance(selectors, (str, Selector)):
        return [selectors]
    return list(selectors)


def _measure(
    board: Board, package: ModelPackage, load: LoadOptions, options: PerfOptions, memory: bool, history: str | None
) -> BoardRun:
    from rkfarm.perf import evaluate, memory_dict

    device = board.device
    run = BoardRun(device.agent_id, device.address, device.platform, device.version, dict(device.tags))
    started = time.monotonic()
    runtime = board.open(package, load)
    run.open_s = time.monotonic() - started
    run.uploaded_bytes = runtime.uploaded_bytes
    try:
        began = time.monotonic()
        report = evaluate(runtime, package.header, options)
        run.perf_s = time.monotonic() - began
        run.where = report.where
        run.latency_us = dataclasses.asdict(report.stats)
        run.fps = report.fps
        run.run_times_us = list(report.run_times_us)
        run.layers = [dataclasses.asdict(layer) for layer in report.layers]
        run.history_runs += _record(report, package, runtime, options, load, history)
        if memory:
            mem = memory_dict(runtime.eval_memory(), runtime.where)
            run.memory = mem
            run.history_runs += _record(mem, package, runtime, options, load, history)
    finally:
        runtime.close()
    run.ok = True
    return run


def _record(
    result: PerfReport | dict[str, Any],
    package: ModelPackage,
    runtime: RemoteRuntime,
    options: PerfOptions,
    load: LoadOptions,
    history: str | None,
) -> list[int]:
    """Hand a result to the perf history, if that module is installed; never fails the sweep."""
    try:
        from rkfarm.farm import history as store
    except ImportError:
        return []
    opts = {"runs": options.runs, "warmup": options.warmup, "per_layer": options.per_layer, "core_mask": load.core_mask}
    try:
        if history is not None:
            return [int(store.record(result, package.header, runtime, options=opts, path=history))]
        run_id = store.autorecord(result, package.header, runtime, opts)
        return [] if run_id is None else [int(run_id)]
    except Exception as exc:  # the measurement stands even if the database does not take it
        log.warning("perf history: %s not recorded: %s", runtime.where, exc)
        return []


def _board_run(outcome: JobResult[BoardRun], pool: DevicePool) -> BoardRun:
    if outcome.ok and outcome.value is not None:
        run = outcome.value
    else:
        known = {d.agent_id: d for d in pool.registry.devices()}
        device = known.get(outcome.agent_id)
        run = BoardRun(outcome.agent_id)
        if device is not None:
            run.address, run.platform, run.version = device.address, device.platform, device.version
            run.tags = dict(device.tags)
        run.error, run.vanished = outcome.error, outcome.vanished
    run.attempts = list(outcome.attempts)
    run.elapsed_s = outcome.elapsed_s
    if outcome.ok and len(outcome.attempts) > 1:
        run.agent_id = outcome.attempts[-1]
    return run


__all__ = ["BoardRun", "Sweep", "sweep"]
