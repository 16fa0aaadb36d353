"""`rkfarm farm` (boards by selector, holding boards) and `rkfarm perf MODEL --devices SELECTOR` (sweeps).

`rkfarm perf` itself lives in boards.py; with ``--devices`` it hands over to ``cmd_sweep`` here.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rkfarm.errors import RkfarmError

SELECTOR_HELP = (
    "boards by what they are, e.g. 'platform=rk3588,tag:camera,npu_cores>=2,free_mem>=512M'; keys: platform, "
    "id, address, npu_cores, backend, free_mem, load, sessions, version, holder, auth, source, tag:NAME or any tag "
    "name; operators = != >= <= > <; '|' means any of (docs/FARM.md)"
)


def add_sweep_options(p: argparse.ArgumentParser) -> None:
    """``rkfarm perf``'s sweep options (boards.py calls this)."""
    group = p.add_argument_group("sweeps: one model on many boards (docs/FARM.md)")
    group.add_argument(
        "--devices", action="append", metavar="SELECTOR",
        help=f"time the model on every matching board at once (repeatable: boards matching any); {SELECTOR_HELP}",
    )  # fmt: skip
    group.add_argument("--csv", type=Path, metavar="OUT.csv", help="with --devices: also write one CSV row per board")
    group.add_argument(
        "--workers", type=int, default=32, metavar="N", help="with --devices: boards measured at once (default 32)"
    )
    group.add_argument("--no-memory", action="store_true", help="with --devices: skip eval_memory (timing only)")
    group.add_argument(
        "--retry-elsewhere", action="store_true",
        help="with --devices: a board that vanishes mid-job has its share run on another matching board",
    )  # fmt: skip
    group.add_argument(
        "--wait", type=float, default=30.0, metavar="SECONDS",
        help="with --devices: how long to wait for a board someone else holds (default 30)",
    )  # fmt: skip
    group.add_argument(
        "--history", metavar="DB", help="with --devices: record every result in this perf-history database "
        "(default: where RKFARM_HISTORY says, if it is set)",
    )  # fmt: skip


def cmd_sweep(args: argparse.Namespace) -> int:
    """``rkfarm perf MODEL --devices ...``: the sweep, its table (or --json), --csv and --html; exit 1 if any
    board failed."""
    from rkfarm.farm.selector import Selector
    from rkfarm.farm.sweep import BoardRun, sweep

    if getattr(args, "device", None):
        raise RkfarmError("--device and --devices do not go together: --device is one board, --devices a sweep")
    if getattr(args, "trace", None) is not None:
        raise RkfarmError("--trace is per board: use it with --device; a sweep writes --html, --csv or --json")
    selectors = [Selector.parse(s) for s in args.devices]  # a bad term fails here, before any board is touched
    tty = sys.stderr.isatty()

    def progress(done: int, total: int, run: BoardRun) -> None:
        status = "ok" if run.ok else ("vanished" if run.vanished else "failed")
        line = f"boards done {done}/{total}: {run.agent_id} {status}"
        print(f"\r{line:<78}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    result = sweep(
        args.model, selectors, runs=args.runs, warmup=args.warmup, per_layer=args.perf_debug,
        memory=not args.no_memory, core_mask=args.core_mask, max_workers=args.workers,
        retry_elsewhere=args.retry_elsewhere, acquire_timeout_s=args.wait, history=args.history, progress=progress,
    )  # fmt: skip
    if tty:
        print(file=sys.stderr)
    print(result.to_json() if args.json else result.table(), end="" if args.json else "\n")
    if args.csv is not None:
        args.csv.write_text(result.to_csv())
        print(f"wrote {args.csv}", file=sys.stderr)
    if args.html is not None:
        print(f"wrote {result.to_html(args.html)}", file=sys.stderr)
    if not result.boards:
        print(f"rkfarm: no board matches {' or '.join(map(str, selectors))}", file=sys.stderr)
        return 1
    return 1 if result.failed else 0


# -- rkfarm farm -------------------------------------------------------------------------------------------------
def _add_farm(sub: Any) -> None:
    p = sub.add_parser(
        "farm",
        help="the board farm: boards by selector, holding boards for yourself",
        description="Boards found by mDNS, RKFARM_AGENTS and the inventory, chosen by a selector; a held board "
        "refuses everyone else's runs until it is released (docs/FARM.md).",
        epilog="examples:\n"
        "  rkfarm farm list 'platform=rk3588,tag:camera'\n"
        "  rkfarm farm list 'holder=' --json                    # boards nobody holds\n"
        "  rkfarm farm hold 'platform=rk3576' --count 2          # until Ctrl-C\n"
        "  rkfarm farm hold id=board-07 --for 600 --wait 120\n"
        "  rkfarm perf model.rkfm --devices 'platform=rk3588' --html sweep.html   # a sweep",
    )
    farm = p.add_subparsers(dest="farm_command", metavar="SUBCOMMAND", required=True, help="what to do")
    ls = farm.add_parser(
        "list", help="boards matching a selector", description=f"Selector: {SELECTOR_HELP}.",
        epilog="examples:\n  rkfarm farm list\n  rkfarm farm list 'platform=rk3588|rk3576,tag:camera'\n"
        "  rkfarm farm list 'holder=,free_mem>=1G' --json",
    )  # fmt: skip
    ls.add_argument("selector", nargs="?", default="", help="which boards (default: all)")
    ls.add_argument("--timeout", type=float, default=2.0, help="longest wait for discovery to settle (default 2)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_farm_list)
    hold = farm.add_parser(
        "hold", help="hold matching boards (others' runs are refused) until Ctrl-C or --for",
        description=f"Selector: {SELECTOR_HELP}.",
        epilog="examples:\n  rkfarm farm hold id=board-07\n  rkfarm farm hold 'platform=rk3588,lab=2' --count 2 "
        "--for 600",
    )  # fmt: skip
    hold.add_argument("selector", help="which boards")
    hold.add_argument("--count", type=int, default=1, help="how many (default 1)")
    hold.add_argument("--for", dest="hold_s", type=float, metavar="SECONDS", help="release after this long")
    hold.add_argument("--wait", type=float, default=30.0, help="how long to wait for them to come free (default 30)")
    hold.add_argument("--label", default="rkfarm farm hold", help="what other clients see as the holder")
    hold.set_defaults(func=cmd_farm_hold)


def cmd_farm_list(args: argparse.Namespace) -> int:
    from rkfarm.farm.pool import DevicePool
    from rkfarm.remote.discovery import conflict_message, format_devices

    with DevicePool(args.selector) as pool:
        boards = pool.boards(settle_s=args.timeout)
        conflicts = pool.conflicts()
    if args.json:
        listed = {k: [d.to_dict() for d in v] for k, v in conflicts.items()}
        print(json.dumps({"boards": [d.to_dict() for d in boards], "conflicts": listed}, indent=2))
        return 0
    print(format_devices(boards) if boards else f"no board matches {args.selector or '(any)'}")
    for agent_id, claimed in sorted(conflicts.items()):
        print(f"CONFLICT (left out): {conflict_message(agent_id, claimed)}", file=sys.stderr)
    return 0


def cmd_farm_hold(args: argparse.Namespace) -> int:
    from rkfarm.farm.pool import DevicePool

    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    try:
        with DevicePool(label=args.label) as pool:
            boards = pool.acquire(args.selector, args.count, args.wait)
            for board in boards:
                print(f"holding {board.agent_id} @ {board.device.address}", flush=True)
            until = time.monotonic() + args.hold_s if args.hold_s else None
            print("release with Ctrl-C" + (f" (or after {args.hold_s:g} s)" if until else ""), file=sys.stderr)
            try:
                while not done.wait(0.5):
                    if until is not None and time.monotonic() >= until:
                        break
                    lost = [b for b in pool.held() if b.lost]
                    if lost:
                        raise RkfarmError("; ".join(b.lost for b in lost))
            except KeyboardInterrupt:
                pass
            print(f"released {', '.join(b.agent_id for b in boards)}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def register(sub: Any) -> None:
    """Add this module's subcommands."""
    _add_farm(sub)
