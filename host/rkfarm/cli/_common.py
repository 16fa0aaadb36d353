"""Helpers the command modules share: argument types, the --device options, opening a runtime."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rkfarm.config import QUANTIZED_ALGORITHMS, QUANTIZED_METHODS, RknnConfig
from rkfarm_proto.platforms import NPU_CORE_AUTO

if TYPE_CHECKING:
    from rkfarm.runtime import Runtime
    from rkfarm_proto.package import ModelPackage


DEFAULTS = RknnConfig()  # config()'s defaults, which every CLI default repeats by reference, never by value


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


def _add_quant_choices(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--algorithm", choices=QUANTIZED_ALGORITHMS, default=DEFAULTS.quantized_algorithm,
        help=f"calibration algorithm (default {DEFAULTS.quantized_algorithm})",
    )  # fmt: skip
    p.add_argument(
        "--method", choices=QUANTIZED_METHODS, default=DEFAULTS.quantized_method,
        help=f"weights per channel or per layer (default {DEFAULTS.quantized_method})",
    )  # fmt: skip


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", metavar="ID|HOST:PORT",
        help="run on this agent (an id from `rkfarm devices`, or host:port); default: the simulator",
    )  # fmt: skip
    p.add_argument("--target", metavar="PLATFORM", help="platform to ask for (default: the agent's own)")
    p.add_argument(
        "--core-mask", type=lambda v: int(v, 0), default=NPU_CORE_AUTO, help="NPU core mask, e.g. 0x1 (default auto)"
    )


@contextlib.contextmanager
def _opened(args: argparse.Namespace, perf_debug: bool = False) -> Iterator[tuple[ModelPackage, Runtime]]:
    """The package of ``args.model`` open on ``--device`` (or the simulator), closed on the way out so that no
    session outlives the command."""
    from rkfarm.packages import load_package
    from rkfarm.targets import device_target, open_agent, open_simulator
    from rkfarm_proto.records import LoadOptions

    package = load_package(args.model)
    options = LoadOptions(core_mask=args.core_mask, perf_debug=perf_debug)
    if getattr(args, "device", None):
        target, device = device_target(args.device, package, args.target)
        runtime = open_agent(package, target, device.address, options)
    else:
        runtime = open_simulator(package, options)
    try:
        yield package, runtime
    finally:
        runtime.close()
