"""`rkfarm history` and `rkfarm compare`: the perf history database (``rkfarm.farm.history``) on the command line.

``compare`` exits 1 when B is slower than A beyond ``--threshold`` (median latency; total memory for memory runs),
so that a CI job fails on a regression; 0 otherwise. A database or run that cannot be used is one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HISTORY_EPILOG = """\
examples:
  RKFARM_HISTORY=1 python my_script.py             # record every eval_perf / eval_memory of the RKNN API
  rkfarm history                                   # the latest runs of every model
  rkfarm history model.rkfm                        # runs of this package's model (its payload sha256)
  rkfarm history yolov5s.onnx --board rk3588-board-1 --kind perf
  rkfarm history 3f5a9c01 --json                   # a sha256 prefix; --json for scripts
  rkfarm history --db postgresql://farm@dbhost/rkfarm
"""

COMPARE_EPILOG = """\
examples:
  rkfarm compare 12 15                             # run 12 (baseline) against run 15
  rkfarm compare rk3588-board-1 rk3588-board-2 --model model.rkfm   # latest runs of one model on two boards
  rkfarm compare old.rkfm new.rkfm --board rk3588-board-1 --threshold 0.05   # two models on one board
  rkfarm compare 12 15 --json                      # exit 1 on a regression: fails a CI step
"""


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db", metavar="PATH|URL",
        help="history database: an SQLite file or a postgresql:// URL (default RKFARM_HISTORY when it names one, "
        "else ~/.local/share/rkfarm/history.db)",
    )  # fmt: skip


def _add_history(sub: Any) -> None:
    p = sub.add_parser(
        "history",
        help="list the recorded eval_perf / eval_memory runs of a model (RKFARM_HISTORY)",
        description="List recorded runs, newest first: time, board, platform, median and p90 latency, FPS and "
        "memory. The RKNN API records its eval_perf / eval_memory results when RKFARM_HISTORY is set (1 for "
        "the default file, or a path or postgresql:// URL).",
        epilog=HISTORY_EPILOG,
    )
    p.add_argument(
        "model", nargs="?",
        help="a package file, a sha256 (prefix) of a model, or a source model name; all models if left out",
    )  # fmt: skip
    p.add_argument("--board", metavar="ID", help="only runs on this agent ('simulator' for the simulator)")
    p.add_argument("--kind", choices=("perf", "memory"), help="only eval_perf or eval_memory results")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50)")
    p.add_argument("--json", action="store_true", help="machine-readable output: the runs, in full")
    _add_db(p)
    p.set_defaults(func=cmd_history)


def _add_compare(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two recorded runs, boards or models; exit 1 on a regression",
        description="Compare B against the baseline A: median and p90 latency and each layer both runs profiled "
        "(perf), or total memory (memory). A and B are two run ids, two boards (the latest run of --model, or of "
        "the newest model both have) or two models (package files, sha256 prefixes or names; the latest run of "
        "each on --board, or on the board of A's latest run). Exit 1 when B's median (memory: total) exceeds A's "
        "by more than --threshold; --strict also counts p90 and per-layer changes.",
        epilog=COMPARE_EPILOG,
    )
    p.add_argument("a", help="baseline: a run id, a board or a model")
    p.add_argument("b", help="candidate: a run id, a board or a model (the same kind as A)")
    p.add_argument("--model", help="with two boards: the model whose latest runs to compare")
    p.add_argument("--board", metavar="ID", help="with two models: the board whose latest runs to compare")
    p.add_argument("--kind", choices=("perf", "memory"), default="perf", help="which results (default perf)")
    p.add_argument(
        "--threshold", type=float, default=0.10,
        help="relative increase that counts as a regression (default 0.10: 10 %%)",
    )  # fmt: skip
    p.add_argument("--strict", action="store_true", help="also fail on p90 and per-layer regressions")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_db(p)
    p.set_defaults(func=cmd_compare)


# -- resolving what the user typed ---------------------------------------------------------------------------
def _model_filter(token: str) -> dict[str, str]:
    """A package file -> its payload sha256; hex -> a sha256 prefix; anything else -> a source model name."""
    path = Path(token)
    if path.is_file():
        from rkfarm.packages import load_package

        return {"model_sha": load_package(path).header.payload_sha256}
    if len(token) >= 6 and all(c in "0123456789abcdefABCDEF" for c in token):
        return {"model_sha": token.lower()}
    return {"model_name": token}


def _latest(history: Any, kind: str, agent: str | None = None, **model: str) -> Any:
    found = history.runs(model.get("model_sha"), agent, kind=kind, model_name=model.get("model_name"), limit=1)
    return found[0] if found else None


def _pair(history: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    from rkfarm.farm.history import HistoryError

    a, b, kind = args.a, args.b, args.kind
    if a.isdigit() and b.isdigit():
        return history.run(a), history.run(b)
    if a.isdigit() or b.isdigit():
        raise HistoryError(f"compare {a} {b}: give two run ids, two boards or two models, not a mix")
    agents = set(history.agents())
    if args.model or (a in agents and b in agents and not args.board):
        return _boards(history, a, b, kind, args.model)
    board = args.board
    model_a, model_b = _model_filter(a), _model_filter(b)
    run_a = _latest(history, kind, board, **model_a)
    if run_a is None:
        raise HistoryError(f"no {kind} run of model {a!r}{f' on {board}' if board else ''} in {history.name}")
    run_b = _latest(history, kind, board or run_a.agent_id, **model_b)
    if run_b is None:
        raise HistoryError(
            f"no {kind} run of model {b!r} on {board or run_a.agent_id} (where A's latest run is) in "
            f"{history.name}; name the board with --board"
        )
    return run_a, run_b


def _boards(history: Any, a: str, b: str, kind: str, model: str | None) -> tuple[Any, Any]:
    from rkfarm.farm.history import HistoryError

    if model:
        wanted = _model_filter(model)
        run_a, run_b = _latest(history, kind, a, **wanted), _latest(history, kind, b, **wanted)
        for board, run in ((a, run_a), (b, run_b)):
            if run is None:
                raise HistoryError(f"no {kind} run of model {model!r} on board {board!r} in {history.name}")
        return run_a, run_b
    b_models = {r.model_sha256 for r in history.runs(None, b, kind=kind)}
    for run_a in history.runs(None, a, kind=kind):
        if run_a.model_sha256 in b_models:
            return run_a, _latest(history, kind, b, model_sha=run_a.model_sha256)
    raise HistoryError(f"boards {a!r} and {b!r} have no {kind} runs of a common model in {history.name}")


# -- commands ------------------------------------------------------------------------------------------------
def _ms(value: float | None) -> str:
    return "" if value is None else f"{value / 1000:.3f}"


def format_runs(runs: list[Any]) -> str:
    header = (
        f"{'ID':>6}  {'TIME (UTC)':<19}  {'BOARD':<22} {'PLATFORM':<9} {'MEDIAN ms':>10} {'P90 ms':>10} "
        f"{'FPS':>9} {'MEMORY MiB':>11}  MODEL"
    )
    lines = [header]
    for run in runs:
        memory = "" if run.total_memory is None else f"{run.total_memory / (1024 * 1024):.2f}"
        fps = "" if run.fps is None else f"{run.fps:.1f}"
        label = f"  [{run.label}]" if run.label else ""
        lines.append(
            f"{run.id:>6}  {run.created_utc[:19].replace('T', ' '):<19}  {run.board[:22]:<22} {run.platform[:9]:<9} "
            f"{_ms(run.median_us):>10} {_ms(run.p90_us):>10} {fps:>9} {memory:>11}  {run.model_name}{label}"
        )
    return "\n".join(lines)


def cmd_history(args: argparse.Namespace) -> int:
    from rkfarm.farm.history import History

    history = History(args.db)
    model = _model_filter(args.model) if args.model else {}
    found = history.runs(
        model.get("model_sha"), args.board, kind=args.kind, model_name=model.get("model_name"), limit=args.limit
    )
    if args.json:
        print(json.dumps([r.to_dict() for r in found], indent=2))
        return 0
    if not found:
        what = f" of {args.model}" if args.model else ""
        print(f"rkfarm: no runs{what} recorded in {history.name}", file=sys.stderr)
        return 0
    print(format_runs(found))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rkfarm.farm.history import History, compare

    history = History(args.db)
    run_a, run_b = _pair(history, args)
    result = compare(run_a, run_b, args.threshold)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format())
    failed = result.strict_regressed if args.strict else result.regressed
    return 1 if failed else 0


def register(sub: Any) -> None:
    """Add this module's subcommands."""
    _add_history(sub)
    _add_compare(sub)
