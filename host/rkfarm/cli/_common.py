"""Helpers the command modules share: argument types, the --device options, opening a runtime.

Imports stay light (no numpy, protobuf or ONNX at module level): every command module imports this one while
``rkfarm --help`` builds its parser.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rkfarm.config import QUANTIZED_ALGORITHMS, QUANTIZED_METHODS, RknnConfig
from rkfarm.errors import RkfarmError
from rkfarm_proto.platforms import (
    CORE_MASKS,
    NPU_CORE_0,
    NPU_CORE_0_1,
    NPU_CORE_0_1_2,
    NPU_CORE_1,
    NPU_CORE_2,
    NPU_CORE_ALL,
    NPU_CORE_AUTO,
)

if TYPE_CHECKING:
    from rkfarm.runtime import Runtime
    from rkfarm_proto.package import ModelPackage

log = logging.getLogger("rkfarm.cli")
DEFAULTS = RknnConfig()  # config()'s defaults, which every CLI default repeats by reference, never by value
CORE_MASK_NAMES = {
    "auto": NPU_CORE_AUTO,
    "0": NPU_CORE_0,
    "1": NPU_CORE_1,
    "2": NPU_CORE_2,
    "0_1": NPU_CORE_0_1,
    "0_1_2": NPU_CORE_0_1_2,
    "all": NPU_CORE_ALL,
}


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


def core_mask(text: str) -> int:
    """``--core-mask``: a mask number (0x1, 3) or a name (auto, 0, 1, 2, 0_1, 0_1_2, all; NPU_CORE_ prefix allowed)."""
    key = text.strip().lower().removeprefix("npu_core_")
    if key in CORE_MASK_NAMES:
        return CORE_MASK_NAMES[key]
    try:
        value = int(key, 0)
    except ValueError:
        value = -1
    if value not in CORE_MASKS:
        raise argparse.ArgumentTypeError(
            f"not an NPU core mask: {text!r}; use auto, 0, 1, 2, 0_1, 0_1_2 or all (or the masks 0x0, 0x1, 0x2, "
            "0x4, 0x3, 0x7, 0xffff)"
        )
    return value


def device_address(value: str) -> str:
    """``--device``: an agent id, or an address; an IP address without a port gets the default port, and
    ``host:`` with an empty port is refused."""
    import ipaddress

    text = value.strip()
    host = text[1:].partition("]")[0] if text.startswith("[") else text.rpartition(":")[0] or text
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    if not is_ip and ":" not in text:
        return text  # an agent id (or a host name: give host:port for that)
    from rkfarm.remote.discovery import agent_address

    try:
        return agent_address(text, "--device")
    except RkfarmError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--device: ")) from None


def add_quant_choices(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--algorithm", choices=QUANTIZED_ALGORITHMS, default=DEFAULTS.quantized_algorithm,
        help=f"calibration algorithm (default {DEFAULTS.quantized_algorithm})",
    )  # fmt: skip
    p.add_argument(
        "--method", choices=QUANTIZED_METHODS, default=DEFAULTS.quantized_method,
        help=f"weights per channel or per layer (default {DEFAULTS.quantized_method})",
    )  # fmt: skip


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", metavar="ID|HOST[:PORT]", type=device_address,
        help="run on this agent (an id from `rkfarm devices`, or host:port; an IP address alone means the default "
        "port 50551); default: the simulator in this process",
    )  # fmt: skip
    p.add_argument("--target", metavar="PLATFORM", help="platform to ask for, e.g. rk3588 (default: the agent's own)")
    p.add_argument(
        "--core-mask", type=core_mask, default=NPU_CORE_AUTO, metavar="MASK",
        help="NPU cores to run on: auto, 0, 1, 2, 0_1, 0_1_2, all or a mask such as 0x3 (default auto)",
    )  # fmt: skip


# the names the modules used before the split; kept for the command modules that still say them
_add_quant_choices = add_quant_choices
_add_device_args = add_device_args


def require_quantize_for_dataset(args: argparse.Namespace) -> None:
    """``--dataset`` only means something with ``--quantize``: refuse it rather than ignore it."""
    if getattr(args, "dataset", None) and not getattr(args, "quantize", False):
        raise RkfarmError("--dataset is the calibration set of an int8 build: add --quantize (or drop --dataset)")


@contextlib.contextmanager
def _opened(args: argparse.Namespace, perf_debug: bool = False) -> Iterator[tuple[ModelPackage, Runtime]]:
    """The package of ``args.model`` open on ``--device`` (or the simulator), closed on the way out so that no
    session outlives the command (the agent's session is unloaded, not left to its lease)."""
    from rkfarm.packages import load_package
    from rkfarm.targets import device_target, open_agent, open_simulator
    from rkfarm_proto.records import LoadOptions

    package = load_package(args.model)
    options = LoadOptions(core_mask=args.core_mask, perf_debug=perf_debug)
    if getattr(args, "device", None):
        target, device = device_target(args.device, package, args.target)
        runtime = open_agent(package, target, device.address, options)
    else:
        if getattr(args, "target", None):
            log.info("--target %s without --device: running on the simulator", args.target)
        runtime = open_simulator(package, options)
    try:
        yield package, runtime
    finally:
        runtime.close()
