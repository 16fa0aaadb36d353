"""Accuracy analysis: which layers of a quantized model lose accuracy, and by how much.

``run_accuracy_analysis`` runs the float model (golden) and the quantized one on a sample, compares every
layer's output two ways (entire: the quantized model end to end; single: each layer alone, fed the golden
inputs — see ``probes``), optionally runs the same instrumented model on a board agent, and writes into the
output folder:

* ``error_analysis.txt`` — the per-layer table in the vendor's layout (``text``);
* ``report.html`` — a self-contained page with a per-layer plot and a sortable table (``report``);
* ``golden/``, ``simulator/`` (and ``runtime/``) — every analysed tensor as ``<name>.txt`` and
  ``npy/<name>.npy``, named as the vendor names them, with ``map_name_to_file.txt`` (``dumps``).

``RKNN.accuracy_analysis()`` calls it after ``build()`` or ``hybrid_quantization_step2()``; hybrid
quantization uses ``LayerRunner`` / ``layer_errors`` to rank layers over several samples.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx

from rkfarm import graph
from rkfarm.analysis.dumps import MAP_FILE, DumpWriter
from rkfarm.analysis.report import render_report, write_report
from rkfarm.analysis.result import AnalysisResult, LayerError
from rkfarm.analysis.runner import LayerRunner, layer_errors
from rkfarm.analysis.text import format_error_analysis, parse_error_analysis, write_error_analysis
from rkfarm.errors import StateError
from rkfarm.metrics import Array, Means
from rkfarm.quant.collect import model_batches
from rkfarm.quant.dataset import CalibrationDataset
from rkfarm.runtime import Runtime
from rkfarm.specs import tensor_spec
from rkfarm_proto.package import ModelPackage, pack
from rkfarm_proto.v1 import package_pb2

log = logging.getLogger(__name__)

RuntimeOpener = Callable[[ModelPackage], Runtime]

__all__ = [
    "AnalysisResult",
    "LayerError",
    "LayerRunner",
    "format_error_analysis",
    "instrumented_package",
    "layer_errors",
    "parse_error_analysis",
    "render_report",
    "run_accuracy_analysis",
    "sample_feeds",
]


def instrumented_package(base: ModelPackage, model: onnx.ModelProto) -> ModelPackage:
    """``base`` with ``model`` (the entire model: every analysed tensor an output) as its payload."""
    header = package_pb2.PackageHeader()
    header.CopyFrom(base.header)
    inferred = graph.infer_shapes(model)
    del header.outputs[:]
    header.outputs.extend(tensor_spec(o) for o in inferred.graph.output)
    header.custom_string = "rkfarm accuracy analysis: every analysed tensor is an output"
    payload = inferred.SerializeToString()
    full, _ = pack(header, payload)
    return ModelPackage(header=full, payload=payload)


def sample_feeds(
    files: Sequence[str | os.PathLike[str]], package: ModelPackage, float_model: onnx.ModelProto
) -> list[Array]:
    """One sample (one image or .npy file per model input) prepared as calibration prepares it: resized,
    laid out and normalised by the package's input specs, batched as ``float_model`` takes it."""
    data = CalibrationDataset("accuracy_analysis inputs", package.header.inputs, samples=[list(files)])
    return next(model_batches(data, float_model, 1))


def run_accuracy_analysis(
    float_model: onnx.ModelProto,
    qdq_model: onnx.ModelProto,
    tensors: Sequence[str],
    feeds: Sequence[Array],
    output_dir: Path,
    model_name: str = "",
    package: ModelPackage | None = None,
    open_runtime: RuntimeOpener | None = None,
    dump: bool = True,
) -> AnalysisResult:
    """Analyse one sample (``feeds``: preprocessed model inputs) and write the files into ``output_dir``.

    With ``open_runtime`` (and the built ``package``), the entire model is packaged and run there too.
    ``dump=False`` writes the error table, the report and the name map but no tensor dumps.
    """
    started = time.perf_counter()
    runner = LayerRunner(float_model, qdq_model, tensors)
    values = runner.run(feeds)
    entire, single = Means(), Means()
    for p in runner.probes:
        entire.add(p.name, values.reference(p.name), values.entire[p.name])
        single.add(p.name, values.reference(p.name), values.single[p.name])
    dumps = DumpWriter(output_dir, runner.probes, dump)
    written = {"golden": dumps.write("golden", values.golden), "simulator": dumps.write("simulator", values.entire)}
    files = {folder: path for folder, path in written.items() if path is not None}
    where = None
    vs_golden, vs_sim = Means(), Means()
    if open_runtime is not None:
        if package is None:
            raise StateError("accuracy analysis on a runtime needs the built package")
        runtime = open_runtime(instrumented_package(package, runner.entire))
        try:
            outputs = runtime.inference(list(feeds), None, [1] * len(feeds))
            where = runtime.where
        finally:
            runtime.close()
        on_board = runner.read(outputs, dict(zip(runner.inputs, feeds)))
        for p in runner.probes:
            vs_golden.add(p.name, values.reference(p.name), on_board[p.name])
            vs_sim.add(p.name, values.entire[p.name], on_board[p.name])
        if (board_dir := dumps.write("runtime", on_board)) is not None:
            files["runtime"] = board_dir
        del on_board
    del values
    layers = []
    for p in runner.probes:
        extra = (*vs_golden.get(p.name), *vs_sim.get(p.name)) if where is not None else ()
        layers.append(LayerError(p.index, p.op, p.name, *entire.get(p.name), *single.get(p.name), *extra))
    result = AnalysisResult(layers, 1, model_name, where, output_dir)
    files["error_analysis"] = write_error_analysis(result, output_dir / "error_analysis.txt")
    files["report"] = write_report(result, output_dir / "report.html")
    files["map"] = output_dir / MAP_FILE
    result.files = files
    result.elapsed_s = time.perf_counter() - started
    worst = result.worst(1)
    log.info(
        "accuracy analysis of %d layers in %.2f s -> %s (worst layer: %s, single cosine %.6f)",
        len(layers),
        result.elapsed_s,
        output_dir,
        worst[0].name if worst else "-",
        worst[0].single_cos if worst else 1.0,
    )
    return result
