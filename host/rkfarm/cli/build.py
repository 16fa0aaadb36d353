"""`rkfarm build`: a model package from a source model (ONNX, PyTorch, Caffe, Darknet, TFLite, TensorFlow)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rkfarm.cli._common import DEFAULTS, _floats, _shape, add_quant_choices, require_quantize_for_dataset
from rkfarm.cli._sources import add_source_args, frontend_of, load_source
from rkfarm.config import FLOAT_DTYPES, OPTIMIZATION_LEVELS
from rkfarm.errors import RkfarmError

EPILOG = """\
examples:
  rkfarm info cls.onnx                      # first: which dims are dynamic, what --input-size to give
  rkfarm build cls.onnx --input-size 1,3,48,192 --mean 127.5,127.5,127.5 --std 127.5,127.5,127.5 \\
      --quantize --dataset dataset.txt --algorithm mmse --quant-cfg cls.quantization.cfg
  rkfarm build mobilenet_ssd.prototxt --blobs mobilenet_ssd.caffemodel --mean 127.5,127.5,127.5
  rkfarm build yolov3-tiny.cfg --weights yolov3-tiny.weights --std 255,255,255 --quantize --dataset ds.txt
  rkfarm build mobilenet_v1.tflite
  rkfarm build ssd.pb --inputs Preprocessor/sub --outputs concat concat_1 --input-size 1,300,300,3
  rkfarm build resnet18.pt --input-size 1,3,224,224
  rkfarm build @cls.args                    # options read from a file, one per line (see --save-args)

dataset.txt: one calibration sample per line (images of the model's input size, or .npy arrays);
relative paths start at the dataset file's folder.
--input-size is in the model's own layout (NCHW for ONNX/PyTorch/Caffe); only dynamic dims can be chosen.
"""


def _add_build(sub: Any) -> None:
    p = sub.add_parser(
        "build",
        help="build a model package from an ONNX, PyTorch, Caffe, Darknet, TFLite or TensorFlow model",
        description="Load a source model (its framework is told by the file's extension and content), optimize it "
        "(constant folding, BatchNorm folding, dead-node removal), convert it to float16 (or keep float32) or "
        "quantize it to int8 (--quantize), and write a model package.",
        epilog=EPILOG,
    )
    p.add_argument(
        "model", type=Path,
        help="source model: .onnx, .pt (TorchScript), .prototxt (Caffe), .cfg (Darknet), .tflite or .pb",
    )  # fmt: skip
    add_source_args(p)
    p.add_argument("-o", "--output", type=Path, help="package to write (default: MODEL with .rkfm)")
    p.add_argument("--inputs", nargs="+", metavar="NAME", help="cut the graph at these input tensors")
    p.add_argument("--outputs", nargs="+", metavar="NAME", help="cut the graph at these output tensors")
    p.add_argument(
        "--input-size", type=_shape, action="append", metavar="N,C,H,W",
        help="fix an input's dynamic dims (repeat once per input, in order; the model's own layout); "
        "`rkfarm info MODEL` says which are dynamic",
    )  # fmt: skip
    p.add_argument("--mean", type=_floats, action="append", metavar="M0,M1,M2", help="mean per channel (per input)")
    p.add_argument("--std", type=_floats, action="append", metavar="S0,S1,S2", help="std per channel (per input)")
    p.add_argument(
        "--float-dtype", choices=FLOAT_DTYPES, default=DEFAULTS.float_dtype,
        help=f"precision of a float build (default {DEFAULTS.float_dtype})",
    )  # fmt: skip
    p.add_argument("--target", metavar="PLATFORM", help="target platform to record, e.g. rk3588")
    p.add_argument(
        "--optimization-level", type=int, choices=OPTIMIZATION_LEVELS, default=DEFAULTS.optimization_level,
        help=f"graph optimization: 0 none .. 3 all (default {DEFAULTS.optimization_level})",
    )  # fmt: skip
    p.add_argument("--custom-string", metavar="TEXT", help="free text stored in the package")
    p.add_argument("--quantize", action="store_true", help="quantize to int8 (needs --dataset)")
    p.add_argument("--dataset", metavar="FILE", help="calibration dataset.txt (one sample per line; with --quantize)")
    add_quant_choices(p)
    p.add_argument("--quantize-weight", action="store_true", help="without --quantize: int8 weights, float compute")
    p.add_argument(
        "--auto-hybrid", action="store_true",
        help="with --quantize: keep the fewest layers in float needed to reach --cos-thresh",
    )  # fmt: skip
    p.add_argument(
        "--cos-thresh", type=float, default=DEFAULTS.auto_hybrid_cos_thresh, metavar="COS",
        help=f"auto-hybrid output cosine target (default {DEFAULTS.auto_hybrid_cos_thresh})",
    )  # fmt: skip
    p.add_argument("--euc-thresh", type=float, metavar="DIST", help="auto-hybrid euclidean distance target")
    p.add_argument(
        "--quant-cfg", type=Path, metavar="PATH",
        help="write the per-tensor int8 parameters (min/max/scale/zero point) as YAML in the vendor's "
        ".quantization.cfg shape",
    )  # fmt: skip
    p.add_argument("--batch", type=int, metavar="N", help="build for batch N (rknn_batch_size)")
    p.add_argument(
        "--compiler", choices=("rkfarm", "vendor"), default="rkfarm",
        help="vendor: rkfarm calibrates, the vendor's RKNN-Toolkit2 (`rkfarm vendor setup`) compiles a .rknn for "
        "the NPU with rkfarm's ranges, wrapped in the package (needs --target)",
    )  # fmt: skip
    p.add_argument(
        "--save-args", type=Path, metavar="FILE",
        help="also write this command's options to FILE, one per line, to run again with `rkfarm build @FILE`",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the package header as JSON (docs/CLI-JSON.md)")
    p.set_defaults(func=cmd_build)


def writable(path: Path, flag: str) -> None:
    """Refuse, before any work, an output whose folder does not exist or cannot be written."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise RkfarmError(f"{flag} {path}: is a directory; give a file name")
    if not folder.is_dir():
        raise RkfarmError(f"{flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RkfarmError(f"{flag} {path}: folder {folder} is not writable")


def _check(args: argparse.Namespace) -> None:
    """What the options say wrong together, before loading anything."""
    require_quantize_for_dataset(args)
    if args.auto_hybrid and not args.quantize:
        raise RkfarmError("--auto-hybrid needs an int8 build: add --quantize --dataset FILE")
    if args.quantize and not args.dataset:
        raise RkfarmError(
            "--quantize needs --dataset FILE (calibration samples); leave out --quantize for a float model"
        )
    if args.quantize and args.quantize_weight:
        raise RkfarmError("--quantize-weight is the float build's int8 weights: not with --quantize")
    if args.quant_cfg and args.compiler != "rkfarm":
        raise RkfarmError("--quant-cfg writes rkfarm's own int8 model's parameters: not with --compiler vendor")
    if args.quant_cfg and not (args.quantize or args.quantize_weight):
        raise RkfarmError("--quant-cfg needs an int8 build: add --quantize --dataset FILE (or --quantize-weight)")
    if args.batch is not None and args.batch < 1:
        raise RkfarmError(f"--batch {args.batch}: give a positive batch size")
    writable(args.output or args.model.with_suffix(".rkfm"), "-o")
    if args.quant_cfg:
        writable(args.quant_cfg, "--quant-cfg")


def save_args(path: Path, argv: list[str]) -> None:
    """The options after ``build`` minus --save-args, one word per line (argparse's @file format), for
    ``rkfarm build @FILE``."""
    words: list[str] = []
    skip = False
    if "build" in argv:
        argv = argv[argv.index("build") + 1 :]
    for word in argv:
        if skip or word == "--save-args":
            skip = not skip
            continue
        if word.startswith("--save-args="):
            continue
        words.append(word)
    path.write_text("".join(w + "\n" for w in words), encoding="utf-8")


def cmd_build(args: argparse.Namespace) -> int:
    _check(args)
    fe = frontend_of(args)
    if fe.name == "onnx" and args.input_size:
        from rkfarm.cli._inspect import check_input_sizes

        check_input_sizes(args.model, args.input_size, args.inputs)
    if args.save_args:
        save_args(args.save_args, list(getattr(args, "argv", None) or sys.argv[1:]))
    from rkfarm.api import RKNN
    from rkfarm.describe import header_dict

    rknn = RKNN(raise_errors=True)
    rknn.config(
        mean_values=args.mean,
        std_values=args.std,
        float_dtype=args.float_dtype,
        target_platform=args.target,
        optimization_level=args.optimization_level,
        custom_string=args.custom_string,
        quantized_algorithm=args.algorithm,
        quantized_method=args.method,
        quantize_weight=args.quantize_weight,
        auto_hybrid_cos_thresh=args.cos_thresh,
        auto_hybrid_euc_thresh=args.euc_thresh,
    )
    load_source(rknn, args)
    rknn.build(
        do_quantization=args.quantize,
        dataset=args.dataset,
        rknn_batch_size=args.batch,
        auto_hybrid=args.auto_hybrid,
        compiler=args.compiler,
    )
    if rknn.hybrid_result is not None:
        print(f"auto hybrid: {rknn.hybrid_result.describe()}", file=sys.stderr)
    out = args.output or args.model.with_suffix(".rkfm")
    package = rknn.package
    assert package is not None
    if args.quant_cfg:
        import onnx

        from rkfarm.quant import table_from_qdq, write_quant_cfg

        table = table_from_qdq(onnx.load_from_string(package.payload))
        if not table:
            raise RkfarmError("--quant-cfg needs an int8 build: add --quantize --dataset FILE (or --quantize-weight)")
        write_quant_cfg(args.quant_cfg, table)
    rknn.export_rknn(out)
    if args.json:
        print(json.dumps({"path": str(out), **header_dict(package.header)}, indent=2))
    else:
        print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


def register(sub: Any) -> None:
    """Add this module's subcommands."""
    _add_build(sub)
