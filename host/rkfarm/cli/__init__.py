"""The ``rkfarm`` command line: a thin layer over the library. Errors print one line and exit 1.

One module per group of commands; each adds its subcommands to the parser here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rkfarm import __version__
from rkfarm.cli import boards, codegen, crypto, models, quant, vendor
from rkfarm.errors import RkfarmError

EPILOG = """\
examples:
  rkfarm build model.onnx -o model.rkfm --input-size 1,3,48,192 --mean 127.5,127.5,127.5 --std 127.5,127.5,127.5
  rkfarm info model.rkfm
  rkfarm run model.rkfm line.png -o outputs/
  rkfarm info model.rkfm --json | jq .inputs
  rkfarm devices                                   # agents on the network (mDNS + inventory)
  rkfarm perf model.rkfm --device rk3588-board-1 --perf-debug
  rkfarm mem model.rkfm --device 192.168.1.40:50551 --json
  rkfarm run model.rkfm line.png --device rk3588-board-1
  rkfarm keygen && rkfarm encrypt model.rkfm --level 2   # boards need the same farm key
  rkfarm analyze model.onnx --dataset dataset.txt --input-size 1,3,48,192 --mean 127.5 --std 127.5
  rkfarm hybrid step1 model.onnx --dataset dataset.txt --proposal    # then edit model.quantization.cfg
  rkfarm hybrid step2 model.model model.data model.quantization.cfg -o model.rkfm

A model package (.rkfm) holds the optimized model and how to feed it (layout, mean/std). `rkfarm build`
makes one from ONNX; the Python API (from rkfarm import RKNN) does the same with the vendor's method names.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rkfarm",
        description="rkfarm: convert, quantize, simulate and run models for Rockchip-NPU style boards.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rkfarm {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for commands in (models, boards, quant, crypto, codegen, vendor):
        commands.register(sub)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("rkfarm: %(message)s" if verbosity < 2 else "%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("rkfarm")
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except RkfarmError as exc:
        print(f"rkfarm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rkfarm: interrupted", file=sys.stderr)
        return 130
