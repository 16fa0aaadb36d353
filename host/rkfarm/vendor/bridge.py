"""The vendor compiler as a bridge to the NPU: rkfarm's calibration, compiled by RKNN-Toolkit2 into a ``.rknn``.

rkfarm's own int8 package runs on ONNX Runtime (a board's CPU); a Rockchip NPU runs only what the vendor's
compiler makes. ``build_for("vendor", ...)`` (``RKNN.build(..., compiler='vendor')``, ``rkfarm build --compiler
vendor``) and ``compile()`` do this:

1. rkfarm prepares the graph and calibrates as for its own build (``quantized_algorithm``, per channel);
2. the prepared float graph (the names rkfarm's parameters use) goes to the toolkit in its side environment
   (``rkfarm.vendor.env``): ``hybrid_quantization_step1`` on the same calibration files writes the toolkit's
   ``.quantization.cfg``;
3. every int8 entry of that cfg that rkfarm has a range for gets rkfarm's ``min``/``max`` (the only fields step 2
   lets a user change; it derives scale and zero point from them). A convolution whose ReLU the toolkit fuses
   takes the ReLU's range, as rkfarm fuses it too. Entries for tensors the toolkit makes itself (its input
   conversion, the convolutions it splits a global pooling into, reshapes it inserts) keep the toolkit's own
   values; the package records how many;
   Step 1 runs the toolkit's ``normal`` algorithm whatever ``quantized_algorithm`` says: step 2 refuses edited
   ranges after ``kl_divergence`` or ``mmse``; rkfarm's ranges are calibrated with the configured algorithm;
4. ``hybrid_quantization_step2`` compiles with those ranges and ``export_rknn`` writes the ``.rknn``; weights are
   quantized by the toolkit (per channel), as for any vendor build;
5. the ``.rknn`` is wrapped in an rkfarm package (payload kind rknn) whose header says which toolkit compiled it
   and with whose ranges (``build_options``), for board agents with librknnrt.

With ``do_quantization=False`` the toolkit compiles the prepared graph in float16. Refused (NotSupportedError):
``rknn_batch_size``, ``auto_hybrid``, ``dynamic_input``, ``quantize_weight``, ``float_dtype='float32'`` (the
NPU has no float32 mode), custom ops, models that come quantized, and NHWC image inputs.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx

from rkfarm import __version__, graph, prequant
from rkfarm.build import prepare
from rkfarm.config import RknnConfig
from rkfarm.errors import BuildError, NotSupportedError
from rkfarm.frontends import LoadedGraph
from rkfarm.packages import wrap_vendor_rknn
from rkfarm.quant import Calibration, QuantOptions, calibrate
from rkfarm.quant.dataset import CalibrationDataset
from rkfarm.quant.plan import RANGE_ONLY_OPS
from rkfarm.quant.qdq import QuantTable
from rkfarm.specs import input_specs
from rkfarm.vendor.env import vendor_python
from rkfarm.vendor.jobs import VendorJob, run_jobs
from rkfarm_proto.package import ModelPackage
from rkfarm_proto.v1 import common_pb2, package_pb2

log = logging.getLogger(__name__)

COMPILERS = ("rkfarm", "vendor")
# config() parameters handed to the toolkit as they are (the rest must keep their defaults, or are rkfarm-only)
PASSED = (
    "mean_values",
    "std_values",
    "quant_img_RGB2BGR",
    "quantized_dtype",
    "quantized_algorithm",
    "quantized_method",
    "target_platform",
    "optimization_level",
    "custom_string",
    "single_core_mode",
)
IGNORED = ("float_dtype", "auto_hybrid_cos_thresh", "auto_hybrid_euc_thresh")  # checked or rkfarm-only


@dataclass
class VendorBuild:
    """A vendor-compiled model: the ``.rknn`` bytes, its package, and what went into the cfg."""

    rknn: bytes
    package: ModelPackage
    toolkit: str
    replaced: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    calibration: Calibration | None = None


def vendor_config(cfg: RknnConfig) -> dict[str, object]:
    """The toolkit's ``config()`` keywords for ``cfg``; options it would not honour the same way are refused."""
    defaults = RknnConfig()
    if cfg.target_platform is None:
        raise BuildError("the vendor compiler needs a target: config(target_platform='rk3588') (or --target)")
    if cfg.float_dtype != "float16":
        raise NotSupportedError("the vendor compiler builds float layers in float16 only: drop float_dtype='float32'")
    odd = [
        name
        for name in RknnConfig.parameter_names()
        if name not in (*PASSED, *IGNORED) and getattr(cfg, name) != getattr(defaults, name)
    ]
    if odd:
        raise NotSupportedError(f"config({', '.join(odd)}) is not supported with the vendor compiler")
    out: dict[str, object] = {}
    for name in PASSED:
        value = getattr(cfg, name)
        if value != getattr(defaults, name):
            out[name] = value
    out["target_platform"] = cfg.target_platform
    out["quantized_method"] = cfg.quantized_method
    out["quantized_algorithm"] = cfg.quantized_algorithm
    return out


def vendor_ranges(table: QuantTable, model: onnx.ModelProto) -> dict[str, list[float]]:
    """rkfarm's int8 activation ranges by tensor name, for the toolkit's cfg: every per-tensor int8 entry, and
    the output of a convolution fused with a ReLU/Clip (rkfarm leaves it float), which takes the range of the
    activation's output (what the toolkit's fused layer produces)."""
    weights = {t.name for t in model.graph.initializer}
    ranges = {
        name: [float(p.min[0]), float(p.max[0])]
        for name, p in table.items()
        if p.dtype == "int8" and not p.per_channel and name not in weights
    }
    producers = {out: node for node in model.graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    for node in model.graph.node:
        if node.op_type not in RANGE_ONLY_OPS or not node.input or node.output[0] not in ranges:
            continue
        source = node.input[0]
        producer = producers.get(source)
        if source in ranges or producer is None or readers.get(source, 0) != 1:
            continue
        if producer.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add"):
            ranges[source] = ranges[node.output[0]]
    return ranges


def check_supported(loaded: LoadedGraph, cfg: RknnConfig, rknn_batch_size: int | None, auto_hybrid: bool) -> None:
    if rknn_batch_size not in (None, 1):
        raise NotSupportedError("build(rknn_batch_size=...) is not supported with the vendor compiler")
    if auto_hybrid:
        raise NotSupportedError("build(auto_hybrid=True) is not supported with the vendor compiler")
    if cfg.dynamic_input is not None:
        raise NotSupportedError("config(dynamic_input=...) is not supported with the vendor compiler")
    if cfg.quantize_weight:
        raise NotSupportedError("config(quantize_weight=True) is not supported with the vendor compiler")
    custom = sorted({n.op_type for n in loaded.model.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise NotSupportedError(f"the vendor compiler cannot take custom ops ({', '.join(custom)})")
    if prequant.find(loaded.model) is not None:
        raise NotSupportedError("the vendor compiler takes float models; this one comes quantized")


def _dataset_for_vendor(dataset: str, specs: list[package_pb2.InputSpec], out: Path) -> str:
    """The calibration list with absolute paths (the toolkit runs in another folder), checked by rkfarm first."""
    lines = CalibrationDataset(dataset, specs).lines
    out.write_text("".join(" ".join(str(p.resolve()) for p in line.files) + "\n" for line in lines))
    return str(out)


def prepare_job(
    job_id: str,
    loaded: LoadedGraph,
    cfg: RknnConfig,
    do_quantization: bool,
    dataset: str | None,
    folder: Path,
) -> tuple[VendorJob, Calibration | None]:
    """rkfarm's part of a bridge build: the prepared graph written for the toolkit, calibrated when quantizing,
    and the job that compiles it (``folder`` holds the files; add ``evaluate`` sets before running it)."""
    config = vendor_config(cfg)
    model, specs = prepare(loaded, cfg)
    for spec in specs:
        if spec.tensor.layout == common_pb2.LAYOUT_NHWC:
            raise NotSupportedError(
                f"input {spec.tensor.name!r} is NHWC: the vendor compiler takes NCHW image inputs (ONNX layout)"
            )
    calibration = None
    ranges = None
    vendor_dataset = None
    if do_quantization:
        if not dataset:
            raise BuildError("build(do_quantization=True) needs dataset='dataset.txt' (calibration samples)")
        calibration = calibrate(model, cfg, dataset, QuantOptions.from_config(cfg))
        model = calibration.model
        ranges = vendor_ranges(calibration.table, model)
        # step 2 refuses edited ranges unless step 1 ran 'normal' (RKNN-Toolkit2 2.5.0: "Not support modify
        # quantize_parameters when config.quantized_algorithm = kl_divergence"); rkfarm's ranges carry the
        # configured algorithm, and only the toolkit's own entries come from its 'normal'
        config["quantized_algorithm"] = "normal"
        vendor_dataset = _dataset_for_vendor(dataset, input_specs(model, cfg), folder / f"{job_id}-dataset.txt")
    model_path = folder / f"{job_id}.onnx"
    onnx.save(model, str(model_path))
    inputs = graph.real_inputs(model)
    job = VendorJob(
        id=job_id,
        workdir=str(folder / job_id),
        model=str(model_path),
        inputs=[i.name for i in inputs],
        input_size_list=[graph.dims_of(i) for i in inputs],
        config=config,
        quantize=do_quantization,
        dataset=vendor_dataset,
        ranges=ranges,
        export=str(folder / f"{job_id}.rknn"),
    )
    return job, calibration


def package_for(
    rknn: bytes,
    loaded: LoadedGraph,
    cfg: RknnConfig,
    toolkit: str,
    calibration: Calibration | None,
    replaced: int,
    kept: int,
) -> ModelPackage:
    """The ``.rknn`` wrapped in a package whose header says it was compiled by the toolkit with rkfarm's ranges."""
    header = package_pb2.PackageHeader(
        producer=f"RKNN-Toolkit2 {toolkit} (vendor compiler), driven by rkfarm {__version__}",
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        source_model_name=loaded.source_name,
        source_model_sha256=loaded.source_sha256,
        source_framework=loaded.framework,
        target_platform=cfg.target_platform or "",
        float_dtype="float16",
        custom_string=cfg.custom_string or "",
    )
    options = dict(cfg.as_record())
    options["compiler"] = f"vendor RKNN-Toolkit2 {toolkit}"
    if calibration is not None:
        options["quantization_ranges"] = f"rkfarm {__version__} ({cfg.quantized_algorithm})"
        options["vendor_cfg_entries"] = f"{replaced} with rkfarm's range, {kept} the toolkit's own (normal)"
        header.quantization.CopyFrom(
            package_pb2.QuantizationSummary(
                quantized=True,
                dtype="w8a8",
                algorithm=cfg.quantized_algorithm,
                method=cfg.quantized_method,
                calibration_samples=calibration.samples,
                quantized_tensors=replaced + kept,
            )
        )
    header.build_options.update(options)
    return wrap_vendor_rknn(rknn, loaded.source_name, template=header)


def build_for(
    compiler: str,
    loaded: LoadedGraph,
    cfg: RknnConfig,
    do_quantization: bool,
    dataset: str | None,
    rknn_batch_size: int | None = None,
    auto_hybrid: bool = False,
    keep_dir: str | os.PathLike[str] | None = None,
) -> VendorBuild:
    """``RKNN.build(..., compiler=...)`` for a compiler other than rkfarm's own (see the module docstring).
    ``keep_dir`` keeps the toolkit's files (the prepared ONNX, step 1's cfg as edited, the log) there."""
    if compiler not in COMPILERS or compiler == "rkfarm":
        raise BuildError(f"compiler must be one of {', '.join(COMPILERS)}, got {compiler!r}")
    check_supported(loaded, cfg, rknn_batch_size, auto_hybrid)
    vendor_config(cfg)  # the refusals first, then the environment, before any calibration work
    vendor_python()
    with tempfile.TemporaryDirectory(prefix="rkfarm-vendor-") as tmp:
        folder = Path(keep_dir) if keep_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        job, calibration = prepare_job("model", loaded, cfg, do_quantization, dataset, folder)
        run = run_jobs([job], folder)
        result = run.results[0]
        if not result.ok:
            where = f" (log: {run.log})" if keep_dir is not None else " (keep_dir keeps the toolkit's log)"
            raise BuildError(f"the vendor compiler failed: {result.error}{where}")
        rknn = Path(job.export or "").read_bytes()
    package = package_for(rknn, loaded, cfg, run.toolkit, calibration, len(result.replaced), len(result.kept))
    log.info(
        "vendor compiler: RKNN-Toolkit2 %s made %d bytes of .rknn; %d cfg entries took rkfarm's ranges, %d kept "
        "the toolkit's own",
        run.toolkit,
        len(rknn),
        len(result.replaced),
        len(result.kept),
    )
    return VendorBuild(rknn, package, run.toolkit, result.replaced, result.kept, calibration)


def compile(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    do_quantization: bool = True,
    inputs: list[str] | None = None,
    input_size_list: list[list[int]] | None = None,
    outputs: list[str] | None = None,
    package: str | os.PathLike[str] | None = None,
    **config: Any,
) -> VendorBuild:
    """Compile an ONNX model for the NPU with rkfarm's calibration: writes the vendor ``.rknn`` to ``output``
    (and, with ``package``, the rkfarm package wrapping it). ``config`` takes ``RKNN.config()`` keywords,
    ``target_platform`` among them."""
    from rkfarm.frontends.onnx import load_onnx

    cfg = RknnConfig.from_kwargs(**config)
    loaded = load_onnx(model, inputs, input_size_list, None, outputs)
    built = build_for("vendor", loaded, cfg, do_quantization, dataset)
    Path(output).write_bytes(built.rknn)
    if package is not None:
        from rkfarm_proto.package import write_package

        write_package(Path(package), built.package.header, built.package.payload)
    return built
