"""`rkfarm analyze` and `rkfarm hybrid step1|step2`: per-layer accuracy and hybrid quantization."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rkfarm.cli._common import _add_quant_choices, _floats, _shape, device_address
from rkfarm.errors import RkfarmError


def _add_quant_options(p: argparse.ArgumentParser, dataset_required: bool = True) -> None:
    """How an ONNX model is loaded and quantized, for `analyze` and `hybrid step1`."""
    p.add_argument(
        "--dataset", required=dataset_required, metavar="FILE", help="dataset.txt: one calibration sample per line"
    )
    p.add_argument(
        "--input-size", type=_shape, action="append", metavar="N,C,H,W",
        help="fix an input's dynamic dims (once per input; `rkfarm info MODEL` says which)",
    )  # fmt: skip
    p.add_argument("--mean", type=_floats, action="append", metavar="M0,M1,M2", help="mean per channel (per input)")
    p.add_argument("--std", type=_floats, action="append", metavar="S0,S1,S2", help="std per channel (per input)")
    _add_quant_choices(p)
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
    )
    p.add_argument("model", type=Path, help="ONNX model, or the .model written by `rkfarm hybrid step1`")
    _add_quant_options(p, dataset_required=False)
    p.add_argument("--data", type=Path, metavar="FILE", help="with a .model: its .data (default: MODEL with .data)")
    p.add_argument(
        "--quant-cfg", type=Path, metavar="FILE", help="with a .model: the cfg (default: MODEL with .quantization.cfg)"
    )
    p.add_argument("--input", action="append", type=Path, metavar="FILE", help="one file per model input")
    p.add_argument("-o", "--output-dir", type=Path, default=Path("snapshot"), help="default: ./snapshot")
    p.add_argument("--top", type=int, default=10, metavar="N", help="worst layers to print (default 10)")
    p.add_argument(
        "--device", metavar="ID|HOST[:PORT]", type=device_address, help="also run on this agent (runtime columns)"
    )
    p.add_argument("--json", action="store_true", help="every layer as JSON (docs/CLI-JSON.md)")
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
        from rkfarm.targets import device_target

        assert rknn.package is not None
        target, device = device_target(args.device, rknn.package, args.target)
        device_id = device.address
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
    )
    steps = p.add_subparsers(dest="step", metavar="STEP", required=True)
    one = steps.add_parser(
        "step1",
        help="calibrate and write NAME.model, NAME.data, NAME.quantization.cfg",
        description="Calibrate MODEL on --dataset and write NAME.model, NAME.data and NAME.quantization.cfg to "
        "--output-dir; --proposal fills the cfg's custom_quantize_layers with the layers auto-hybrid would keep in "
        "float.",
        epilog="examples:\n"
        "  rkfarm hybrid step1 rec.onnx --dataset dataset.txt --input-size 1,3,48,320 --proposal\n"
        "  rkfarm hybrid step1 rec.onnx --dataset dataset.txt --custom-hybrid conv1_out conv5_out -o work/",
    )
    one.add_argument("model", type=Path, help="ONNX model")
    _add_quant_options(one)
    one.add_argument("-o", "--output-dir", type=Path, default=Path("."), help="default: the current folder")
    one.add_argument("--proposal", action="store_true", help="propose layers to keep float (auto_hybrid's choice)")
    one.add_argument(
        "--proposal-dataset-size", type=int, default=1, metavar="N", help="samples for the proposal (default 1)"
    )
    one.add_argument(
        "--cos-thresh", type=float, default=None, metavar="COS", help="the proposal's output cosine target"
    )
    one.add_argument(
        "--custom-hybrid", nargs=2, action="append", metavar=("IN", "OUT"), help="keep this subgraph in float"
    )
    one.set_defaults(func=cmd_hybrid_step1)
    two = steps.add_parser(
        "step2",
        help="build the package from step 1's files and the edited cfg",
        description="Build the int8 package from step 1's three files: the layers listed in the cfg's "
        "custom_quantize_layers stay float, edited min/max ranges are used as written.",
        epilog="example:\n  rkfarm hybrid step2 rec.model rec.data rec.quantization.cfg -o rec.rkfm --json",
    )
    two.add_argument("model", type=Path, help="NAME.model")
    two.add_argument("data", type=Path, help="NAME.data")
    two.add_argument("cfg", type=Path, help="NAME.quantization.cfg")
    two.add_argument("-o", "--output", type=Path, help="package to write (default: NAME.rkfm)")
    two.add_argument("--json", action="store_true", help="print the package header as JSON (docs/CLI-JSON.md)")
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


def register(sub: Any) -> None:
    """Add this module's subcommands."""
    _add_analyze(sub)
    _add_hybrid(sub)
