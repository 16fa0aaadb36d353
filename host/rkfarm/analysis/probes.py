"""Which tensors accuracy analysis compares, and the three models that compute them from one set of inputs.

A *probe* is one analysed tensor: a model input or the output of a layer (the nodes that compute one int8
tensor from int8 tensors — a convolution and its fused Relu, an activation chain quantized once at its end),
plus every model output. The same name holds the same tensor in the float model and in the quantized one,
because the QDQ rewrite keeps the float graph's names.

* golden: the float model with every probe exposed as an output.
* entire: the quantized model with every quantized probe's int8 value exposed — the output of its
  QuantizeLinear, dequantized on the host — and float probes exposed as they are. Exposing the uint8
  tensors keeps ONNX Runtime's QDQ fusion intact (every QLinearConv stays an integer kernel), so these are
  the values the deployed model computes. The same model, packaged, is what a board runs for the runtime
  columns.
* single: the quantized model with every layer cut loose: a layer reads the golden values of its inputs (new
  graph inputs named ``<tensor>::golden``) instead of its producers' quantized outputs, so its quantized output
  carries the error of this one layer: its int8 weights and its own output quantization.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

from rkfarm import graph
from rkfarm.quant.collect import expose
from rkfarm.quant.plan import constant_names

GOLDEN_SUFFIX = "::golden"
MAX_LABEL_OPS = 3

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Probe:
    """One analysed tensor and how to read it from the quantized model's exposed outputs."""

    index: int
    name: str
    op: str  # the layer's op types, e.g. "Conv+Relu"; "Input" for a model input
    is_input: bool
    quantized: str | None  # the QuantizeLinear output holding its int8 value; None: float in that model
    scale: float = 1.0
    zero_point: int = 0  # as stored in the payload (uint8 activations carry +128)

    @property
    def exposed(self) -> str:
        """The output name this probe has in the entire and single models."""
        return self.quantized or self.name

    def value(self, raw: npt.NDArray[np.generic]) -> FloatArray:
        """The real value of an exposed output: DequantizeLinear's arithmetic, in float32."""
        if self.quantized is None:
            return np.asarray(raw, np.float32)
        out: FloatArray = (raw.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)
        return out


def make_probes(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, tensors: Sequence[str]) -> list[Probe]:
    """Probes for ``tensors`` (float-model names, in graph order), skipping any the quantized model lacks."""
    qg = qdq_model.graph
    inits = {t.name: t for t in qg.initializer}
    outputs = {o.name for o in qg.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in qg.node:
        for name in node.input:
            consumers[name].append(node)
    quantize_of: dict[str, onnx.NodeProto] = {}
    for node in qg.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits or len(node.input) < 3:
            continue
        name = node.input[0]
        for reader in consumers[node.output[0]]:
            if reader.op_type == "DequantizeLinear" and reader.output[0] in outputs:
                name = reader.output[0]  # a model output keeps its name on the dequantized value
        quantize_of[name] = node
    present = graph.produced_tensors(qdq_model)
    inputs = {i.name for i in graph.real_inputs(float_model)}
    labels = layer_labels(float_model, tensors)
    probes: list[Probe] = []
    for name in dict.fromkeys(tensors):
        quantize = quantize_of.get(name)
        is_input = name in inputs
        if quantize is not None:
            scale = numpy_helper.to_array(inits[quantize.input[1]])
            zero = numpy_helper.to_array(inits[quantize.input[2]])
            if scale.size == 1 and zero.size == 1:
                q_name = quantize.output[0]
                probes.append(Probe(len(probes), name, labels[name], is_input, q_name, float(scale), int(zero)))
                continue
        if name in present:
            probes.append(Probe(len(probes), name, labels[name], is_input, None))
    return probes


def layer_labels(model: onnx.ModelProto, tensors: Sequence[str]) -> dict[str, str]:
    """Each tensor's layer as op types in graph order ("Conv+Relu"): the nodes from the previous probes to it."""
    g = model.graph
    stops = set(tensors) | constant_names(model) | {i.name for i in g.input}
    producer = {o: i for i, node in enumerate(g.node) for o in node.output}
    labels: dict[str, str] = {}
    for name in tensors:
        if name not in producer:
            labels[name] = "Input"
            continue
        seen: set[int] = set()
        stack = [producer[name]]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            stack.extend(producer[t] for t in g.node[i].input if t and t not in stops and t in producer)
        ops = [g.node[i].op_type for i in sorted(seen)]
        if len(ops) > MAX_LABEL_OPS:
            ops = [*ops[: MAX_LABEL_OPS - 1], "...", ops[-1]]
        labels[name] = "+".join(ops)
    return labels


def golden_model(float_model: onnx.ModelProto, probes: Sequence[Probe]) -> onnx.ModelProto:
    """The float model exposing every probe that is not a model input (those are the feeds)."""
    return expose(float_model, [p.name for p in probes if not p.is_input])


def _exposures(model: onnx.ModelProto, probes: Sequence[Probe]) -> list[onnx.ValueInfoProto]:
    inits = {t.name: t for t in model.graph.initializer}
    zero_type = {n.output[0]: inits[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear"}
    values = []
    for p in probes:
        if p.quantized is not None:
            values.append(helper.make_tensor_value_info(p.quantized, zero_type[p.quantized], None))
        elif not p.is_input:
            values.append(helper.make_tensor_value_info(p.name, onnx.TensorProto.FLOAT, None))
    return values


def entire_model(qdq_model: onnx.ModelProto, probes: Sequence[Probe]) -> onnx.ModelProto:
    """The quantized model whose outputs are the probes' exposed tensors (float model inputs excepted)."""
    m = onnx.ModelProto()
    m.CopyFrom(qdq_model)
    del m.graph.output[:]
    m.graph.output.extend(_exposures(m, probes))
    return m


def single_model(qdq_model: onnx.ModelProto, float_model: onnx.ModelProto, probes: Sequence[Probe]) -> onnx.ModelProto:
    """The quantized model with every layer reading the golden values of its inputs (see the module docstring)."""
    m = entire_model(qdq_model, probes)
    g = m.graph
    by_quantized = {p.quantized: p for p in probes if p.quantized is not None}
    reads: dict[str, Probe] = {}  # a tensor layers read -> the probe it stands for
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in by_quantized:
            reads[node.output[0]] = by_quantized[node.input[0]]
    for p in probes:
        if p.quantized is None and not p.is_input:
            reads[p.name] = p
    needed: dict[str, Probe] = {}
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in by_quantized:
            continue
        for k, name in enumerate(node.input):
            probe = reads.get(name)
            if probe is None:
                continue
            node.input[k] = golden_name(probe)
            if not probe.is_input:
                needed[probe.name] = probe
    known = {v.name: v for v in [*float_model.graph.value_info, *float_model.graph.output]}
    for name, probe in needed.items():
        value = onnx.ValueInfoProto()
        if name in known:
            value.CopyFrom(known[name])
        else:
            value = helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        value.name = golden_name(probe)
        g.input.append(value)
    del g.value_info[:]
    graph.eliminate_dead_nodes(m)
    return m


def golden_name(probe: Probe) -> str:
    """The single model's input carrying a probe's golden value (a model input is fed as itself)."""
    return probe.name if probe.is_input else probe.name + GOLDEN_SUFFIX
