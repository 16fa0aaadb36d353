"""``rkfarm-agent``: the board daemon's command line. Every option can also come from the environment
(``RKFARM_AGENT_<OPTION>``, e.g. ``RKFARM_AGENT_PORT=50551``), which is how deploy/ configures the service."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rkfarm_agent import __version__
from rkfarm_agent.config import DEFAULT_PORT, AgentConfig

EPILOG = """\
examples:
  rkfarm-agent serve                                  # all interfaces, port 50551, advertised by mDNS
  rkfarm-agent serve --port 6000 --no-advertise       # reach it with host:port or an inventory file
  rkfarm-agent serve --host 127.0.0.1 --port 0 --mdns-interface 127.0.0.1 --port-file /tmp/port
  rkfarm-agent info --json                            # what this board is: platform, backends, versions

Every option has an environment variable: RKFARM_AGENT_ plus the option name in capitals with _ for -,
e.g. RKFARM_AGENT_STORE_DIR=/var/lib/rkfarm-agent RKFARM_AGENT_MAX_SESSIONS=8.
"""

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """'512M', '2G', '1048576' -> bytes."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = t[-1] if t and t[-1] in _UNITS else ""
    try:
        value = float(t[: len(t) - len(unit)] if unit else t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (write e.g. 512M or 2G)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return int(value * _UNITS[unit])


def _env(name: str, default: object) -> object:
    return os.environ.get("RKFARM_AGENT_" + name.upper().replace("-", "_"), default)


def _bool_env(name: str, default: bool) -> bool:
    value = _env(name, None)
    return default if value is None else str(value).lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    defaults = AgentConfig()
    parser = argparse.ArgumentParser(
        prog="rkfarm-agent",
        description="rkfarm board agent: runs model packages for rkfarm hosts over gRPC, found by mDNS.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rkfarm-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the daemon", description="Serve until SIGTERM/SIGINT (graceful).")
    serve.add_argument("--host", default=_env("host", defaults.host), help="listen address (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=int(str(_env("port", DEFAULT_PORT))), help="0 = any free port")
    serve.add_argument("--store-dir", type=Path, default=Path(str(_env("store-dir", defaults.store_dir))))
    serve.add_argument(
        "--store-capacity", type=parse_size, default=_env("store-capacity", defaults.store_capacity_bytes),
        help="model store size cap; least recently used models are evicted (default 2G)",
    )  # fmt: skip
    serve.add_argument(
        "--max-upload", type=parse_size, default=_env("max-upload", defaults.max_upload_bytes),
        help="largest model upload accepted (default 512M)",
    )  # fmt: skip
    serve.add_argument(
        "--max-message", type=parse_size, default=_env("max-message", defaults.max_message_bytes),
        help="largest inference request/response (default 128M)",
    )  # fmt: skip
    serve.add_argument("--max-sessions", type=int, default=int(str(_env("max-sessions", defaults.max_sessions))))
    serve.add_argument(
        "--max-sessions-per-client", type=int,
        default=int(str(_env("max-sessions-per-client", defaults.max_sessions_per_client))),
    )  # fmt: skip
    serve.add_argument(
        "--lease", type=float, default=float(str(_env("lease", defaults.default_lease_s))),
        help="seconds an idle session lives without calls or keep-alives (default 60)",
    )  # fmt: skip
    serve.add_argument(
        "--max-request-seconds", type=float, default=float(str(_env("max-request-seconds", defaults.max_request_s))),
        help="upper bound on one long call such as EvalPerf (default 120)",
    )  # fmt: skip
    serve.add_argument(
        "--advertise", action=argparse.BooleanOptionalAction, default=_bool_env("advertise", True),
        help="announce the agent by mDNS (default on)",
    )  # fmt: skip
    serve.add_argument(
        "--mdns-interface", action="append", metavar="IP",
        default=[i for i in str(_env("mdns-interface", "")).split(",") if i] or None,
        help="advertise only on this interface address (repeatable; default all)",
    )  # fmt: skip
    serve.add_argument("--id", default=_env("id", None), help="agent id (default: stable id kept in the store)")
    serve.add_argument("--platform", default=_env("platform", None), help="override the detected platform")
    serve.add_argument("--grace", type=float, default=float(str(_env("grace", defaults.grace_s))))
    serve.add_argument(
        "--farm-key-file", action="append", type=Path, metavar="PATH",
        default=[Path(p) for p in str(_env("farm-key-file", "")).split(",") if p] or None,
        help="farm key that opens encrypted models (mode 0600; repeatable, for key rotation)",
    )  # fmt: skip
    serve.add_argument("--port-file", type=Path, help="write the bound port here once serving (for scripts)")
    serve.add_argument("-v", "--verbose", action="count", default=0)

    info = sub.add_parser("info", help="describe this machine as the agent would report it")
    info.add_argument("--platform", default=_env("platform", None))
    info.add_argument("--json", action="store_true")
    return parser


def _config(args: argparse.Namespace) -> AgentConfig:
    return AgentConfig(
        host=args.host,
        port=args.port,
        store_dir=args.store_dir,
        store_capacity_bytes=int(args.store_capacity),
        max_upload_bytes=int(args.max_upload),
        max_message_bytes=int(args.max_message),
        max_sessions=args.max_sessions,
        max_sessions_per_client=args.max_sessions_per_client,
        default_lease_s=args.lease,
        max_request_s=args.max_request_seconds,
        advertise=args.advertise,
        mdns_interfaces=args.mdns_interface or [],
        agent_id=args.id,
        platform=args.platform,
        grace_s=args.grace,
        farm_key_files=args.farm_key_file or [],
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from rkfarm_agent.server import AgentServer

    server = AgentServer(_config(args))
    port = server.start()
    if args.port_file:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(args.port_file)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: done.set())
    done.wait()
    logging.getLogger("rkfarm_agent").info("shutting down")
    server.stop()
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from rkfarm_agent import system
    from rkfarm_agent.backends import available_backends
    from rkfarm_proto.platforms import NPU_CORES

    platform, soc = system.detect_platform(args.platform)
    data = {
        "platform": platform,
        "soc_compatible": soc,
        "npu_cores": NPU_CORES.get(platform, 0),
        "backends": available_backends(),
        "cpu_count": system.cpu_count(),
        "memory_total_bytes": system.memory_total_bytes(),
        "versions": system.versions(),
    }
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            print(f"{key:<20}{value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.INFO if getattr(args, "verbose", 0) <= 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    if getattr(args, "verbose", 0) == 0:
        logging.getLogger("zeroconf").setLevel(logging.WARNING)
    try:
        return cmd_serve(args) if args.command == "serve" else cmd_info(args)
    except (OSError, ValueError) as exc:
        print(f"rkfarm-agent: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
