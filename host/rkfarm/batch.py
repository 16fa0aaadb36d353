"""``build(rknn_batch_size=N)``: a model that runs N samples at once, each as a batch-1 run would.

As the vendor defines it, the batch dim (dim 0) of every input and every output becomes N: a MobileNet taking
[1, 224, 224, 3] and giving [1, 1001] takes [4, 224, 224, 3] and gives [4, 1001] with ``rknn_batch_size=4``;
``inference`` then takes arrays of N samples stacked along dim 0 and returns N rows per output. Inputs must have
batch 1 in the loaded model (``graph.set_batch_size`` refuses others).

A graph may spell its batch out as a constant (an exported ``x.view(1, -1)``): such Reshapes keep the batch
instead (``quant.collect.batchable``). What still ties samples together cannot always be seen in the shapes, so
the build runs the batched float model once on N random samples and the batch-1 model on each of them, and
refuses the batch if any output row differs: a batched model never mixes samples silently.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper

from rkfarm import graph
from rkfarm.errors import BuildError
from rkfarm_proto.tensors import shape_str

log = logging.getLogger(__name__)

Array = npt.NDArray[np.generic]


def set_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """``model`` (batch 1) with every input's dim 0 set to ``batch``; every output's dim 0 must follow it."""
    from rkfarm.quant.collect import batchable

    m = batchable(model)
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")  # inferred again at the new batch
    batched = graph.set_batch_size(m, batch)
    for out in batched.graph.output:
        dims = graph.dims_of(out)
        if not out.type.tensor_type.HasField("shape") or (dims and dims[0] < 0):
            continue  # unknown to shape inference: the check run (``verify``) decides
        if not dims or dims[0] != batch:
            raise BuildError(
                f"rknn_batch_size={batch}: output {out.name!r} is {shape_str(dims)} when the inputs have batch "
                f"{batch}; its dim 0 does not follow the batch, so the model cannot run {batch} samples at once"
            )
    return batched


def _sample(value: onnx.ValueInfoProto, rng: np.random.Generator) -> Array:
    dims = [max(1, d) for d in graph.dims_of(value)]
    dims[:1] = [1] if dims else []
    dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(dims).astype(dtype)
    if dtype == np.uint8:
        return rng.integers(0, 256, dims).astype(dtype)
    return np.zeros(dims, dtype)  # indices, masks: zeros are always valid


def verify(single: onnx.ModelProto, batched: onnx.ModelProto, batch: int) -> None:
    """Run ``batched`` on ``batch`` random samples and ``single`` on each: every output row must be that sample's
    (max abs diff <= 1e-4 * max(1, output range)); BuildError naming the output otherwise."""
    from rkfarm.runtime.sessions import open_session

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    ins = graph.real_inputs(single)
    samples = [[_sample(value, rng) for value in ins] for _ in range(batch)]
    names = [o.name for o in single.graph.output]
    one = open_session(single, "batch-1")
    many = open_session(batched, f"rknn_batch_size={batch}")
    try:
        rows = [one.run(names, {v.name: a for v, a in zip(ins, sample)}) for sample in samples]
        stacked = {v.name: np.concatenate([s[k] for s in samples]) for k, v in enumerate(ins)}
        got = many.run(names, stacked)
    except Exception as exc:  # onnxruntime raises its own exception types from C++
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildError(f"rknn_batch_size={batch}: the batched model does not run: {first}") from None
    for k, name in enumerate(names):
        want = np.concatenate([np.asarray(r[k]) for r in rows]).astype(np.float64)
        have = np.asarray(got[k]).astype(np.float64)
        if have.shape != want.shape:
            raise BuildError(
                f"rknn_batch_size={batch}: output {name!r} is {shape_str(have.shape)} for {batch} samples, "
                f"not the {batch} batch-1 outputs {shape_str(want.shape)}: the graph fixes its batch"
            )
        finite = np.isfinite(want)
        span = float(np.ptp(want[finite])) if finite.any() else 0.0
        diff = np.abs(np.where(finite, have - want, 0.0))
        same_nans = np.array_equal(np.isnan(have), np.isnan(want))
        if not same_nans or float(diff.max(initial=0.0)) > 1e-4 * max(1.0, span):
            raise BuildError(
                f"rknn_batch_size={batch}: output {name!r} of the batched model differs from batch-1 runs of the "
                f"same samples (max abs diff {float(diff.max(initial=0.0)):.3g}): the graph mixes the samples of a "
                "batch (a Reshape or reduction across dim 0), so it cannot run several at once"
            )
    log.info("rknn_batch_size=%d: the batched model equals %d batch-1 runs (%.2f s)", batch, batch,
             time.perf_counter() - started)  # fmt: skip
