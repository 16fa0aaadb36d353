"""``rkfarm-agent``: the board daemon's command line. Every option can also come from the environment
(``RKFARM_AGENT_<OPTION>``, e.g. ``RKFARM_AGENT_PORT=50551``), which is how deploy/ configures the service."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from rkfarm_agent import __version__
from rkfarm_agent.config import DEFAULT_PORT, AgentConfig, MiB
from rkfarm_proto.errors import RkfarmError
from rkfarm_proto.transport import MAX_MESSAGE_BYTES

EPILOG = """\
examples:
  rkfarm-agent serve                                  # all interfaces, port 50551, advertised by mDNS
  rkfarm-agent serve --port 6000 --no-advertise       # reach it with host:port or an inventory file
  rkfarm-agent serve --host 127.0.0.1 --port 0 --mdns-interface 127.0.0.1 --port-file /tmp/port
  rkfarm-agent info --json                            # what this board is: platform, backends, versions
  rkfarm-agent doctor                                 # what the NPU path lacks here, one line each with the fix

Every option has an environment variable: RKFARM_AGENT_ plus the option name in capitals with _ for -,
e.g. RKFARM_AGENT_STORE_DIR=/var/lib/rkfarm-agent RKFARM_AGENT_MAX_SESSIONS=8.
"""

CERTS_EPILOG = """\
examples:
  rkfarm-agent certs --out lab-pki --agent-name rock5b-1 --host 192.168.1.40 --client alice
  rkfarm-agent certs --out lab-pki --agent-name rock5b-2 --host 192.168.1.41   # same CA, next board

then on the board:   rkfarm-agent serve --tls-cert agent-rock5b-1.pem --tls-key agent-rock5b-1.key \\
                                        --tls-client-ca ca.pem          # (mTLS; leave out for TLS only)
and on the host:     RKFARM_TLS_CA=lab-pki/ca.pem RKFARM_TLS_CERT=lab-pki/client-alice.pem \\
                     RKFARM_TLS_KEY=lab-pki/client-alice.key rkfarm devices
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


TAG_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
TAG_VALUE = re.compile(r"[A-Za-z0-9_.:/+-]{0,64}\Z")
MAX_TAGS = 32


def parse_tag(text: str) -> tuple[str, str]:
    """'lab=2' -> ('lab', '2'); 'camera' -> ('camera', '')."""
    name, _, value = text.strip().partition("=")
    if not TAG_NAME.match(name):
        raise argparse.ArgumentTypeError(
            f"not a tag: {text!r} (a name of up to 32 letters, digits, '_', '.' or '-', then optionally =VALUE)"
        )
    if not TAG_VALUE.match(value):
        raise argparse.ArgumentTypeError(
            f"tag {name!r}: value {value[:80]!r} may hold up to 64 letters, digits and '_.:/+-' (no commas or spaces)"
        )
    return name, value


def check_tags(tags: list[tuple[str, str]]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise ValueError(f"--tag: at most {MAX_TAGS} tags")
    return dict(tags)


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

    serve = sub.add_parser(
        "serve",
        help="run the daemon",
        description="Serve until SIGTERM/SIGINT (graceful). Every option can also be set in the environment (list "
        "below); the command line wins.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default=_env("host", defaults.host), help="listen address (default 0.0.0.0)")
    serve.add_argument(
        "--port", type=int, default=int(str(_env("port", DEFAULT_PORT))),
        help=f"listen port; 0 = any free port (default {DEFAULT_PORT})",
    )  # fmt: skip
    serve.add_argument(
        "--store-dir", type=Path, default=Path(str(_env("store-dir", defaults.store_dir))), metavar="DIR",
        help=f"model store, agent id and identity key (default {defaults.store_dir})",
    )  # fmt: skip
    serve.add_argument(
        "--store-capacity", type=parse_size, default=_env("store-capacity", defaults.store_capacity_bytes),
        help="cap on the store's disk use: models, unfinished uploads and quarantine; least recently used "
        "models are evicted (default 2G)",
    )  # fmt: skip
    serve.add_argument(
        "--partial-max-age-seconds", type=float,
        default=float(str(_env("partial-max-age-seconds", defaults.partial_max_age_s))),
        help="delete an unfinished upload with no write for this long, at start-up and when the store needs "
        "room; one in progress is kept (default 3600)",
    )  # fmt: skip
    serve.add_argument(
        "--max-upload", type=parse_size, default=_env("max-upload", defaults.max_upload_bytes),
        help="largest model upload accepted (default 512M)",
    )  # fmt: skip
    serve.add_argument(
        "--max-message", type=parse_size, default=_env("max-message", defaults.max_message_bytes),
        help="largest inference request/response (default 128M)",
    )  # fmt: skip
    serve.add_argument(
        "--max-sessions", type=int, default=int(str(_env("max-sessions", defaults.max_sessions))),
        help=f"models open at once, all clients together (default {defaults.max_sessions})",
    )  # fmt: skip
    serve.add_argument(
        "--max-sessions-per-client", type=int,
        default=int(str(_env("max-sessions-per-client", defaults.max_sessions_per_client))),
        help=f"sessions one client host may hold (default {defaults.max_sessions_per_client})",
    )  # fmt: skip
    serve.add_argument(
        "--lease", type=float, default=float(str(_env("lease", defaults.default_lease_s))),
        help="seconds an idle session lives without calls or keep-alives (default 60)",
    )  # fmt: skip
    serve.add_argument(
        "--max-hold-seconds", type=float, default=float(str(_env("max-hold-seconds", defaults.max_hold_s))),
        help="longest lease of an exclusive hold (Hold, or an exclusive Load's session): a holder renews it; one "
        "that stops is gone after this at most (default 3600)",
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
    serve.add_argument(
        "--tag", action="append", type=parse_tag, metavar="NAME[=VALUE]",
        default=[parse_tag(t) for t in str(_env("tag", "")).split(",") if t.strip()] or None,
        help="a free-form label hosts select boards by (repeatable: --tag lab=2 --tag camera; selector "
        "'tag:camera,lab=2'); advertised by mDNS and in Info",
    )  # fmt: skip
    serve.add_argument(
        "--grace", type=float, default=float(str(_env("grace", defaults.grace_s))), metavar="SECONDS",
        help=f"on SIGTERM, how long calls in flight may finish (default {defaults.grace_s:g})",
    )  # fmt: skip
    serve.add_argument(
        "--farm-key-file", action="append", type=Path, metavar="PATH",
        default=[Path(p) for p in str(_env("farm-key-file", "")).split(",") if p] or None,
        help="farm key that opens encrypted models (mode 0600; repeatable, for key rotation)",
    )  # fmt: skip
    serve.add_argument(
        "--max-crypt-level", type=int, choices=(1, 2, 3),
        default=int(str(_env("max-crypt-level", defaults.max_crypt_level))),
        help="highest encryption level to open (3: scrypt with 128 MiB per Load; 2: 32 MiB; 1: no KDF)",
    )  # fmt: skip
    serve.add_argument(
        "--custom-ops", action="append", metavar="MODULE",
        default=[m for m in str(_env("custom-ops", "")).split(",") if m] or None,
        help="an installed Python module whose custom-op classes (op_type, compute) models may use (repeatable); "
        "clients never send code",
    )  # fmt: skip
    serve.add_argument("--port-file", type=Path, help="write the bound port here once serving (for scripts)")
    serve.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    _add_access_options(serve.add_argument_group("access control (README: Security)"))
    _add_limit_options(serve.add_argument_group("limits under load"), defaults)
    serve.epilog = SERVE_EXAMPLES + env_epilog(serve)

    info = sub.add_parser(
        "info",
        help="describe this machine as the agent would report it",
        description="The platform, NPU cores, backends, CPUs, memory and versions the agent reports in Info.",
        epilog="examples:\n  rkfarm-agent info\n  rkfarm-agent info --json | jq .backends\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("--platform", default=_env("platform", None), help="override the detected platform")
    info.add_argument("--json", action="store_true", help="machine-readable output")

    doctor = sub.add_parser(
        "doctor",
        help="say what this board lacks for the NPU path, one line per check with its fix",
        description="Checks what running vendor .rknn models on the NPU needs: an Arm board whose device tree names "
        "a Rockchip SoC, Rockchip's rknpu driver (/dev/rknpu or its /dev/dri node) that this user may open, and "
        "librknnrt.so. Exits 0 when the NPU path is ready, 1 when something is missing (rkfarm packages run on "
        "the CPU either way). Hosts see the same facts in Info.system.",
        epilog="examples:\n  rkfarm-agent doctor\n  sudo -u rkfarm /opt/rkfarm/venv/bin/rkfarm-agent doctor   "
        "# as the service user\n  rkfarm-agent doctor --json | jq .checks\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")

    certs = sub.add_parser(
        "certs",
        help="make a lab CA and TLS certificates for agents and hosts",
        description="Create (or reuse) a lab CA in --out and issue an agent certificate and client certificates. "
        "Private keys are written with mode 0600; existing files are never overwritten.",
        epilog=CERTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    certs.add_argument("--out", type=Path, required=True, help="folder for ca.pem/ca.key and the certificates")
    certs.add_argument("--agent-name", help="issue agent-NAME.pem/.key (SANs: NAME, NAME.local, localhost, 127.0.0.1)")
    certs.add_argument(
        "--host", action="append", default=[], metavar="IP_OR_DNS", help="another SAN for the agent (repeatable)"
    )
    certs.add_argument(
        "--client", action="append", default=[], metavar="NAME", help="issue client-NAME.pem/.key for mTLS (repeatable)"
    )
    certs.add_argument("--days", type=int, default=825, help="validity of the issued certificates (default 825)")
    return parser


SERVE_EXAMPLES = """\
examples:
  rkfarm-agent serve
  rkfarm-agent serve --port 6000 --no-advertise --token-file /etc/rkfarm-agent/token
  RKFARM_AGENT_STORE_DIR=/var/lib/rkfarm-agent RKFARM_AGENT_MAX_SESSIONS=8 rkfarm-agent serve

"""


def env_variable(option: str) -> str:
    return "RKFARM_AGENT_" + option.removeprefix("--").upper().replace("-", "_")


def env_epilog(parser: argparse.ArgumentParser) -> str:
    """The environment variable of every option of ``parser`` (what deploy/agent.env sets)."""
    names = [
        next(s for s in a.option_strings if s.startswith("--")) for a in parser._actions
        if any(s.startswith("--") for s in a.option_strings) and a.dest not in ("help", "verbose", "port_file")
    ]  # fmt: skip
    width = max(len(env_variable(n)) for n in names) + 2
    lines = [f"  {env_variable(n):<{width}}{n}" for n in names]
    return (
        "environment variables (one per option; lists comma-separated; booleans 1/0, true/false):\n"
        + "\n".join(lines)
        + "\n"
    )


def _path_env(name: str) -> Path | None:
    value = _env(name, None)
    return Path(str(value)) if value else None


def _add_access_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--token-file", type=Path, default=_path_env("token-file"), metavar="PATH",
        help="require 'authorization: Bearer <token>' on every call; the token is read from this file (mode 0600)",
    )  # fmt: skip
    group.add_argument("--tls-cert", type=Path, default=_path_env("tls-cert"), metavar="PEM", help="serve TLS")
    group.add_argument("--tls-key", type=Path, default=_path_env("tls-key"), metavar="PEM", help="key (mode 0600)")
    group.add_argument(
        "--tls-client-ca", type=Path, default=_path_env("tls-client-ca"), metavar="PEM",
        help="mTLS: require client certificates signed by this CA",
    )  # fmt: skip
    group.add_argument(
        "--open-health", action=argparse.BooleanOptionalAction, default=_bool_env("open-health", False),
        help="health checks and reflection answer without the token (default off)",
    )  # fmt: skip


def _add_limit_options(group: argparse._ArgumentGroup, defaults: AgentConfig) -> None:
    group.add_argument(
        "--max-concurrent-runs", type=int, default=int(str(_env("max-concurrent-runs", defaults.max_concurrent_runs))),
        help=f"model runs at once (default 2 x CPUs = {defaults.max_concurrent_runs})",
    )  # fmt: skip
    group.add_argument(
        "--max-run-wait-seconds", type=float,
        default=float(str(_env("max-run-wait-seconds", defaults.max_run_wait_s))),
        help="longest wait for a run slot before RESOURCE_EXHAUSTED (default 10)",
    )  # fmt: skip
    group.add_argument(
        "--max-streams", type=int, default=int(str(_env("max-streams", defaults.max_streams))),
        help=f"InferStream calls open at once (default {defaults.max_streams})",
    )  # fmt: skip
    group.add_argument(
        "--max-streams-per-client", type=int,
        default=int(str(_env("max-streams-per-client", defaults.max_streams_per_client))),
        help=f"InferStream calls one client host may hold open (default {defaults.max_streams_per_client})",
    )  # fmt: skip
    group.add_argument(
        "--max-uploads", type=int, default=int(str(_env("max-uploads", defaults.max_uploads))),
        help=f"uploads at once, half of them per client (default {defaults.max_uploads})",
    )  # fmt: skip
    group.add_argument(
        "--stream-stall-seconds", type=float, default=float(str(_env("stream-stall-seconds", defaults.stream_stall_s))),
        help="cancel a stream whose client has not read a response for this long (default 60)",
    )  # fmt: skip
    group.add_argument(
        "--max-connections", type=int, default=int(str(_env("max-connections", defaults.max_connections))),
        help=f"open connections, handshakes included; more are closed at once (default {defaults.max_connections})",
    )  # fmt: skip
    group.add_argument(
        "--handshake-timeout-seconds", type=float,
        default=float(str(_env("handshake-timeout-seconds", defaults.handshake_timeout_s))),
        help="close a connection that has not finished TLS and HTTP/2 set-up in this time (default 10)",
    )  # fmt: skip
    group.add_argument(
        "--connection-idle-seconds", type=float,
        default=float(str(_env("connection-idle-seconds", defaults.connection_idle_s))),
        help="close a connection that carried no call for this long; clients reconnect (default 300)",
    )  # fmt: skip


def _config(args: argparse.Namespace) -> AgentConfig:
    if not 0 < int(args.max_message) <= MAX_MESSAGE_BYTES:
        raise ValueError(f"--max-message must be between 1 byte and {MAX_MESSAGE_BYTES // MiB}M, what hosts accept")
    if args.partial_max_age_seconds < 0:
        raise ValueError("--partial-max-age-seconds must be 0 or more")
    if not args.max_hold_seconds > 0:
        raise ValueError("--max-hold-seconds must be above 0")
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
        max_hold_s=args.max_hold_seconds,
        max_request_s=args.max_request_seconds,
        advertise=args.advertise,
        mdns_interfaces=args.mdns_interface or [],
        agent_id=args.id,
        tags=check_tags(args.tag or []),
        platform=args.platform,
        grace_s=args.grace,
        farm_key_files=args.farm_key_file or [],
        max_crypt_level=args.max_crypt_level,
        token_file=args.token_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        open_health=args.open_health,
        max_concurrent_runs=args.max_concurrent_runs,
        max_run_wait_s=args.max_run_wait_seconds,
        max_streams=args.max_streams,
        max_streams_per_client=args.max_streams_per_client,
        max_uploads=args.max_uploads,
        stream_stall_s=args.stream_stall_seconds,
        max_connections=args.max_connections,
        handshake_timeout_s=args.handshake_timeout_seconds,
        connection_idle_s=args.connection_idle_seconds,
        partial_max_age_s=args.partial_max_age_seconds,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from rkfarm_agent.backends.onnxruntime import custom_ops
    from rkfarm_agent.server import AgentServer

    config = _config(args)
    _check_port_free(config.host, config.port)
    if args.custom_ops:
        ops = custom_ops.load_modules(args.custom_ops)
        logging.getLogger("rkfarm_agent").info("custom ops from %s: %s", ", ".join(args.custom_ops), ", ".join(ops))
    server = AgentServer(config)
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


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on before gRPC tries it (its C core would first print its own
    error line to stderr); gRPC still has the last word, this only makes the common case one clean line."""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise OSError(f"cannot listen on {shown}: {exc.strerror} (is another agent using the port?)") from None


def error_line(exc: BaseException) -> str:
    """One line for an expected failure: ``path: reason`` for an OSError naming a file."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split("\n")) or type(exc).__name__


def cmd_info(args: argparse.Namespace) -> int:
    from rkfarm_agent import system
    from rkfarm_agent.backends import available_backends, backend_versions
    from rkfarm_proto.platforms import NPU_CORES

    platform, soc = system.detect_platform(args.platform)
    data = {
        "platform": platform,
        "soc_compatible": soc,
        "npu_cores": NPU_CORES.get(platform, 0),
        "backends": available_backends(),
        "cpu_count": system.cpu_count(),
        "memory_total_bytes": system.memory_total_bytes(),
        "versions": {**system.versions(), **backend_versions()},
        "system": dataclasses.asdict(system.board_facts()),  # what Info.system reports (rkfarm-agent doctor)
    }
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            print(f"{key:<20}{value}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from rkfarm_agent import doctor

    if args.json:
        data = doctor.report()
        print(json.dumps(data, indent=2))
        return 0 if data["npu_ready"] else 1
    lines, ready = doctor.lines()
    print("\n".join(lines))
    return 0 if ready else 1


def cmd_certs(args: argparse.Namespace) -> int:
    from rkfarm_agent.certs import make_lab_pki

    if args.agent_name is None and not args.client:
        raise ValueError("say what to issue: --agent-name NAME and/or --client NAME")
    pki = make_lab_pki(args.out, args.agent_name, args.host, args.client, args.days)
    print(f"CA          {pki.ca_cert} ({'reused' if pki.ca_reused else 'new'}; keep {pki.ca_key} off the boards)")
    if pki.agent_cert is not None:
        print(f"agent       {pki.agent_cert}  {pki.agent_key}")
    for name, (cert, key) in pki.clients.items():
        print(f"client      {cert}  {key}  ({name})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.INFO if getattr(args, "verbose", 0) <= 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    if getattr(args, "verbose", 0) == 0:
        logging.getLogger("zeroconf").setLevel(logging.WARNING)
    try:
        commands = {"serve": cmd_serve, "info": cmd_info, "certs": cmd_certs, "doctor": cmd_doctor}
        return commands[args.command](args)
    except (OSError, ValueError, ImportError, RkfarmError) as exc:
        print(f"rkfarm-agent: error: {error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
