"""Run the float model on the calibration set and stream every planned tensor into a calibrator.

The model is run by ONNX Runtime with the planned tensors exposed as extra outputs. Samples are grouped into
batches when the model's batch dim can grow (checked with shape inference at two batch sizes: every tensor of
the graph must scale with the batch; Reshapes that spell the batch out as 1 are rewritten to keep it); the batch
size is chosen so that one batch of exposed tensors fits ``memory_budget_bytes``. Each
batch's outputs are folded into the calibrator and dropped, so memory does not grow with the dataset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from rkfarm import graph
from rkfarm.errors import BuildError
from rkfarm.quant.calibrators import Calibrator
from rkfarm.quant.dataset import Array, CalibrationDataset
from rkfarm.runtime.sessions import open_session

log = logging.getLogger(__name__)

_BATCH_DIM = "calibration_batch"


def expose(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are exactly ``tensors`` (float32 intermediates exposed)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {v.name: v for v in [*m.graph.value_info, *m.graph.input, *m.graph.output]}
    del m.graph.output[:]
    for name in tensors:
        value = onnx.ValueInfoProto()
        if name in known:
            value.CopyFrom(known[name])
        else:
            value = helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        m.graph.output.append(value)
    return m


def _rows(model: onnx.ModelProto) -> list[int]:
    """Dim 0 of every input: the rows one run takes of each (inputs may differ, e.g. a cache beside an image)."""
    rows = []
    for value in graph.real_inputs(model):
        dims = graph.dims_of(value)
        rows.append(dims[0] if dims and dims[0] > 0 else 1)
    return rows


def _scaled_shapes(model: onnx.ModelProto, factor: int) -> dict[str, list[int]] | None:
    """Inferred shapes of every tensor with each input's batch multiplied by ``factor`` (None: unknown)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for value in graph.real_inputs(m):
        dims = graph.dims_of(value)
        if not dims or dims[0] <= 0:
            return None
        dims[0] *= factor
        graph.set_dims(value, dims)
    for value in m.graph.output:
        value.type.tensor_type.ClearField("shape")
    try:
        inferred = graph.infer_shapes(m)
    except BuildError:
        return None
    return {
        v.name: graph.dims_of(v) for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    }


def batch_factor(model: onnx.ModelProto, tensors: Sequence[str], memory_budget_bytes: int, max_factor: int) -> int:
    """How many model-batches to run at once: 1 unless every tensor of the graph scales with the batch dim
    (shape inference at two batch sizes must agree), and as many as fit ``memory_budget_bytes`` of exposed
    tensors."""
    base = _scaled_shapes(model, 1)
    if base is None or any(name not in base or not base[name] or min(base[name]) <= 0 for name in tensors):
        return 1
    row_bytes = sum(int(np.prod(base[name])) * 4 for name in tensors)
    factor = int(max(1, min(max_factor, memory_budget_bytes // max(row_bytes, 1))))
    if factor == 1:
        return 1
    scaled = _scaled_shapes(model, factor)
    if scaled is None or any(
        scaled.get(name) != ([dims[0] * factor, *dims[1:]] if dims else dims) for name, dims in base.items()
    ):
        log.info("calibrating one batch at a time: the model's batch dim is fixed inside the graph")
        return 1
    return factor


def batchable(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose Reshapes keep the batch dim (``0``, "copy from input") where they spelled it out as the
    batch size: exporters freeze ``x.reshape(1, -1)``, which would otherwise pin the model to one batch."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    rows = _rows(m)
    if len(set(rows)) != 1:
        return m  # inputs of different dim 0: that dim is not one batch, leave the graph alone
    inits = {t.name: t for t in m.graph.initializer}
    shapes = {v.name: graph.dims_of(v) for v in [*m.graph.value_info, *m.graph.input]}
    for node in m.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            continue
        target = numpy_helper.to_array(inits[node.input[1]]).copy()
        source = shapes.get(node.input[0], [])
        if target.ndim == 1 and target.size and target[0] == rows[0] and source and source[0] == rows[0]:
            target[0] = 0
            name = f"{node.input[1]}_keep_batch"
            if name not in inits:
                inits[name] = numpy_helper.from_array(target, name)
                m.graph.initializer.append(inits[name])
            node.input[1] = name
    return m


def _free_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for value in [*graph.real_inputs(m), *m.graph.output]:
        shape = value.type.tensor_type.shape
        if shape.dim:
            shape.dim[0].Clear()
            shape.dim[0].dim_param = _BATCH_DIM
    for value in m.graph.value_info:  # stale shapes go; element types stay (custom ops are declared by them)
        value.type.tensor_type.ClearField("shape")
    return m


def _batches(dataset: CalibrationDataset, rows: Sequence[int], exact: bool) -> Iterator[tuple[list[Array], int]]:
    """Samples concatenated into batches of ``rows[i]`` rows of input ``i``, with the number of samples each
    batch completes. Inputs advance in lockstep: the dataset checked that every input of a sample holds the
    same share of a run, so counting the first input's rows counts them all.

    ``exact``: the model takes exactly ``rows`` rows, so the last batch is topped up with samples from the
    start of the dataset (which only repeats data the statistics have already seen).
    """
    pending: list[list[Array]] = []
    have = samples = 0
    for sample in dataset:
        pending.append(sample)
        have += sample[0].shape[0]
        samples += 1
        while have >= rows[0]:
            joined = [np.concatenate(parts) for parts in zip(*pending)]
            yield [a[:n] for a, n in zip(joined, rows)], samples
            rest = [a[n:] for a, n in zip(joined, rows)]
            pending = [rest] if rest[0].shape[0] else []
            have -= rows[0]
            samples = 0
    if not have:
        return
    if exact:
        log.info("topping up the last calibration batch (%d of %d rows) from the start of the dataset", have, rows[0])
        while have < rows[0]:
            for sample in dataset:
                pending.append(sample)
                have += sample[0].shape[0]
                if have >= rows[0]:
                    break
    joined = [np.concatenate(parts) for parts in zip(*pending)]
    yield [a[:n] for a, n in zip(joined, rows)], samples


def model_batches(
    dataset: CalibrationDataset, model: onnx.ModelProto, limit: int | None = None
) -> Iterator[list[Array]]:
    """The dataset's samples as feeds of the model's own batch size (the last topped up), at most ``limit``."""
    for count, (feeds, _) in enumerate(_batches(dataset, _rows(model), exact=True)):
        if limit is not None and count >= limit:
            return
        yield feeds


def collect(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    dataset: CalibrationDataset,
    calibrator: Calibrator,
    memory_budget_bytes: int,
    max_batch: int,
) -> None:
    """Feed every sample of ``dataset`` through ``model`` and every exposed tensor into ``calibrator``."""
    from tqdm import tqdm

    started = time.perf_counter()
    model = batchable(model)
    exposed = expose(model, tensors)
    rows = _rows(model)
    factor = 1
    if len(set(rows)) == 1:  # stack several runs only where dim 0 is one batch for every input
        runs = max(1, sum(dataset.line_rows) // rows[0])
        factor = min(batch_factor(model, tensors, memory_budget_bytes, max(1, max_batch // rows[0])), runs)
    flexible = factor > 1
    if flexible:
        exposed = _free_batch(exposed)
        rows = [r * factor for r in rows]
    session = open_session(exposed, "float model for calibration", calibration=True)
    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    with tqdm(total=len(dataset), desc="calibrating", unit="sample", leave=False, disable=None) as bar:
        for feeds, samples in _batches(dataset, rows, exact=not flexible):
            try:
                outputs = session.run(output_names, dict(zip(input_names, feeds)))
            except Exception as exc:
                raise BuildError(f"ONNX Runtime failed on a calibration batch: {exc}") from None
            for name, value in zip(output_names, outputs):
                calibrator.collect(name, np.asarray(value))
            del outputs
            bar.update(samples)
    log.info(
        "calibrated %d tensors on %d samples (batch %d) in %.2f s",
        len(tensors),
        len(dataset),
        rows[0],
        time.perf_counter() - started,
    )
