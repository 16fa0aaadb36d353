"""`rkfarm devices`, `perf` and `mem`: agents on the network, timing and memory on a board."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rkfarm.cli._common import _add_device_args, _opened
from rkfarm.errors import RkfarmError
from rkfarm_proto.records import PERF_RUNS, PERF_WARMUP


def _add_devices(sub: Any) -> None:
    p = sub.add_parser(
        "devices",
        help="list agents found by mDNS and in the inventory",
        description="Browse _rkfarm._tcp.local. (interfaces from RKFARM_MDNS_INTERFACES, default all) and ask "
        "every agent in RKFARM_AGENTS / the inventory file (RKFARM_INVENTORY, default "
        "~/.config/rkfarm/agents.txt, one host:port per line; no port means 50551) who it is. An agent that "
        "wants a token or a client certificate this host does not present is named with what to set.",
        epilog="examples:\n"
        "  rkfarm devices\n"
        "  RKFARM_AGENTS=192.168.1.40:50551,192.168.1.41 rkfarm devices --json\n"
        "  RKFARM_TOKEN_FILE=~/.config/rkfarm/token rkfarm devices --timeout 5",
    )
    p.add_argument(
        "--timeout", type=float, default=2.0,
        help="longest wait for mDNS answers (default 2; it ends once they stop, sooner with the registry cache "
        "an earlier run left)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="machine-readable output (docs/CLI-JSON.md)")
    p.set_defaults(func=cmd_devices)


def _add_perf_mem(sub: Any) -> None:
    p = sub.add_parser(
        "perf",
        help="time a model package on an agent (or the simulator)",
        description="Run the model N times after warm-up and report latency statistics; --perf-debug adds the "
        "per-layer table from the backend's profiler and the op-type ranking.",
        epilog="examples:\n"
        "  rkfarm perf cls.rkfm                                   # the simulator in this process\n"
        "  rkfarm perf cls.rkfm --device rk3588-board-1 --perf-debug --runs 200\n"
        "  rkfarm perf cls.rkfm --device 192.168.1.40 --core-mask 0_1 --json\n"
        "  rkfarm perf cls.rkfm --devices 'platform=rk3588' --html sweep.html   # every matching board at once",
    )
    p.add_argument("model", type=Path, help="model package (.rkfm)")
    _add_device_args(p)
    p.add_argument("--runs", type=int, default=PERF_RUNS, help=f"timed runs (default {PERF_RUNS})")
    p.add_argument("--warmup", type=int, default=PERF_WARMUP, help=f"untimed runs first (default {PERF_WARMUP})")
    p.add_argument("--perf-debug", action="store_true", help="per-layer times")
    p.add_argument("--json", action="store_true", help="machine-readable output (docs/CLI-JSON.md)")
    p.add_argument(
        "--html",
        type=Path,
        metavar="OUT.html",
        help="also write a self-contained page: latency histogram and, with --perf-debug, a bar per layer and the "
        "op-type ranking",
    )
    p.add_argument(
        "--trace",
        type=Path,
        metavar="OUT.json",
        help="also write a Chrome trace / Perfetto JSON (open in chrome://tracing or ui.perfetto.dev); "
        "per-layer events need --perf-debug",
    )
    from rkfarm.cli.farm import add_sweep_options

    add_sweep_options(p)
    p.set_defaults(func=cmd_perf)
    m = sub.add_parser(
        "mem",
        help="memory used by a model package on an agent (or the simulator)",
        description="Open the package and report its memory: weights, internal (activations), other, total.",
        epilog="examples:\n  rkfarm mem cls.rkfm\n  rkfarm mem cls.rkfm --device 192.168.1.40:50551 --json",
    )
    m.add_argument("model", type=Path, help="model package (.rkfm)")
    _add_device_args(m)
    m.add_argument("--json", action="store_true", help="machine-readable output (docs/CLI-JSON.md)")
    m.set_defaults(func=cmd_mem)


def cmd_devices(args: argparse.Namespace) -> int:
    from rkfarm.remote.discovery import format_devices, list_devices

    devices = list_devices(args.timeout)
    if args.json:
        print(json.dumps([d.to_dict() for d in devices], indent=2))
    else:
        print(format_devices(devices))
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    if getattr(args, "devices", None):  # a sweep over many boards (cli/farm.py)
        from rkfarm.cli.farm import cmd_sweep

        return cmd_sweep(args)
    from rkfarm.perf import PerfReport
    from rkfarm_proto.records import PerfOptions

    try:
        options = PerfOptions(args.runs, args.warmup, args.perf_debug)
    except ValueError as exc:
        raise RkfarmError(str(exc)) from None
    with _opened(args, perf_debug=args.perf_debug) as (_, runtime):
        report = PerfReport(runtime.eval_perf(options))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    import sys

    if args.html is not None:
        print(f"wrote {report.to_html(args.html, title=args.model.name)}", file=sys.stderr)
    if args.trace is not None:
        print(f"wrote {report.to_chrome_trace(args.trace, title=args.model.name)}", file=sys.stderr)
    return 0


def cmd_mem(args: argparse.Namespace) -> int:
    from rkfarm.perf import format_memory, memory_dict

    with _opened(args) as (_, runtime):
        result = memory_dict(runtime.eval_memory(), runtime.where)
    print(json.dumps(result, indent=2) if args.json else format_memory(result))
    return 0


def register(sub: Any) -> None:
    """Add this module's subcommands."""
    _add_devices(sub)
    _add_perf_mem(sub)
