"""build(): from a loaded graph and a config to a model package (header + ONNX payload)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

import onnx

from rkfarm import __version__, graph, prequant
from rkfarm.config import RknnConfig
from rkfarm.custom_graph import custom_types
from rkfarm.errors import BuildError, NotSupportedError
from rkfarm.frontends import LoadedGraph
from rkfarm.specs import input_specs, tensor_spec
from rkfarm_proto.package import ModelPackage, pack
from rkfarm_proto.v1 import package_pb2

log = logging.getLogger(__name__)

# Hook for the quantizer: (float model, loaded graph, config, dataset, batch) -> (QDQ model, summary).
Quantizer = Callable[
    [onnx.ModelProto, LoadedGraph, RknnConfig, str], tuple[onnx.ModelProto, package_pb2.QuantizationSummary]
]


def prepare(
    loaded: LoadedGraph, cfg: RknnConfig, rknn_batch_size: int | None = None
) -> tuple[onnx.ModelProto, list[package_pb2.InputSpec]]:
    """The loaded model after the graph passes (batch size or dynamic_input shape sets, onnxslim by level,
    shapes), and its input specs. A batched model is checked against batch-1 runs (``rkfarm.batch``), a dynamic
    one run once per shape set (``rkfarm.dynamic``)."""
    model = loaded.model
    batch = _batch_size(rknn_batch_size)
    if batch > 1 and cfg.dynamic_input is not None:
        raise NotSupportedError(
            f"build(rknn_batch_size={batch}) together with config(dynamic_input=...) is not supported: give the "
            "batch in the shape sets instead (e.g. [[4, 3, 224, 224]]) for a model whose batch dim is dynamic"
        )
    if batch > 1:
        from rkfarm.batch import set_batch

        model = set_batch(model, batch)
    if cfg.dynamic_input is not None:
        from rkfarm.dynamic import apply_sets

        model = apply_sets(model, cfg.dynamic_input)
    specs = input_specs(model, cfg)  # validate mean/std before any long work
    model = graph.simplify(model, cfg.optimization_level)
    if cfg.model_pruning:
        from rkfarm.pruning import prune_dead_channels

        model = prune_dead_channels(model)
    model = graph.infer_shapes(model)
    if batch > 1:
        from rkfarm.batch import verify

        verify(loaded.model, model, batch)
    if cfg.dynamic_input is not None:
        from rkfarm.dynamic import check_runs

        check_runs(model, cfg.dynamic_input)
    return model, specs


def _batch_size(rknn_batch_size: object) -> int:
    """build()'s rknn_batch_size as the vendor takes it: None (or 1) for the model's own batch, else N > 1."""
    if rknn_batch_size is None:
        return 1
    if not isinstance(rknn_batch_size, int) or isinstance(rknn_batch_size, bool) or rknn_batch_size < 1:
        raise BuildError(f"rknn_batch_size must be a positive int, got {rknn_batch_size!r}")
    return rknn_batch_size


def build_package(
    loaded: LoadedGraph,
    cfg: RknnConfig,
    do_quantization: bool = True,
    dataset: str | None = None,
    rknn_batch_size: int | None = None,
    quantizer: Quantizer | None = None,
) -> ModelPackage:
    """Run the graph passes and package the result. Quantization is delegated to ``quantizer``."""
    started = time.perf_counter()
    model, specs = prepare(loaded, cfg, rknn_batch_size)
    summary = package_pb2.QuantizationSummary()
    own = prequant.find(model)
    if own is not None:  # refuses do_quantization; a weights-only model comes back dequantized, to build as float
        model, summary = prequant.keep(model, own, cfg, loaded.source_name, do_quantization)
    if summary.quantized:
        pass  # the model's own quantization, as the exporter made it
    elif do_quantization:
        if not dataset:
            raise BuildError(
                "build(do_quantization=True) needs dataset='dataset.txt' (calibration samples); "
                "use build(do_quantization=False) for a float model"
            )
        if quantizer is None:
            raise NotSupportedError("int8 quantization is not available in this rkfarm build")
        model, summary = quantizer(model, loaded, cfg, dataset)
    elif cfg.quantize_weight:
        from rkfarm.quant import quantize_weights

        model, summary = quantize_weights(model, cfg)
    elif cfg.float_dtype == "float16":
        model = graph.to_float16(model)
    return package_model(model, loaded, cfg, specs, summary, started, rknn_batch_size=_batch_size(rknn_batch_size))


def package_model(
    model: onnx.ModelProto,
    loaded: LoadedGraph,
    cfg: RknnConfig,
    specs: list[package_pb2.InputSpec],
    summary: package_pb2.QuantizationSummary,
    started: float | None = None,
    *,
    rknn_batch_size: int = 1,
) -> ModelPackage:
    """The package of a finished payload model: header (inputs, outputs, options, memory plan, dynamic_input
    shape sets, batch size) + ONNX bytes."""
    model = graph.infer_shapes(model)
    graph.name_nodes(model)
    graph.fit_ir_version(model)  # a board's older ONNX Runtime loads it if it has the ops
    planned = model
    if cfg.dynamic_input is not None:
        from rkfarm.dynamic import fixed_to, largest

        planned = fixed_to(model, cfg.dynamic_input[largest(cfg.dynamic_input)])  # the vendor's MaxShape
    header = package_pb2.PackageHeader(
        producer=f"rkfarm {__version__}",
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        source_model_name=loaded.source_name,
        source_model_sha256=loaded.source_sha256,
        source_framework=loaded.framework,
        inputs=specs,
        outputs=[tensor_spec(o) for o in model.graph.output],
        target_platform=cfg.target_platform or "",
        float_dtype=cfg.float_dtype,
        custom_string=cfg.custom_string or "",
        quantization=summary,
        payload_kind=package_pb2.PAYLOAD_KIND_ONNX,
        weight_bytes=graph.weight_bytes(model),
        activation_bytes=graph.activation_peak_bytes(planned),
        opset=next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0),
        build_options=cfg.as_record(),
        single_core=cfg.single_core_mode,
        custom_ops=custom_types(model),
        rknn_batch_size=rknn_batch_size if rknn_batch_size > 1 else 0,
    )
    if cfg.dynamic_input is not None:
        from rkfarm.dynamic import shape_sets_proto

        header.shape_sets.extend(shape_sets_proto(cfg.dynamic_input))
    payload = model.SerializeToString()
    full, _ = pack(header, payload)
    log.info(
        "built %s: %d nodes, %.1f KiB payload, %s, in %.2f s",
        loaded.source_name,
        len(model.graph.node),
        len(payload) / 1024,
        "int8" if summary.quantized else cfg.float_dtype,
        time.perf_counter() - (started if started is not None else time.perf_counter()),
    )
    return ModelPackage(header=full, payload=payload)
