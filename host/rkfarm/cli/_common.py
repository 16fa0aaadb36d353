"""Helpers the command modules share: argument types, the --device options, opening a runtime."""

from __future__ import annotations

import argparse
from typing import Any


def _shape(text: str) -> list[int]:
    try:
        dims = [int(d) for d in text.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (write e.g. 1,3,224,224)") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (positive dims, e.g. 1,3,224,224)")
    return dims


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r} (write e.g. 127.5,127.5,127.5)") from None


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", metavar="ID|HOST:PORT",
        help="run on this agent (an id from `rkfarm devices`, or host:port); default: the simulator",
    )  # fmt: skip
    p.add_argument("--target", metavar="PLATFORM", help="platform to ask for (default: the agent's own)")
    p.add_argument("--core-mask", type=lambda v: int(v, 0), default=0, help="NPU core mask, e.g. 0x1 (default auto)")


def _open_runtime(args: argparse.Namespace, perf_debug: bool = False) -> Any:
    """An RKNN with the package loaded and a runtime open on --device (or the simulator)."""
    from rkfarm.api import RKNN

    rknn = RKNN(raise_errors=True)
    rknn.load_rknn(args.model)
    if not getattr(args, "device", None):
        rknn.init_runtime(perf_debug=perf_debug, core_mask=args.core_mask)
        return rknn
    from rkfarm import discovery
    from rkfarm_proto.platforms import UNKNOWN

    device = discovery.resolve(args.device, None)
    package = rknn.package
    assert package is not None
    target = args.target or (device.platform if device.platform != UNKNOWN else "") or package.header.target_platform
    rknn.init_runtime(
        target=target or "rk3588", device_id=device.address, perf_debug=perf_debug, core_mask=args.core_mask
    )
    return rknn
