"""Parameters for a plan, the QDQ rewrite that applies them, and reading them back from a QDQ model.

The rewrite produces standard ONNX: every int8 activation ``t`` becomes ``t -> QuantizeLinear ->
DequantizeLinear -> consumers``; weights are stored int8 (biases int32) behind a ``DequantizeLinear``. ONNX
Runtime fuses ``DQ -> Conv -> Q`` into ``QLinearConv`` (and likewise for MatMul, Add, Mul, pooling, Concat,
Sigmoid), drops Q/DQ pairs around shape-only ops and removes a Relu/Clip whose range the following
QuantizeLinear already enforces — the same integer arithmetic on the simulator and on every agent.

Activations are stored as uint8 with the zero point shifted by 128: the same 256 levels, the same scale, the
same real values (uint8 level ``q + 128`` is int8 level ``q``). ONNX Runtime's x86 integer kernels take uint8
activations; given int8 ones it rewrites them to uint8 itself, but that rewrite gives up on tensors read by
several nodes and leaves their convolutions in float (23 of the PP-OCR classifier's 53). Weights stay int8
(symmetric), biases int32.

Initializer names follow one convention, which is how ``table_from_qdq`` reads parameters back:
``<key>_scale``, ``<key>_zero_point``, and ``<key>_quantized`` for stored weights, where ``<key>`` is the
activation tensor's or the weight's name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

from rkfarm import graph
from rkfarm.errors import BuildError
from rkfarm.quant.plan import BIAS_INPUT, COMPUTE_OPS, QuantPlan, WeightUse
from rkfarm.quant.saturation import record_clamps
from rkfarm.quant.scheme import (
    INT8_MAX,
    INT8_MIN,
    INT32_MAX,
    INT32_MIN,
    WEIGHT_LEVEL,
    QuantParams,
    activation_params,
    bias_params,
    quantize_array,
    weight_params,
    weight_params_from_absmax,
    weight_params_mse,
)

log = logging.getLogger(__name__)

QuantTable = dict[str, QuantParams]


@dataclass
class Calibration:
    """What calibration produced: the model it applies to, the plan, the parameters, the sample count."""

    model: onnx.ModelProto
    plan: QuantPlan
    table: QuantTable
    samples: int


ACTIVATION_OFFSET = 128  # int8 level q is stored as uint8 q + 128
_NP_TO_ONNX = {np.dtype(np.int8): onnx.TensorProto.INT8, np.dtype(np.int32): onnx.TensorProto.INT32}


def parameter_table(
    model: onnx.ModelProto,
    plan: QuantPlan,
    ranges: Mapping[str, tuple[float, float]],
    activations: bool = True,
    given: Mapping[str, QuantParams] | None = None,
    weight_search: bool = False,
) -> QuantTable:
    """Parameters of every planned tensor: activations from their group's range, then weights and biases.

    ``given`` (hybrid quantization step 2: a ``.quantization.cfg``) supplies activation and weight parameters
    ahead of ``ranges`` and the weights' own extremes; biases always follow ``s_in * s_w``. ``weight_search``
    (``mmse``): each weight channel's clipping level minimises its squared error instead of being its max |w|."""
    given = given or {}
    table: QuantTable = {}
    if activations:
        for tensor in plan.activations:
            if tensor in given:
                table[tensor] = given[tensor]
                continue
            lo, hi = ranges[plan.group_of[tensor]]
            table[tensor] = activation_params(lo, hi)
    inits = {t.name: t for t in model.graph.initializer}
    for use in plan.weights:
        weight = numpy_helper.to_array(inits[use.weight])
        if use.weight_key not in table:
            if use.weight_key in given:
                params = given[use.weight_key]
            else:
                params = (weight_params_mse if weight_search else weight_params)(weight, use.axis)
            if activations and use.bias is not None and use.activation is not None:
                params = _fit_bias(params, numpy_helper.to_array(inits[use.bias]), table[use.activation], use)
            table[use.weight_key] = params
        if activations and use.bias_key is not None and use.activation is not None:
            table[use.bias_key] = bias_params(table[use.activation].scale[0], table[use.weight_key])
    return table


def _fit_bias(params: QuantParams, bias: npt.NDArray[Any], act: QuantParams, use: WeightUse) -> QuantParams:
    """Widen weight scales where a bias would overflow int32 at s_in * s_w (near-zero weight channels)."""
    needed = np.abs(bias.astype(np.float64)) / (float(act.scale[0]) * INT32_MAX) * 127
    absmax = params.scale.astype(np.float64) * 127
    if np.all(needed <= absmax):
        return params
    log.debug("widening weight scales of %s so its bias fits int32", use.weight)
    return weight_params_from_absmax(np.maximum(absmax, needed * 1.01), params.axis)


class _Names:
    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.used = {t.name for t in g.initializer} | {v.name for v in [*g.input, *g.output, *g.value_info]}
        self.used |= {n for node in g.node for n in [*node.input, *node.output, node.name]}

    def __call__(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def _stored_zero_point(params: QuantParams) -> npt.NDArray[np.integer[Any]]:
    """The zero point as the payload stores it: activations as uint8 (see the module docstring)."""
    if params.dtype == "int32":
        return params.zero_point.astype(np.int32)
    if params.qmin == INT8_MIN:
        return (params.zero_point + ACTIVATION_OFFSET).astype(np.uint8)
    return params.zero_point.astype(np.int8)


def _param_inits(key: str, params: QuantParams, names: _Names) -> tuple[list[onnx.TensorProto], list[str]]:
    per_tensor = params.axis is None
    scale = params.scale.reshape(()) if per_tensor else params.scale
    zero = _stored_zero_point(params)
    zero = zero.reshape(()) if per_tensor else zero
    s_name, z_name = names(f"{key}_scale"), names(f"{key}_zero_point")
    return [numpy_helper.from_array(scale, s_name), numpy_helper.from_array(zero, z_name)], [s_name, z_name]


def apply_qdq(model: onnx.ModelProto, plan: QuantPlan, table: QuantTable) -> onnx.ModelProto:
    """The model with Q/DQ around every planned activation and int8/int32 weights and biases."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    names = _Names(m)
    inits = {t.name: t for t in g.initializer}
    new_inits: list[onnx.TensorProto] = []
    front: list[onnx.NodeProto] = []
    stored: dict[str, str] = {}  # key -> DequantizeLinear output

    def store(key: str, source: str, params: QuantParams) -> str:
        if key not in stored:
            q = quantize_array(numpy_helper.to_array(inits[source]), params)
            q_name = names(f"{key}_quantized")
            extra, (s_name, z_name) = _param_inits(key, params, names)
            new_inits.extend([numpy_helper.from_array(q, q_name), *extra])
            stored[key] = names(f"{key}_dequantized")
            dq = helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [stored[key]], names(f"{key}_DQ"))
            if params.axis is not None:
                dq.attribute.append(helper.make_attribute("axis", params.axis))
            front.append(dq)
        return stored[key]

    for use in plan.weights:
        node = g.node[use.node]
        if use.weight_key in table:
            node.input[COMPUTE_OPS[node.op_type]] = store(use.weight_key, use.weight, table[use.weight_key])
        if use.bias_key is not None and use.bias is not None and use.bias_key in table:
            node.input[BIAS_INPUT[node.op_type]] = store(use.bias_key, use.bias, table[use.bias_key])

    after: dict[str, list[onnx.NodeProto]] = {}
    outputs = {o.name for o in g.output}
    inputs = {i.name for i in g.input}
    producer = {o: node for node in g.node for o in node.output}
    for tensor in plan.activations:
        if tensor not in table:
            continue
        params = table[tensor]
        extra, qparams = _param_inits(tensor, params, names)
        new_inits.extend(extra)
        quantized = names(f"{tensor}_quantized")
        if tensor in outputs and tensor not in inputs:
            source = names(f"{tensor}_float")  # keep the graph output's name on the dequantized value
            _rename_output(producer[tensor], tensor, source)
            dequantized = tensor
        else:
            source, dequantized = tensor, names(f"{tensor}_dequantized")
            for node in g.node:
                for k, name in enumerate(node.input):
                    if name == tensor:
                        node.input[k] = dequantized
        pair = [
            helper.make_node("QuantizeLinear", [source, *qparams], [quantized], names(f"{tensor}_Q")),
            helper.make_node("DequantizeLinear", [quantized, *qparams], [dequantized], names(f"{tensor}_DQ")),
        ]
        after.setdefault(source, []).extend(pair)

    graph.place_after_producers(g, after, "quantization", front)
    g.initializer.extend(new_inits)
    del g.value_info[:]
    graph.eliminate_dead_nodes(m)
    record_clamps(m, {t: bounds for t, bounds in plan.clamps.items() if t in table})
    return m


def _rename_output(node: onnx.NodeProto, old: str, new: str) -> None:
    for k, name in enumerate(node.output):
        if name == old:
            node.output[k] = new


def table_from_qdq(model: onnx.ModelProto) -> QuantTable:
    """The parameters stored in a QDQ model, keyed as when they were made, in graph order (a weight where the
    op that reads it comes)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    table: QuantTable = {}
    weight_keys: dict[str, str] = {}  # DequantizeLinear output -> key
    order: list[str] = []
    for node in g.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            order.extend(weight_keys[name] for name in node.input if name in weight_keys)
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        is_weight = node.op_type == "DequantizeLinear" and node.input[0] in inits
        if node.op_type == "DequantizeLinear" and not is_weight:
            continue  # an activation's DQ repeats its Q's parameters
        s_name, z_name = node.input[1], node.input[2]
        if s_name not in inits or z_name not in inits:
            continue
        key = s_name.removesuffix("_scale")
        if is_weight:
            weight_keys[node.output[0]] = key
        else:
            order.append(key)
        zero = numpy_helper.to_array(inits[z_name])
        scale = numpy_helper.to_array(inits[s_name]).astype(np.float32).reshape(-1)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) if zero.ndim == 1 else None
        zero_point = zero.reshape(-1).astype(np.int64)
        if zero.dtype == np.int32:
            table[key] = QuantParams("int32", scale, zero_point, INT32_MIN, INT32_MAX, axis)
        elif zero.dtype == np.uint8:
            table[key] = QuantParams("int8", scale, zero_point - ACTIVATION_OFFSET, INT8_MIN, INT8_MAX, axis)
        else:
            qmin = -WEIGHT_LEVEL if is_weight else INT8_MIN
            table[key] = QuantParams("int8", scale, zero_point, qmin, INT8_MAX, axis)
    return {key: table[key] for key in dict.fromkeys([*order, *table])}


def ensure_opset(model: onnx.ModelProto, minimum: int) -> onnx.ModelProto:
    """Upgrade the default-domain opset to ``minimum`` (per-channel QuantizeLinear needs 13)."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= minimum:
        return model
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, minimum)
    except Exception as exc:  # the converter raises plain RuntimeErrors from C++
        raise BuildError(
            f"cannot upgrade the model from opset {current} to {minimum} for quantization: {exc}"
        ) from None
    log.info("upgraded the model from opset %d to %d for quantization", current, minimum)
    return graph.infer_shapes(upgraded)
