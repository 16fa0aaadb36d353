"""`rkfarm vendor setup` and `rkfarm vendor status`: the vendor's RKNN-Toolkit2 in its side environment."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _add_vendor(sub: Any) -> None:
    p = sub.add_parser(
        "vendor",
        help="set up or check the vendor's RKNN-Toolkit2 (for `rkfarm build --compiler vendor`)",
        description="The vendor's toolkit pins numpy, onnx and protobuf below rkfarm's, so it lives in its own "
        "virtual environment: RKFARM_VENDOR_PYTHON names its python, else RKFARM_VENDOR_ENV or "
        "~/.cache/rkfarm/vendor-venv holds it. rkfarm runs it in a subprocess.",
        epilog="examples:\n  rkfarm -v vendor setup\n  rkfarm vendor status --json",
    )
    actions = p.add_subparsers(dest="vendor_command", metavar="ACTION", required=True)
    setup = actions.add_parser(
        "setup",
        help="make (or reuse) the side environment with RKNN-Toolkit2 2.5.0 from PyPI",
        description="Create a virtual environment and install rknn-toolkit2 2.5.0 (without its dependency list), "
        "then its dependencies at pins that fit together (numpy 1.26.4, onnx 1.18.0, protobuf 4.25.4, ...) and "
        "torch 2.13.0. An environment that already runs the toolkit is reused. Takes a few minutes; -v shows "
        "the steps.",
        epilog="examples:\n  rkfarm vendor setup -v\n  rkfarm vendor setup --env /opt/rknn-venv --json",
    )
    setup.add_argument("--env", type=Path, metavar="DIR", help="where (default: RKFARM_VENDOR_ENV or the cache)")
    setup.add_argument("--json", action="store_true", help="print the resulting status as JSON")
    setup.set_defaults(func=cmd_setup)
    status = actions.add_parser(
        "status",
        help="say which vendor python is used and whether it runs the toolkit",
        description="Which python runs the vendor's toolkit (RKFARM_VENDOR_PYTHON, RKFARM_VENDOR_ENV or the cache) "
        "and whether it imports RKNN-Toolkit2; exits 1 when it does not.",
        epilog="examples:\n  rkfarm vendor status\n"
        "  RKFARM_VENDOR_PYTHON=/opt/rknn/bin/python rkfarm vendor status --json",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output (docs/CLI-JSON.md)")
    status.set_defaults(func=cmd_status)


def _print(state: Any, as_json: bool) -> None:
    data = {
        "python": str(state.python),
        "source": state.source,
        "ready": state.ready,
        "toolkit": state.toolkit,
        "detail": state.detail,
    }
    if as_json:
        print(json.dumps(data, indent=2))
    elif state.ready:
        print(f"RKNN-Toolkit2 {state.toolkit} ready: {state.python} (from {state.source})")
    else:
        print(f"not ready: {state.detail} (from {state.source})")


def cmd_setup(args: argparse.Namespace) -> int:
    from rkfarm.vendor import setup

    _print(setup(args.env), args.json)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from rkfarm.vendor import MISSING, status

    state = status()
    _print(state, args.json)
    if not state.ready and not args.json:
        print(MISSING)
    return 0 if state.ready else 1


def register(sub: Any) -> None:
    """Add this module's subcommands."""
    _add_vendor(sub)
