"""The ``rkfarm`` command line: a thin layer over the library. Errors print one line and exit 1."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rkfarm import __version__
from rkfarm.errors import RkfarmError

log = logging.getLogger("rkfarm")

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


def _add_build(sub: Any) -> None:
    p = sub.add_parser(
        "build",
        help="build a model package from an ONNX model",
        description="Load an ONNX model, optimize it (constant folding, BatchNorm folding, dead-node removal), "
        "convert it to float16 (or keep float32) or quantize it to int8 (--quantize), and write a model package.",
        epilog="int8 example:\n"
        "  rkfarm build cls.onnx --input-size 1,3,48,192 --mean 127.5,127.5,127.5 --std 127.5,127.5,127.5 \\\n"
        "      --quantize --dataset dataset.txt --algorithm mmse --quant-cfg cls.quantization.cfg\n"
        "dataset.txt: one calibration sample per line (images of the model's input size, or .npy arrays);\n"
        "relative paths start at the dataset file's folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", type=Path, help="ONNX model file")
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
    p.add_argument("--float-dtype", choices=["float16", "float32"], default="float16", help="default: float16")
    p.add_argument("--target", metavar="PLATFORM", help="target platform to record, e.g. rk3588")
    p.add_argument("--optimization-level", type=int, choices=[0, 1, 2, 3], default=3, help="default: 3")
    p.add_argument("--custom-string", help="free text stored in the package")
    p.add_argument("--quantize", action="store_true", help="quantize to int8 (needs --dataset)")
    p.add_argument("--dataset", help="calibration dataset.txt (one sample per line)")
    p.add_argument("--algorithm", choices=["normal", "mmse", "kl_divergence"], default="normal")
    p.add_argument("--method", choices=["channel", "layer"], default="channel")
    p.add_argument("--quantize-weight", action="store_true", help="without --quantize: int8 weights, float compute")
    p.add_argument(
        "--auto-hybrid", action="store_true",
        help="with --quantize: keep the fewest layers in float needed to reach --cos-thresh",
    )  # fmt: skip
    p.add_argument("--cos-thresh", type=float, default=0.98, help="auto-hybrid output cosine target (default 0.98)")
    p.add_argument("--euc-thresh", type=float, help="auto-hybrid euclidean distance target (default none)")
    p.add_argument(
        "--quant-cfg",
        type=Path,
        metavar="PATH",
        help="write the per-tensor int8 parameters (min/max/scale/zero point) as YAML in the vendor's "
        ".quantization.cfg shape",
    )
    p.add_argument("--batch", type=int, metavar="N", help="build for batch N (rknn_batch_size)")
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


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", metavar="ID|HOST:PORT",
        help="run on this agent (an id from `rkfarm devices`, or host:port); default: the simulator",
    )  # fmt: skip
    p.add_argument("--target", metavar="PLATFORM", help="platform to ask for (default: the agent's own)")
    p.add_argument("--core-mask", type=lambda v: int(v, 0), default=0, help="NPU core mask, e.g. 0x1 (default auto)")


def _add_devices(sub: Any) -> None:
    p = sub.add_parser(
        "devices",
        help="list agents found by mDNS and in the inventory",
        description="Browse _rkfarm._tcp.local. (interfaces from RKFARM_MDNS_INTERFACES, default all) and ask "
        "every agent in RKFARM_AGENTS / the inventory file (RKFARM_INVENTORY, default "
        "~/.config/rkfarm/agents.txt, one host:port per line) who it is.",
    )
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to listen for mDNS answers (default 2)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)


def _add_perf_mem(sub: Any) -> None:
    p = sub.add_parser(
        "perf",
        help="time a model package on an agent (or the simulator)",
        description="Run the model N times after warm-up and report latency statistics; --perf-debug adds the "
        "per-layer table from the backend's profiler and the op-type ranking.",
    )
    p.add_argument("model", type=Path, help="model package (.rkfm)")
    _add_device_args(p)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--perf-debug", action="store_true", help="per-layer times")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_perf)
    m = sub.add_parser("mem", help="memory used by a model package on an agent (or the simulator)")
    m.add_argument("model", type=Path, help="model package (.rkfm)")
    _add_device_args(m)
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_mem)


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
    _add_build(sub)
    _add_run(sub)
    _add_info(sub)
    _add_devices(sub)
    _add_perf_mem(sub)
    _add_crypto(sub)
    _add_analyze(sub)
    _add_hybrid(sub)
    return parser


def _add_quant_options(p: argparse.ArgumentParser, dataset_required: bool = True) -> None:
    """How an ONNX model is loaded and quantized, for `analyze` and `hybrid step1`."""
    p.add_argument("--dataset", required=dataset_required, help="dataset.txt: one calibration sample per line")
    p.add_argument(
        "--input-size", type=_shape, action="append", metavar="N,C,H,W", help="fix an input's shape (once per input)"
    )
    p.add_argument("--mean", type=_floats, action="append", metavar="M0,M1,M2", help="mean per channel (per input)")
    p.add_argument("--std", type=_floats, action="append", metavar="S0,S1,S2", help="std per channel (per input)")
    p.add_argument("--algorithm", choices=["normal", "mmse", "kl_divergence"], default="normal")
    p.add_argument("--method", choices=["channel", "layer"], default="channel")
    p.add_argument("--target", metavar="PLATFORM", help="target platform, e.g. rk3588")
    p.add_argument("--batch", type=int, metavar="N", help="build for batch N (rknn_batch_size)")


def _configured(args: argparse.Namespace) -> Any:
    from rkfarm.api import RKNN

    rknn = RKNN(raise_errors=True)
    rknn.config(
        mean_values=args.mean,
        std_values=args.std,
        quantized_algorithm=args.algorithm,
        quantized_method=args.method,
        target_platform=args.target,
    )
    rknn.load_onnx(args.model, input_size_list=args.input_size)
    return rknn


def _add_analyze(sub: Any) -> None:
    p = sub.add_parser(
        "analyze",
        help="which layers of the int8 model lose accuracy (error_analysis.txt, report.html)",
        description="Quantize MODEL on --dataset (or take a hybrid step-1 .model with its .data and cfg), compare "
        "every layer with the float model on one sample (--input, default the dataset's first line), print the "
        "worst layers and write error_analysis.txt, report.html and the tensor dumps to --output-dir. "
        "'single' is the error a layer adds by itself (fed the float model's values), 'entire' the error "
        "accumulated up to it. --device also runs the model on that agent.",
        epilog="examples:\n"
        "  rkfarm analyze cls.onnx --dataset dataset.txt --input-size 1,3,48,192 --mean 127.5,127.5,127.5 \\\n"
        "      --std 127.5,127.5,127.5 --top 5\n"
        "  rkfarm analyze cls.model --data cls.data --quant-cfg cls.quantization.cfg --input line.png\n"
        "  rkfarm analyze cls.onnx --dataset dataset.txt ... --device rk3588-board-1 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", type=Path, help="ONNX model, or the .model written by `rkfarm hybrid step1`")
    _add_quant_options(p, dataset_required=False)
    p.add_argument("--data", type=Path, help="with a .model: its .data (default: MODEL with .data)")
    p.add_argument("--quant-cfg", type=Path, help="with a .model: the cfg (default: MODEL with .quantization.cfg)")
    p.add_argument("--input", action="append", type=Path, metavar="FILE", help="one file per model input")
    p.add_argument("-o", "--output-dir", type=Path, default=Path("snapshot"), help="default: ./snapshot")
    p.add_argument("--top", type=int, default=10, metavar="N", help="worst layers to print (default 10)")
    p.add_argument("--device", metavar="ID|HOST:PORT", help="also run on this agent (runtime columns)")
    p.add_argument("--json", action="store_true", help="every layer as JSON")
    p.set_defaults(func=cmd_analyze)


def _first_sample(dataset: str | None) -> list[Path]:
    """The files of the dataset's first sample line (relative paths start at the dataset's folder)."""
    if not dataset:
        raise RkfarmError("give --input FILE (one per model input) or --dataset to analyse its first sample")
    path = Path(dataset)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RkfarmError(f"cannot read dataset file {path}: {exc}") from None
    line = next((ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), None)
    if line is None:
        raise RkfarmError(f"dataset file {path} has no samples")
    return [Path(f) if Path(f).is_absolute() else path.parent / f for f in line]


def cmd_analyze(args: argparse.Namespace) -> int:
    from rkfarm.api import RKNN

    if args.model.suffix == ".model":
        rknn = RKNN(raise_errors=True)
        data = args.data or args.model.with_suffix(".data")
        cfg = args.quant_cfg or args.model.with_suffix(".quantization.cfg")
        rknn.hybrid_quantization_step2(args.model, data, cfg)
    else:
        if not args.dataset:
            raise RkfarmError("analyze MODEL.onnx needs --dataset (calibration samples) to quantize it")
        rknn = _configured(args)
        rknn.build(do_quantization=True, dataset=args.dataset, rknn_batch_size=args.batch)
    inputs = args.input or _first_sample(args.dataset)
    target = device_id = None
    if args.device:
        from rkfarm import discovery
        from rkfarm_proto.platforms import UNKNOWN

        device = discovery.resolve(args.device, None)
        package = rknn.package
        assert package is not None
        platform = args.target or (device.platform if device.platform != UNKNOWN else "")
        target, device_id = platform or package.header.target_platform or "rk3588", device.address
    rknn.accuracy_analysis([str(f) for f in inputs], str(args.output_dir), target=target, device_id=device_id)
    result = rknn.analysis_result
    assert result is not None
    if args.json:
        print(json.dumps({**result.to_dict(), "worst": [e.name for e in result.worst(args.top)]}, indent=2))
        return 0
    print(_format_worst(result, args.top))
    print(f"wrote {result.files['error_analysis']} and {result.files['report']} ({result.elapsed_s:.2f} s)")
    return 0


def _format_worst(result: Any, top: int) -> str:
    runtime = result.runtime is not None
    worst = result.worst(top)
    width = max([len(e.name) for e in worst] + [6])
    op_width = max([len(e.op) for e in worst] + [5])
    head = f"{'#':>4}  {'layer':<{op_width}}  {'tensor':<{width}}  {'single cos':>10}  {'entire cos':>10}"
    head += f"  {'single euc':>10}  {'entire euc':>10}" + (f"  {'runtime cos':>11}" if runtime else "")
    lines = [f"worst {len(worst)} of {len(result.layers)} layers (lowest single cosine: the error a layer adds "
             "by itself)", head]  # fmt: skip
    for e in worst:
        row = f"{e.index:>4}  {e.op:<{op_width}}  {e.name:<{width}}  {e.single_cos:>10.6f}  {e.entire_cos:>10.6f}"
        row += f"  {e.single_euc:>10.5g}  {e.entire_euc:>10.5g}"
        if runtime:
            row += f"  {e.runtime_cos:>11.6f}"
        lines.append(row)
    return "\n".join(lines)


def _add_hybrid(sub: Any) -> None:
    p = sub.add_parser(
        "hybrid",
        help="hybrid quantization: keep chosen layers of an int8 model in float",
        description="Step 1 calibrates MODEL and writes NAME.model (the prepared float graph), NAME.data (its "
        "weights) and NAME.quantization.cfg. Edit the cfg: list layers under custom_quantize_layers as "
        "'tensor: float16', or change a tensor's min/max. Step 2 builds the package from those three files.",
        epilog="example:\n"
        "  rkfarm hybrid step1 rec.onnx --dataset dataset.txt --input-size 1,3,48,320 --mean 127.5,127.5,127.5 \\\n"
        "      --std 127.5,127.5,127.5 --proposal --proposal-dataset-size 4\n"
        "  rkfarm hybrid step2 rec.model rec.data rec.quantization.cfg -o rec.rkfm",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = p.add_subparsers(dest="step", metavar="STEP", required=True)
    one = steps.add_parser("step1", help="calibrate and write NAME.model, NAME.data, NAME.quantization.cfg")
    one.add_argument("model", type=Path, help="ONNX model")
    _add_quant_options(one)
    one.add_argument("-o", "--output-dir", type=Path, default=Path("."), help="default: the current folder")
    one.add_argument("--proposal", action="store_true", help="propose layers to keep float (auto_hybrid's choice)")
    one.add_argument("--proposal-dataset-size", type=int, default=1, metavar="N", help="samples for the proposal")
    one.add_argument("--cos-thresh", type=float, default=None, help="the proposal's output cosine target")
    one.add_argument(
        "--custom-hybrid", nargs=2, action="append", metavar=("IN", "OUT"), help="keep this subgraph in float"
    )
    one.set_defaults(func=cmd_hybrid_step1)
    two = steps.add_parser("step2", help="build the package from step 1's files and the edited cfg")
    two.add_argument("model", type=Path, help="NAME.model")
    two.add_argument("data", type=Path, help="NAME.data")
    two.add_argument("cfg", type=Path, help="NAME.quantization.cfg")
    two.add_argument("-o", "--output", type=Path, help="package to write (default: NAME.rkfm)")
    two.add_argument("--json", action="store_true", help="print the package header as JSON")
    two.set_defaults(func=cmd_hybrid_step2)


def cmd_hybrid_step1(args: argparse.Namespace) -> int:
    rknn = _configured(args)
    if args.cos_thresh is not None:
        rknn.config(auto_hybrid_cos_thresh=args.cos_thresh)
    rknn.hybrid_quantization_step1(
        dataset=args.dataset,
        rknn_batch_size=args.batch,
        proposal=args.proposal,
        proposal_dataset_size=args.proposal_dataset_size,
        custom_hybrid=args.custom_hybrid,
        output_dir=args.output_dir,
    )
    stem = args.output_dir / args.model.stem
    for suffix in (".model", ".data", ".quantization.cfg"):
        print(f"wrote {stem}{suffix}")
    hybrid = rknn.hybrid_result
    if hybrid is not None:
        print(f"proposal: {hybrid.describe()}")
        for name in hybrid.float_layers:
            print(f"  {name}: float16")
    return 0


def cmd_hybrid_step2(args: argparse.Namespace) -> int:
    from rkfarm.api import RKNN
    from rkfarm.describe import header_dict

    rknn = RKNN(raise_errors=True)
    rknn.hybrid_quantization_step2(args.model, args.data, args.cfg)
    out = args.output or args.model.with_suffix(".rkfm")
    rknn.export_rknn(out)
    package = rknn.package
    assert package is not None
    if args.json:
        print(json.dumps({"path": str(out), **header_dict(package.header)}, indent=2))
    else:
        floats = list(package.header.quantization.float_tensors)
        print(f"wrote {out} ({out.stat().st_size} bytes; {len(floats)} tensor(s) in float)")
    return 0


def _add_crypto(sub: Any) -> None:
    k = sub.add_parser(
        "keygen",
        help="make a farm key file (the secret shared by this host and its boards)",
        description="Write a new random farm key, mode 0600, to --out (default $RKFARM_FARM_KEY_FILE or "
        "~/.config/rkfarm/farm.key). Copy it to each board (see deploy/) for `rkfarm-agent serve --farm-key-file`.",
    )
    k.add_argument("--out", type=Path, help="key file to create (never overwritten)")
    k.set_defaults(func=cmd_keygen)
    e = sub.add_parser(
        "encrypt",
        help="encrypt a model package for the farm key, or seal it to chosen boards",
        description="Authenticated encryption of the payload (AES-256-GCM or ChaCha20-Poly1305). Level 1: fastest "
        "load; 2: scrypt-hardened key and 1 MiB segments with their own keys; 3: stronger scrypt (128 MiB, "
        "boards with >= 256 MB RAM) and 64 KiB segments. Agents load the result like any other package.",
    )
    e.add_argument("model", type=Path, help="model package (.rkfm)")
    e.add_argument("-o", "--output", type=Path, help="default: MODEL.crypt.rkfm")
    e.add_argument("--level", type=int, choices=[1, 2, 3], default=1, help="crypt level (default 1)")
    e.add_argument("--for", dest="recipients", action="append", metavar="AGENT",
                   help="seal to this agent only (id or host:port; repeatable) instead of the farm key")  # fmt: skip
    e.add_argument("--key-file", type=Path, help="farm key file (default $RKFARM_FARM_KEY_FILE)")
    e.add_argument("--algorithm", choices=["AES-256-GCM", "ChaCha20-Poly1305"], default="AES-256-GCM")
    e.set_defaults(func=cmd_encrypt)


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
    rknn.load_onnx(args.model, inputs=args.inputs, input_size_list=args.input_size, outputs=args.outputs)
    rknn.build(
        do_quantization=args.quantize, dataset=args.dataset, rknn_batch_size=args.batch, auto_hybrid=args.auto_hybrid
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
    from rkfarm.images import IMAGE_SUFFIXES, read_input

    rknn = _open_runtime(args)
    package = rknn.package
    assert package is not None
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
    outputs = rknn.inference(arrays, data_format=formats, inputs_pass_through=[int(args.pass_through)] * len(specs))
    assert outputs is not None
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


def cmd_devices(args: argparse.Namespace) -> int:
    from rkfarm.discovery import format_devices, list_devices

    devices = list_devices(args.timeout)
    if args.json:
        print(json.dumps([d.to_dict() for d in devices], indent=2))
    else:
        print(format_devices(devices))
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    rknn = _open_runtime(args, perf_debug=args.perf_debug)
    try:
        report = rknn.eval_perf(is_print=not args.json, runs=args.runs, warmup=args.warmup)
    finally:
        rknn.release()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    return 0


def cmd_mem(args: argparse.Namespace) -> int:
    rknn = _open_runtime(args)
    try:
        result = rknn.eval_memory(is_print=not args.json)
    finally:
        rknn.release()
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from rkfarm.keys import make_farm_key
    from rkfarm_proto.crypto import key_id, read_farm_key

    path = make_farm_key(args.out)
    print(f"wrote farm key {key_id(read_farm_key(path))} to {path} (mode 0600)")
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    from rkfarm.api import RKNN

    output = args.output or args.model.with_name(args.model.stem + ".crypt.rkfm")
    rknn = RKNN(raise_errors=True)
    rknn.export_encrypted_rknn_model(
        args.model, output, args.level, recipients=args.recipients, key_file=args.key_file, algorithm=args.algorithm
    )
    print(f"wrote {output}")
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


if __name__ == "__main__":
    sys.exit(main())
