"""Pre-quantized models: ONNX that already carries its own quantization (a QAT export, another tool's PTQ).

Such a model — QuantizeLinear/DequantizeLinear pairs (QDQ) or quantized operators (QLinearConv,
ConvInteger, ...) — keeps its quantization, as the vendor's toolkit keeps it: ``build(do_quantization=False)``
packages it as the exporter made it. No float16 rewrite: that would turn the float32 scales into float16 (an
invalid model) or wrap the Q/DQ in casts, and ONNX Runtime could no longer fuse each DequantizeLinear → op →
QuantizeLinear into its integer kernel — the payload would stop computing what the int8 model computes.
Quantizing it again is refused, like the vendor: rkfarm's quantizer would stack its own Q/DQ over the
model's, which changes the numbers.

A model whose only quantization nodes dequantize constant weights (weights-only) computes in float: like the
vendor, rkfarm folds those weights to float and builds it as a float model (float16 by default).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rkfarm import graph
from rkfarm.config import RknnConfig
from rkfarm.errors import BuildError
from rkfarm.graph import QDQ_OPS, is_quantization_op
from rkfarm_proto.v1 import package_pb2

log = logging.getLogger(__name__)

ALGORITHM = "pre-quantized"  # QuantizationSummary.algorithm: the parameters come from the model itself
_BITS: dict[int, int] = {
    TensorProto.INT4: 4,
    TensorProto.UINT4: 4,
    TensorProto.INT8: 8,
    TensorProto.UINT8: 8,
    TensorProto.FLOAT8E4M3FN: 8,
    TensorProto.FLOAT8E4M3FNUZ: 8,
    TensorProto.FLOAT8E5M2: 8,
    TensorProto.FLOAT8E5M2FNUZ: 8,
    TensorProto.INT16: 16,
    TensorProto.UINT16: 16,
}


@dataclass(frozen=True)
class OwnQuantization:
    """What quantization a model carries: its quantization nodes and the integer widths they use."""

    ops: dict[str, int]  # op type -> count, of QDQ_OPS and quantized operators
    activation_bits: int
    weight_bits: int
    per_channel: bool  # some weight has one scale per output channel
    activation_tensors: int  # tensors a QuantizeLinear quantizes at run time
    weight_dequantize: int  # DequantizeLinear nodes of constants (weights and biases)

    @property
    def weights_only(self) -> bool:
        """Only constants are dequantized: the model computes in float."""
        return self.ops == {"DequantizeLinear": self.weight_dequantize}

    @property
    def dtype(self) -> str:
        return f"w{self.weight_bits}a{self.activation_bits}"

    def nodes(self) -> str:
        """'6 QuantizeLinear / 12 DequantizeLinear nodes', plus other quantized operators."""
        text = f"{self.ops.get('QuantizeLinear', 0)} QuantizeLinear / {self.ops.get('DequantizeLinear', 0)} "
        text += "DequantizeLinear nodes"
        others = [f"{n} {op}" for op, n in sorted(self.ops.items()) if op not in QDQ_OPS]
        return text + (f", {', '.join(others)}" if others else "")

    def summary(self) -> package_pb2.QuantizationSummary:
        return package_pb2.QuantizationSummary(
            quantized=True,
            dtype=self.dtype,
            algorithm=ALGORITHM,
            method="channel" if self.per_channel else "layer",
            quantized_tensors=self.activation_tensors,
        )


def _constants(g: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializers and Constant-node values by name (exporters write either)."""
    found = {t.name: t for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    found[node.output[0]] = attr.t
    return found


def find(model: onnx.ModelProto) -> OwnQuantization | None:
    """The model's own quantization, or None for a float model."""
    g = model.graph
    ops = Counter(n.op_type for n in g.node if is_quantization_op(n))
    if not ops:
        return None
    consts = _constants(g)
    act_bits, weight_bits, per_channel, activations, weight_dq = [], [], False, set(), 0
    for node in g.node:
        if node.op_type in QDQ_OPS and node.input[0] in consts:  # a weight (QuantizeLinear: fake-quantized)
            weight_dq += node.op_type == "DequantizeLinear"
            zero = consts.get(node.input[2]) if len(node.input) > 2 else None
            dtype = consts[node.input[0]].data_type if node.op_type == "DequantizeLinear" else _zero_type(zero)
            if dtype in _BITS:  # int32 data is a bias
                weight_bits.append(_BITS[dtype])
                scale = consts.get(node.input[1])
                per_channel |= scale is not None and int(np.prod(scale.dims, dtype=np.int64)) > 1
        elif node.op_type == "QuantizeLinear":
            activations.add(node.input[0])
            act_bits.append(_BITS.get(_zero_type(consts.get(node.input[2]) if len(node.input) > 2 else None), 8))
        elif is_quantization_op(node) and node.op_type != "DequantizeLinear":
            weight_bits.extend(
                _BITS[consts[i].data_type] for i in node.input if i in consts and consts[i].data_type in _BITS
            )
    return OwnQuantization(
        dict(ops), max(act_bits, default=8), max(weight_bits, default=8), per_channel, len(activations), weight_dq
    )


def _zero_type(zero: onnx.TensorProto | None) -> int:
    return zero.data_type if zero is not None else TensorProto.UINT8  # no zero point: uint8


def keep(
    model: onnx.ModelProto, own: OwnQuantization, cfg: RknnConfig, source: str, do_quantization: bool
) -> tuple[onnx.ModelProto, package_pb2.QuantizationSummary]:
    """The payload and summary of a pre-quantized model: the model unchanged, its quantization recorded.

    A weights-only model comes back with its weights dequantized and an empty summary: a float model."""
    if do_quantization:
        raise BuildError(
            f"{source} is already quantized ({own.nodes()}): build it with do_quantization=False to keep its "
            "own quantization (quantizing it again would stack new Q/DQ over the model's; the vendor refuses too)"
        )
    if own.weights_only:
        log.info(
            "%s: its %d DequantizeLinear nodes only dequantize weights: folded them into float weights; "
            "building a float model",
            source,
            own.weight_dequantize,
        )
        return dequantize_weights(model), package_pb2.QuantizationSummary()
    if cfg.quantize_weight:
        log.warning("%s: quantize_weight=True does nothing: the model's weights are already quantized", source)
    log.info("%s: kept the model's own quantization (%s, %s); no float16 rewrite", source, own.nodes(), own.dtype)
    return model, own.summary()


def dequantize_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace each DequantizeLinear of a constant by its float value, computed as ONNX Runtime computes it."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    consts = _constants(g)
    kept, values = [], []
    for node in g.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in consts:
            kept.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("block_size"):
            raise BuildError(f"DequantizeLinear {node.name or node.output[0]!r}: blocked quantization is not supported")
        data = numpy_helper.to_array(consts[node.input[0]]).astype(np.int32)
        scale = numpy_helper.to_array(consts[node.input[1]])
        zero = (
            numpy_helper.to_array(consts[node.input[2]]).astype(np.int32)
            if len(node.input) > 2 and node.input[2]
            else np.zeros_like(scale, np.int32)
        )
        if scale.ndim == 1 and data.ndim > 1:  # per axis
            axis = int(attrs.get("axis", 1)) % data.ndim
            shape = [1] * data.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        values.append(numpy_helper.from_array((data - zero).astype(scale.dtype) * scale, node.output[0]))
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(values)
    graph.eliminate_dead_nodes(m)
    return m
