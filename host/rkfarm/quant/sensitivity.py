"""Each layer's effect on the model's output when it alone is quantized, measured with one ONNX Runtime session.

Why "alone": in a fully quantized model the rounding errors of a hundred layers partly cancel at the output,
so switching one layer back to float moves the output by a small, sample-dependent amount (PP-OCRv4
recognition: +-0.01 of cosine, either sign). Ranking by that is ranking noise, and so was ranking by each
layer's single cosine (the error it adds to its own output, blind to how later layers amplify it): the layers
chosen either way helped the 8 search samples and hurt 16 held-out ones. The error a layer causes when every
other layer is float has no partner to cancel with; ranking by it put the first convolutions of PP-OCRv4
recognition first, and its first 8 layers raised the held-out cosine from 0.966 to 0.981.

The *switch model* is the float model with every int8 tensor behind a switch: an ``If`` on one boolean input
per candidate (a set of tensors sharing parameters) chooses ``DQ(Q(x))`` or ``x`` itself, so one session
measures every candidate in turn and a switched-off tensor costs nothing (PP-OCRv4 recognition runs as fast as
the float model). Weights stay float: their per-channel rounding is small next to the activations', and
switchable weights would keep ONNX Runtime from pre-packing the convolutions (5x slower). This ranks; the
real QDQ model decides.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from rkfarm import graph
from rkfarm.metrics import cosine
from rkfarm.quant.dataset import Array
from rkfarm.quant.plan import QuantPlan
from rkfarm.quant.qdq import ACTIVATION_OFFSET, QuantTable
from rkfarm.quant.scheme import QuantParams
from rkfarm.runtime.sessions import open_session

log = logging.getLogger(__name__)

SWITCH_PREFIX = "hybrid_switch::"


def _params(prefix: str, params: QuantParams) -> tuple[list[onnx.TensorProto], list[str]]:
    """An activation's scale and zero point as the payload stores them (uint8, zero point + 128)."""
    scale = params.scale.reshape(())
    zero = (params.zero_point + ACTIVATION_OFFSET).astype(np.uint8).reshape(())
    names = [f"{prefix}::scale", f"{prefix}::zero"]
    return [numpy_helper.from_array(scale, names[0]), numpy_helper.from_array(zero, names[1])], names


def _switch(source: str, scale: str, zero: str, switch: str, out: str) -> onnx.NodeProto:
    """``out = switch ? DQ(Q(source)) : source`` — an If node, so a switched-off tensor costs no rounding pass."""
    quantize = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", [source, scale, zero], [f"{out}::q"]),
            helper.make_node("DequantizeLinear", [f"{out}::q", scale, zero], [f"{out}::dq"]),
        ],
        f"{out}::quantized",
        [],
        [helper.make_tensor_value_info(f"{out}::dq", onnx.TensorProto.FLOAT, None)],
    )
    keep = helper.make_graph(
        [helper.make_node("Identity", [source], [f"{out}::same"])],
        f"{out}::float",
        [],
        [helper.make_tensor_value_info(f"{out}::same", onnx.TensorProto.FLOAT, None)],
    )
    return helper.make_node("If", [switch], [out], then_branch=quantize, else_branch=keep)


def switch_model(model: onnx.ModelProto, plan: QuantPlan, table: QuantTable) -> tuple[onnx.ModelProto, list[str]]:
    """The switch model of ``plan`` (see the module docstring) and its candidates, one per parameter group."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    candidates = list(plan.groups)
    new_inits: list[onnx.TensorProto] = []
    outputs = {o.name for o in g.output}
    after: dict[str, list[onnx.NodeProto]] = {}
    renamed: dict[str, str] = {}
    for tensor in plan.activations:
        source = tensor
        if tensor in outputs:
            source = f"{tensor}::float"
            renamed[tensor] = source
        extra, (scale, zero) = _params(tensor, table[tensor])
        new_inits.extend(extra)
        mixed = tensor if tensor in outputs else f"{tensor}::mixed"
        after[source] = [_switch(source, scale, zero, SWITCH_PREFIX + plan.group_of[tensor], mixed)]
        if tensor not in outputs:
            for node in g.node:
                for k, name in enumerate(node.input):
                    if name == tensor:
                        node.input[k] = mixed
    for node in g.node:
        for k, name in enumerate(node.output):
            node.output[k] = renamed.get(name, name)
    graph.place_after_producers(g, after, "the switches")
    g.initializer.extend(new_inits)
    g.input.extend(helper.make_tensor_value_info(SWITCH_PREFIX + rep, onnx.TensorProto.BOOL, []) for rep in candidates)
    del g.value_info[:]
    return m, candidates


def isolated_errors(
    model: onnx.ModelProto,
    plan: QuantPlan,
    table: QuantTable,
    samples: Sequence[Sequence[Array]],
    only: Sequence[str] | None = None,
) -> dict[str, float]:
    """Per candidate (or per one of ``only``): the mean over samples and outputs of 1 - cosine(output, float
    output) with that candidate alone quantized."""
    from tqdm import tqdm

    switched, candidates = switch_model(model, plan, table)
    session = open_session(switched, "switch")
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    off = {SWITCH_PREFIX + rep: np.zeros((), np.bool_) for rep in candidates}
    feeds = [dict(zip(inputs, sample)) for sample in samples]
    golden = [session.run(None, {**feed, **off}) for feed in feeds]
    errors: dict[str, float] = {}
    for rep in tqdm(only or candidates, desc="layer sensitivity", unit="layer", leave=False, disable=None):
        switches = {**off, SWITCH_PREFIX + rep: np.ones((), np.bool_)}
        total = 0.0
        for feed, want in zip(feeds, golden):
            got = session.run(None, {**feed, **switches})
            total += float(np.mean([1.0 - cosine(w, o) for w, o in zip(want, got)]))
        errors[rep] = total / max(len(feeds), 1)
    return errors
