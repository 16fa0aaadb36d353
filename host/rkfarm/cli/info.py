"""`rkfarm info`: what a file is — a package's header, a vendor .rknn's metadata, a source model's inputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rkfarm.frontends import FRONTENDS

EPILOG = """\
examples:
  rkfarm info model.onnx              # inputs with their dynamic dims, outputs, opset, the --input-size it needs
  rkfarm info model.rkfm              # layout, mean/std, precision, sizes and hashes of a package
  rkfarm info yolo.rknn --json        # a vendor .rknn: toolkit version, platform, tensors
  rkfarm info net.prototxt            # Caffe, Darknet .cfg, TFLite, TensorFlow .pb, TorchScript likewise
  rkfarm info model.rkfm --json | jq '.header.inputs[0].shape'
"""


def _add_info(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="describe a model file: a package, a vendor .rknn or a source model (inputs, dims, opset)",
        description="Print a package's header: inputs with layout and mean/std, outputs, platform, quantization, "
        "sizes and hashes. A vendor .rknn shows the metadata it stores. A source model (ONNX, Caffe, Darknet, "
        "TFLite, TensorFlow, TorchScript) shows its inputs with their dynamic dims, outputs and opset, and the "
        "--input-size `rkfarm build` needs.",
        epilog=EPILOG,
    )
    p.add_argument("file", type=Path, help="a package (.rkfm), a vendor .rknn or a source model")
    p.add_argument(
        "--framework", choices=sorted(FRONTENDS),
        help="a source model's framework, when its extension and content do not tell",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="machine-readable output (docs/CLI-JSON.md)")
    p.set_defaults(func=cmd_info)


def _kind(path: Path) -> str:
    from rkfarm.errors import PackageError
    from rkfarm_proto.package import detect_format

    try:
        with path.open("rb") as fh:
            prefix = fh.read(64)
    except FileNotFoundError:
        raise PackageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PackageError(f"{path}: is a directory, not a model file") from None
    except OSError as exc:
        raise PackageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return detect_format(prefix)


def cmd_info(args: argparse.Namespace) -> int:
    from rkfarm.errors import RkfarmError

    kind = _kind(args.file)
    if kind in ("rkfm", "rknn", "rknn-encrypted") and not args.framework:
        from rkfarm.describe import describe_file, format_info

        info = describe_file(args.file)
        print(json.dumps(info, indent=2) if args.json else format_info(info))
        return 0
    from rkfarm.cli._inspect import format_source_info, source_info

    try:
        info = source_info(args.file, args.framework)
    except RkfarmError as exc:
        if "cannot tell which framework" in str(exc):
            raise RkfarmError(
                f"{args.file}: not a model file rkfarm recognises (no package, .rknn or source model signature); "
                "name its framework with --framework"
            ) from None
        raise
    print(json.dumps(info, indent=2) if args.json else format_source_info(info))
    return 0


def register(sub: Any) -> None:
    """Add this module's subcommands."""
    _add_info(sub)
