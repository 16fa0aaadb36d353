"""`rkfarm codegen`: a demo project that runs a model on a board (the vendor's RKNN.codegen)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _add_codegen(sub: Any) -> None:
    p = sub.add_parser(
        "codegen",
        help="write a demo project that runs a model on a board (C++ for a vendor .rknn, else Python)",
        description="For a vendor .rknn (or a package wrapping one): a CMake project over librknnrt's C API that "
        "loads the model, feeds the inputs, times N runs and saves the outputs as .npy. For an rkfarm package "
        "with an ONNX payload: the same as a Python script over rkfarm_agent.lite.RKNNLite. The model and the "
        "inputs are copied in; README.md says how to build and run it.",
        epilog="examples:\n"
        "  rkfarm codegen yolo.rknn -o demo/ --input image.npy\n"
        "  rkfarm codegen cls.rkfm -o cls_demo/ --input line.png --overwrite",
    )
    p.add_argument("model", type=Path, help="model package (.rkfm) or vendor .rknn")
    p.add_argument("-o", "--output", type=Path, default=Path("rknn_app_demo"), help="default: ./rknn_app_demo")
    p.add_argument(
        "--input", dest="inputs", type=Path, action="append", metavar="FILE",
        help="a .npy or image per model input, in order (repeat); none: the demo generates inputs",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty output folder")
    p.set_defaults(func=cmd_codegen)


def cmd_codegen(args: argparse.Namespace) -> int:
    from rkfarm.api import RKNN

    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(args.model)
        rknn.codegen(str(args.output), [str(p) for p in args.inputs or []], overwrite=args.overwrite)
    print(f"wrote the demo of {args.model} to {args.output} (see {args.output / 'README.md'})")
    return 0


def register(sub: Any) -> None:
    """Add this module's subcommands."""
    _add_codegen(sub)
