"""`rkfarm build`, `run` and `info`: packages from source models, inference on files, what a file is."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rkfarm.cli._common import DEFAULTS, _add_device_args, _add_quant_choices, _floats, _opened, _shape
from rkfarm.cli._sources import add_source_args, load_source
from rkfarm.config import FLOAT_DTYPES, OPTIMIZATION_LEVELS
from rkfarm.errors import RkfarmError

if TYPE_CHECKING:
    from rkfarm.runtime import Runtime
    from rkfarm_proto.package import ModelPackage


def _add_build(sub: Any) -> None:
    p = sub.add_parser(
        "build",
        help="build a model package from an ONNX, PyTorch, Caffe, Darknet, TFLite or TensorFlow model",
        description="Load a source model (its framework is told by the file's extension and content), optimize it "
        "(constant folding, BatchNorm folding, dead-node removal), convert it to float16 (or keep float32) or "
        "quantize it to int8 (--quantize), and write a model package.",
        epilog="examples:\n"
        "  rkfarm build cls.onnx --input-size 1,3,48,192 --mean 127.5,127.5,127.5 --std 127.5,127.5,127.5 \\\n"
        "      --quantize --dataset dataset.txt --algorithm mmse --quant-cfg cls.quantization.cfg\n"
        "  rkfarm build mobilenet_ssd.prototxt --blobs mobilenet_ssd.caffemodel --mean 127.5,127.5,127.5\n"
        "  rkfarm build yolov3-tiny.cfg --weights yolov3-tiny.weights --std 255,255,255 --quantize --dataset ds.txt\n"
        "  rkfarm build mobilenet_v1.tflite\n"
        "  rkfarm build ssd.pb --inputs Preprocessor/sub --outputs concat concat_1 --input-size 1,300,300,3\n"
        "  rkfarm build resnet18.pt --input-size 1,3,224,224\n"
        "dataset.txt: one calibration sample per line (images of the model's input size, or .npy arrays);\n"
        "relative paths start at the dataset file's folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        "--input-size",
        type=_shape,
        action="append",
        metavar="N,C,H,W",
        help="fix an input's shape (repeat once per input, in order); needed for dynamic dims",
    )
    p.add_argument("--mean", type=_floats, action="append", metavar="M0,M1,M2", help="mean per channel (per input)")
    p.add_argument("--std", type=_floats, action="append", metavar="S0,S1,S2", help="std per channel (per input)")
    p.add_argument(
        "--float-dtype", choices=FLOAT_DTYPES, default=DEFAULTS.float_dtype, help=f"default: {DEFAULTS.float_dtype}"
    )
    p.add_argument("--target", metavar="PLATFORM", help="target platform to record, e.g. rk3588")
    p.add_argument(
        "--optimization-level", type=int, choices=OPTIMIZATION_LEVELS, default=DEFAULTS.optimization_level,
        help=f"default: {DEFAULTS.optimization_level}",
    )  # fmt: skip
    p.add_argument("--custom-string", help="free text stored in the package")
    p.add_argument("--quantize", action="store_true", help="quantize to int8 (needs --dataset)")
    p.add_argument("--dataset", help="calibration dataset.txt (one sample per line)")
    _add_quant_choices(p)
    p.add_argument("--quantize-weight", action="store_true", help="without --quantize: int8 weights, float compute")
    p.add_argument(
        "--auto-hybrid", action="store_true",
        help="with --quantize: keep the fewest layers in float needed to reach --cos-thresh",
    )  # fmt: skip
    p.add_argument(
        "--cos-thresh", type=float, default=DEFAULTS.auto_hybrid_cos_thresh,
        help=f"auto-hybrid output cosine target (default {DEFAULTS.auto_hybrid_cos_thresh})",
    )  # fmt: skip
    p.add_argument("--euc-thresh", type=float, help="auto-hybrid euclidean distance target (default none)")
    p.add_argument(
        "--quant-cfg",
        type=Path,
        metavar="PATH",
        help="write the per-tensor int8 parameters (min/max/scale/zero point) as YAML in the vendor's "
        ".quantization.cfg shape",
    )
    p.add_argument("--batch", type=int, metavar="N", help="build for batch N (rknn_batch_size)")
    p.add_argument(
        "--compiler", choices=("rkfarm", "vendor"), default="rkfarm",
        help="vendor: rkfarm calibrates, the vendor's RKNN-Toolkit2 (`rkfarm vendor setup`) compiles a .rknn for "
        "the NPU with rkfarm's ranges, wrapped in the package (needs --target)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the package header as JSON")
    p.set_defaults(func=cmd_build)


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a model package on inputs (images or .npy) and save the outputs as .npy",
        description="Run a package on the simulator. Images are decoded to RGB uint8, resized to the model's "
        "input size and fed NHWC (the vendor's default); .npy arrays are fed as they are (NHWC for 4-D "
        "image inputs unless --nchw). mean/std from the package are applied unless --pass-through.",
    )
    p.add_argument("model", type=Path, help="model package (.rkfm)")
    p.add_argument("inputs", nargs="+", type=Path, help="one file per model input, in order")
    p.add_argument("-o", "--output-dir", type=Path, default=Path("outputs"), help="default: ./outputs")
    p.add_argument("--nchw", action="store_true", help=".npy inputs are already NCHW")
    p.add_argument("--pass-through", action="store_true", help="skip layout conversion and mean/std")
    p.add_argument("--rgb2bgr", action="store_true", help="swap image channels to BGR")
    p.add_argument("--json", action="store_true", help="print a JSON summary of the outputs")
    _add_device_args(p)
    p.set_defaults(func=cmd_run)


def _add_info(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="describe a model file (package, vendor .rknn or ONNX)",
        description="Print a package's header: inputs with layout and mean/std, outputs, platform, "
        "quantization, sizes and hashes. Recognises vendor .rknn and ONNX files and says what to do with them.",
    )
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)


def cmd_build(args: argparse.Namespace) -> int:
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
    if args.auto_hybrid and not args.quantize:
        raise RkfarmError("--auto-hybrid needs an int8 build: add --quantize --dataset FILE")
    if args.quant_cfg and args.compiler != "rkfarm":
        raise RkfarmError("--quant-cfg writes rkfarm's own int8 model's parameters: not with --compiler vendor")
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
    rknn.export_rknn(out)
    package = rknn.package
    assert package is not None
    if args.quant_cfg:
        import onnx

        from rkfarm.quant import table_from_qdq, write_quant_cfg

        table = table_from_qdq(onnx.load_from_string(package.payload))
        if not table:
            raise RkfarmError("--quant-cfg needs an int8 build: add --quantize --dataset FILE (or --quantize-weight)")
        write_quant_cfg(args.quant_cfg, table)
    if args.json:
        print(json.dumps({"path": str(out), **header_dict(package.header)}, indent=2))
    else:
        print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    with _opened(args) as (package, runtime):
        return _run(args, package, runtime)


def _run(args: argparse.Namespace, package: ModelPackage, runtime: Runtime) -> int:
    from rkfarm.images import IMAGE_SUFFIXES, read_input

    specs = list(package.header.inputs)
    if len(args.inputs) != len(specs):
        names = ", ".join(s.tensor.name for s in specs)
        raise RkfarmError(f"the model takes {len(specs)} input(s) ({names}); {len(args.inputs)} file(s) given")
    arrays = []
    formats: list[str | None] = []
    for path, spec in zip(args.inputs, specs):
        dims = list(spec.tensor.shape)
        size = (dims[2], dims[3]) if len(dims) == 4 else None
        arrays.append(read_input(path, size, args.rgb2bgr))
        formats.append("nchw" if args.nchw and path.suffix.lower() not in IMAGE_SUFFIXES else "nhwc")
    outputs = runtime.inference(arrays, formats, [int(args.pass_through)] * len(specs))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    for i, (out_spec, out) in enumerate(zip(package.header.outputs, outputs)):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in out_spec.name)[:80]
        dest = args.output_dir / f"output_{i}_{safe}.npy"
        np.save(dest, out)
        flat = np.asarray(out).ravel()
        summary.append(
            {
                "name": out_spec.name,
                "path": str(dest),
                "shape": list(out.shape),
                "dtype": str(out.dtype),
                "argmax": int(flat.argmax()) if flat.size else None,
                "max": float(flat.max()) if flat.size else None,
            }
        )
    if args.json:
        print(json.dumps({"outputs": summary}, indent=2))
    else:
        for item in summary:
            print(f"{item['name']}: {item['dtype']}{item['shape']} argmax={item['argmax']} -> {item['path']}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from rkfarm.describe import describe_file

    info = describe_file(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        from rkfarm.describe import format_info

        print(format_info(info))
    return 0


def register(sub: Any) -> None:
    """Add this module's subcommands."""
    _add_build(sub)
    _add_run(sub)
    _add_info(sub)
