"""The quantization pipeline: plan, calibrate, rewrite as QDQ (``quantize``, ``QuantBuild``), and weight-only
quantization (``quantize_weights``). See the package docstring for the steps."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import onnx

from rkfarm import graph
from rkfarm.config import RknnConfig
from rkfarm.errors import BuildError, DatasetError, NotSupportedError
from rkfarm.frontends import LoadedGraph
from rkfarm.quant.auto_hybrid import HybridResult, SearchOptions, search
from rkfarm.quant.calibrators import CALIBRATORS
from rkfarm.quant.collect import collect
from rkfarm.quant.dataset import CalibrationDataset, SampleLine
from rkfarm.quant.hybrid import float_plan, subgraph_layers
from rkfarm.quant.passes import constants_to_initializers, fold_affine, fold_batchnorm
from rkfarm.quant.plan import FUSE_POLICIES, QuantPlan, make_plan, settle_concats
from rkfarm.quant.qdq import Calibration, apply_qdq, ensure_opset, parameter_table
from rkfarm.quant.saturation import saturation_bounds
from rkfarm.specs import input_specs
from rkfarm_proto.v1 import package_pb2

log = logging.getLogger(__name__)

MIN_OPSET = 13
DTYPE = "w8a8"


@dataclass(frozen=True)
class QuantOptions:
    """Quantizer options; the vendor-visible ones come from ``config()`` through ``from_config``."""

    algorithm: str = "normal"  # a key of CALIBRATORS
    per_channel: bool = True  # quantized_method='channel'
    fuse: str = "relu"  # activations fused into the preceding op: "relu" (Relu/Clip) or "all"
    memory_budget_bytes: int = 256 * 2**20  # exposed tensors of one calibration batch
    max_batch: int = 16  # samples per calibration run, where the model allows batching

    @classmethod
    def from_config(cls, cfg: RknnConfig, **overrides: object) -> QuantOptions:
        options = cls(algorithm=cfg.quantized_algorithm, per_channel=cfg.quantized_method == "channel")
        return replace(options, **overrides)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.algorithm not in CALIBRATORS:
            raise BuildError(f"unknown quantized_algorithm {self.algorithm!r}; choose one of {', '.join(CALIBRATORS)}")
        if self.fuse not in FUSE_POLICIES:
            raise BuildError(f"fuse must be one of {', '.join(FUSE_POLICIES)}, got {self.fuse!r}")


def calibrate(model: onnx.ModelProto, cfg: RknnConfig, dataset: str, options: QuantOptions) -> Calibration:
    """Plan and calibrate ``model`` (simplified, shape-inferred float) on ``dataset``. A dynamic_input model is
    calibrated over every shape set (``per_shape_set``), one set of parameters from the merged statistics."""

    model = ensure_opset(model, MIN_OPSET)
    model = graph.infer_shapes(fold_affine(fold_batchnorm(constants_to_initializers(model))))
    if cfg.dynamic_input is not None:
        runs = per_shape_set(model, cfg, dataset)
    else:
        runs = [(model, CalibrationDataset(dataset, input_specs(model, cfg)))]
    plan = make_plan(model, options.fuse, options.per_channel)
    calibrator = CALIBRATORS[options.algorithm]()
    for fixed, data in runs:
        collect(fixed, plan.activations, data, calibrator, options.memory_budget_bytes, options.max_batch)
    started = time.perf_counter()
    outputs = {o.name for o in model.graph.output} | softmax_inputs(model)
    observed = {t: (st.min, st.max) for t, st in calibrator.stats.items()}
    bounds = saturation_bounds(model, plan, observed)
    plan.clamps = {t: bounds[rep] for rep in bounds for t in plan.groups[rep]}
    ranges = settle_concats(plan, calibrator.compute(plan.groups, full_range=outputs, bounds=bounds))
    log.info("%s ranges for %d groups in %.2f s", options.algorithm, len(ranges), time.perf_counter() - started)
    samples = len({line.number for _, data in runs for line in data.lines})
    table = parameter_table(model, plan, ranges, weight_search=options.algorithm == "mmse")
    return Calibration(model, plan, table, samples)


def softmax_inputs(model: onnx.ModelProto) -> set[str]:
    """Tensors a Softmax reads: they keep their observed range with every algorithm, like the model outputs.
    A softmax is decided by its largest inputs, which a clipping search takes for a tail: mmse clipped PP-OCRv4
    rec's logits from 19.1 to 9.8, which cost more output cosine (0.024) than any other tensor's range."""
    return {n.input[0] for n in model.graph.node if n.op_type in ("Softmax", "LogSoftmax") and n.input}


def per_shape_set(
    model: onnx.ModelProto, cfg: RknnConfig, dataset: str
) -> list[tuple[onnx.ModelProto, CalibrationDataset]]:
    """The calibration runs of a dynamic_input model: per shape set, the model fixed to it and the dataset lines
    it takes. Images are resized to each set's size and so calibrate every set; a line of .npy arrays goes to
    the set(s) of its shapes (the vendor takes .npy of the largest set only) and must fit one. The statistics of
    all runs merge into one set of parameters, as the payload has one for every shape."""
    from rkfarm.dynamic import fixed_to

    sets = cfg.dynamic_input or []
    runs = []
    used: set[int] = set()
    skipped: dict[int, SampleLine] = {}
    for index, shapes in enumerate(sets):
        fixed = fixed_to(model, shapes)
        data = CalibrationDataset(dataset, input_specs(fixed, cfg), skip_unfit=len(sets) > 1)
        skipped.update((line.number, line) for line in data.skipped)
        if not data.lines:
            log.info("dynamic_input[%d] %s: no calibration sample has its shapes", index, shapes)
            continue
        used.update(line.number for line in data.lines)
        runs.append((fixed, data))
        log.info("dynamic_input[%d] %s: calibrating on %d sample(s)", index, shapes, len(data))
    unfit = [line for number, line in sorted(skipped.items()) if number not in used]
    if unfit:
        raise DatasetError(
            f"{dataset}: line {unfit[0].number}: its .npy arrays fit none of the dynamic_input shape sets "
            f"{[list(map(list, s)) for s in sets]} ({len(unfit)} such line(s)); give arrays of one set's shapes"
        )
    if not runs:
        raise DatasetError(f"{dataset}: no calibration sample fits a dynamic_input shape set")
    return runs


@dataclass
class QuantResult:
    """A quantized build: the QDQ model, and what accuracy analysis and hybrid quantization start from."""

    calibration: Calibration  # the prepared float model, the int8 plan, the parameters
    model: onnx.ModelProto  # the QDQ payload
    summary: package_pb2.QuantizationSummary
    options: QuantOptions
    float_layers: list[str] = field(default_factory=list)  # kept float by hybrid quantization, as chosen
    hybrid: HybridResult | None = None  # what auto_hybrid / proposal measured

    def analysed_tensors(self) -> list[str]:
        """The tensors accuracy analysis compares: every int8 tensor of the full plan, and the model outputs."""
        cal = self.calibration
        outputs = [o.name for o in cal.model.graph.output]
        return list(dict.fromkeys([*cal.plan.activations, *cal.plan.kept_float, *outputs]))


def finish(
    calibration: Calibration,
    options: QuantOptions,
    float_layers: Sequence[str] = (),
    hybrid: HybridResult | None = None,
) -> QuantResult:
    """The QDQ model of a calibration, with ``float_layers`` (and what shares their parameters) kept in float."""
    plan = float_plan(calibration.model, calibration.plan, float_layers)
    quantized = apply_qdq(calibration.model, plan, calibration.table)
    summary = package_pb2.QuantizationSummary(
        quantized=True,
        dtype=DTYPE,
        algorithm=options.algorithm,
        method="channel" if options.per_channel else "layer",
        calibration_samples=calibration.samples,
        quantized_tensors=len(plan.activations),
        float_tensors=plan.kept_float,
    )
    return QuantResult(calibration, quantized, summary, options, list(float_layers), hybrid)


def quantize(
    model: onnx.ModelProto,
    loaded: LoadedGraph,
    cfg: RknnConfig,
    dataset: str,
    options: QuantOptions | None = None,
) -> tuple[onnx.ModelProto, package_pb2.QuantizationSummary]:
    """The int8 QDQ model and its summary (the ``Quantizer`` hook of ``build_package``)."""
    build = QuantBuild(options)
    return build(model, loaded, cfg, dataset)


@dataclass
class QuantBuild:
    """``build_package``'s quantizer hook that keeps its result, with optional hybrid quantization.

    ``custom_hybrid``: [input, output] tensor pairs whose subgraphs stay float; ``search``: find the fewest
    layers to keep float for the output to reach a threshold (``auto_hybrid``, or step 1's proposal)."""

    options: QuantOptions | None = None
    custom_hybrid: Sequence[Sequence[str]] = ()
    search: SearchOptions | None = None
    result: QuantResult | None = None

    def __call__(
        self, model: onnx.ModelProto, loaded: LoadedGraph, cfg: RknnConfig, dataset: str
    ) -> tuple[onnx.ModelProto, package_pb2.QuantizationSummary]:
        options = self.options or QuantOptions.from_config(cfg)
        if self.search is not None and cfg.dynamic_input is not None:
            raise NotSupportedError(
                "auto_hybrid (and hybrid_quantization_step1's proposal) with config(dynamic_input=...) is not "
                "supported: list the float layers with custom_hybrid, or build one shape per package"
            )
        calibration = calibrate(model, cfg, dataset, options)
        floats: list[str] = []
        if self.custom_hybrid:
            floats = subgraph_layers(calibration.model, calibration.plan, self.custom_hybrid)
        hybrid = None
        if self.search is not None:
            hybrid = search(calibration, cfg, dataset, self.search, fixed=floats)
            floats = [*floats, *hybrid.float_layers]
        self.result = finish(calibration, options, floats, hybrid)
        summary = self.result.summary
        log.info(
            "quantized %s: %d int8 activations, %d in float, %d int8 weights (%s, per-%s)",
            loaded.source_name,
            summary.quantized_tensors,
            len(summary.float_tensors),
            len(calibration.plan.weights),
            summary.algorithm,
            summary.method,
        )
        return self.result.model, summary


def quantize_weights(
    model: onnx.ModelProto, cfg: RknnConfig
) -> tuple[onnx.ModelProto, package_pb2.QuantizationSummary]:
    """Weights stored int8 (per channel or per tensor), computed in float (``float_dtype``)."""
    per_channel = cfg.quantized_method == "channel"
    model = ensure_opset(model, MIN_OPSET)
    plan = make_plan(model, per_channel=per_channel)
    plan = QuantPlan([], {}, {}, plan.weights, [])
    out = apply_qdq(model, plan, parameter_table(model, plan, {}, activations=False))
    if cfg.float_dtype == "float16":
        out = _float16_compute(out)
    summary = package_pb2.QuantizationSummary(
        dtype=DTYPE, method="channel" if per_channel else "layer", weights_only=True
    )
    log.info("stored %d weights as int8; computing in %s", len(plan.weights), cfg.float_dtype)
    return out, summary


def _float16_compute(model: onnx.ModelProto) -> onnx.ModelProto:
    """float16 compute after the float32 DequantizeLinear outputs, keeping float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    try:
        converted = convert_float_to_float16(
            model, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, "DequantizeLinear"]
        )
    except Exception as exc:
        raise BuildError(f"float16 conversion failed: {exc}; try config(float_dtype='float32')") from None
    graph.topological_sort(converted)
    return converted  # type: ignore[no-any-return]
