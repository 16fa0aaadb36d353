"""The quantization plan: which tensors get int8 parameters, which share them, which weights are quantized.

The plan mirrors how an int8 NPU executes a graph:

* compute ops (Conv, ConvTranspose, Gemm, MatMul), two-input Add/Sub/Mul, Concat, pooling and Softmax take
  int8 inputs and produce an int8 output;
* element-wise chains that read one tensor (Relu, Clip, HardSigmoid, Sigmoid, the Add/Clip/Mul/Div spelling of
  HardSwish, ``x * sigmoid(x)``, ops with a constant operand) form one *activation region*: a function of one
  int8 tensor, which the NPU evaluates as a fused activation or a lookup table. Only the region's outputs are
  quantized; its inner tensors stay float. A region of Relu/Clip right after a compute or two-input op is
  fused into it (no requantization between them, as ONNX Runtime's integer kernels also fuse it); with
  ``fuse='all'`` every region following such an op is fused;
* shape-only ops (Reshape, Transpose, MaxPool, Split, Slice, ...) reuse their input's parameters, which is exact;
  after calibration, a Concat input read by nothing else takes the Concat output's parameters, so the Concat
  needs no requantization (``settle_concats``);
* any other op runs in float between a DequantizeLinear and the next QuantizeLinear.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from rkfarm_proto.custom_ops import CUSTOM_OP_DOMAIN

log = logging.getLogger(__name__)

# op -> index of its constant weight input
COMPUTE_OPS: dict[str, int] = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
BIAS_INPUT: dict[str, int] = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}
# ops whose outputs hold (a selection or an interpolation of) the input's values: same parameters
SHARE_OPS = frozenset(
    {
        "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Expand", "Tile",
        "MaxPool", "GlobalMaxPool", "Split", "Slice", "Gather", "Pad", "Resize", "Upsample",
        "DepthToSpace", "SpaceToDepth",
    }
)  # fmt: skip
# int8 in, int8 out with their own parameters
OWN_OPS = frozenset({"AveragePool", "GlobalAveragePool", "Softmax", "ReduceMean", "Concat"})
BINARY_OPS = frozenset({"Add", "Sub", "Mul"})
# element-wise ops that may belong to an activation region
ELEMENTWISE_OPS = frozenset(
    {
        "Relu", "Clip", "LeakyRelu", "PRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh", "Elu", "Selu",
        "Softplus", "Softsign", "Gelu", "Erf", "Exp", "Neg", "Abs", "Sqrt", "Reciprocal", "Pow",
        "Add", "Sub", "Mul", "Div",
    }
)  # fmt: skip
# regions that ONNX Runtime folds into the preceding integer kernel's output range
RANGE_ONLY_OPS = frozenset({"Relu", "Clip"})
FUSE_POLICIES = ("relu", "all")
CONCAT_SPAN_RATIO = 16.0  # a model-output Concat whose inputs' ranges differ more than this stays float


@dataclass(frozen=True)
class WeightUse:
    """A constant weight (and bias) of one compute node, to be stored int8 (int32)."""

    node: int  # index into graph.node
    weight: str  # initializer name
    weight_key: str  # key in the parameter table
    axis: int | None  # channel axis for per-channel quantization; None: per tensor only
    activation: str | None  # the node's activation input, whose scale sets the bias scale
    bias: str | None = None
    bias_key: str | None = None


@dataclass
class QuantPlan:
    activations: list[str]  # tensors that get int8 parameters, in graph order
    groups: dict[str, list[str]]  # representative -> tensors sharing one set of parameters
    group_of: dict[str, str]  # tensor -> representative
    weights: list[WeightUse] = field(default_factory=list)
    fused: list[str] = field(default_factory=list)  # compute outputs kept float (fused activation)
    concats: list[tuple[str, list[str], bool]] = field(default_factory=list)  # (output, inputs, is model output)
    kept_float: list[str] = field(default_factory=list)  # model outputs left float by settle_concats
    single_use: set[str] = field(default_factory=set)  # int8 tensors read by one op and not model outputs
    # int8 tensors read only by their activation region: tensor -> (the region's node indices, the tensors the
    # region hands on); ``saturation`` clamps their ranges where the region is flat
    saturating: dict[str, tuple[list[int], list[str]]] = field(default_factory=dict)
    # set by calibration: tensor -> the bounds ``saturation`` clamped its range to (its readers are flat beyond);
    # comparing such a tensor with the float model means comparing with the float value clamped the same way
    clamps: dict[str, tuple[float, float]] = field(default_factory=dict)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, keep: str, other: str) -> None:
        a, b = self.find(keep), self.find(other)
        if a != b:
            self.parent[b] = a


def constant_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    return {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}


def constant_derived(model: onnx.ModelProto, consts: set[str]) -> set[str]:
    """``consts`` and every tensor computed from constants alone: the same value for every input."""
    derived = set(consts)
    for node in model.graph.node:
        reads = [t for t in node.input if t]
        if reads and all(t in derived for t in reads) and not node.op_type.startswith("Random"):
            derived.update(o for o in node.output if o)
    return derived


def float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of float32 tensors, from inputs, outputs and inferred value_info."""
    g = model.graph
    values = [*g.input, *g.output, *g.value_info]
    return {v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}


def make_plan(model: onnx.ModelProto, fuse: str = "relu", per_channel: bool = True) -> QuantPlan:
    """Analyse a shape-inferred float model; see the module docstring for the rules."""
    g = model.graph
    consts = constant_names(model)
    floats = float_tensors(model)
    graph_outputs = {o.name for o in g.output}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(g.node):
        for name in node.input:
            if name:
                consumers[name].append(i)

    kinds: list[str] = []
    root: dict[str, str] = {}  # region tensor -> the tensor its region is a function of
    region_root: dict[int, str] = {}
    for i, node in enumerate(g.node):
        variables = [t for t in node.input if t and t not in consts]
        kind = "float"
        if node.domain == CUSTOM_OP_DOMAIN:
            pass  # a Python custom op computes in float: int8 neighbours are dequantized into it
        elif node.op_type in ELEMENTWISE_OPS and variables:
            roots = {root.get(t, t) for t in variables}
            if len(roots) == 1:
                kind = "region"
                region_root[i] = roots.pop()
                for out in node.output:
                    root[out] = region_root[i]
            elif node.op_type in BINARY_OPS and len(variables) == 2:
                kind = "binary"
        elif node.op_type in COMPUTE_OPS:
            kind = "compute"
        elif node.op_type in SHARE_OPS:
            kind = "share"
        elif node.op_type in OWN_OPS:
            kind = "own"
        kinds.append(kind)

    members: dict[str, list[int]] = defaultdict(list)
    for i, r in region_root.items():
        members[r].append(i)

    def region_fusable(tensor: str) -> bool:
        nodes = members.get(tensor)
        if not nodes or tensor in graph_outputs or set(consumers[tensor]) - set(nodes):
            return False
        return fuse == "all" or all(g.node[i].op_type in RANGE_ONLY_OPS for i in nodes)

    int8: set[str] = {i.name for i in g.input if i.name not in consts}  # the NPU takes int8 inputs
    fused: set[str] = set()
    uf = _UnionFind()
    for i, node in enumerate(g.node):  # graph order: a node's inputs are decided before it
        kind = kinds[i]
        data = [t for t in node.input if t and t not in consts]
        if kind in ("compute", "binary", "own"):
            int8.update(data)
            for out in node.output:
                if kind != "own" and region_fusable(out):
                    fused.add(out)
                else:
                    int8.add(out)
        elif kind == "share" and node.input[0] in int8 and not _pads_nonzero(node, model):
            for out in node.output:
                int8.add(out)
                uf.union(node.input[0], out)
        elif kind == "region":
            r = region_root[i]
            for out in node.output:
                leaves = out in graph_outputs or any(region_root.get(c) != r for c in consumers[out])
                if leaves and (r in int8 or r in fused):
                    int8.add(out)
    int8 &= floats
    int8 -= constant_derived(model, consts)  # e.g. SSD prior boxes: a Concat of constants needs no int8 range

    order = [i.name for i in g.input] + [o for n in g.node for o in n.output]
    activations = [t for t in dict.fromkeys(order) if t in int8]
    groups: dict[str, list[str]] = defaultdict(list)
    for t in activations:
        groups[uf.find(t)].append(t)
    group_of = {t: rep for rep, ts in groups.items() for t in ts}
    weights = _weight_uses(model, int8, per_channel)
    log.debug(
        "quantization plan: %d int8 activations in %d groups, %d fused outputs, %d weights",
        len(activations),
        len(groups),
        len(fused),
        len(weights),
    )
    concats = [
        (n.output[0], [t for t in n.input if t in int8], n.output[0] in graph_outputs)
        for n in g.node
        if n.op_type == "Concat" and n.output[0] in int8
    ]
    plan = QuantPlan(activations, dict(groups), group_of, weights, sorted(fused), concats)
    plan.single_use = {t for t in activations if len(consumers[t]) == 1 and t not in graph_outputs}
    for tensor in activations:
        nodes = sorted(members.get(tensor, []))
        if not nodes or tensor in graph_outputs or set(consumers[tensor]) - set(nodes):
            continue
        inside = set(nodes)
        leaving = [
            out
            for i in nodes
            for out in g.node[i].output
            if out in graph_outputs or any(c not in inside for c in consumers[out])
        ]
        plan.saturating[tensor] = (nodes, leaving)
    return plan


def _pads_nonzero(node: onnx.NodeProto, model: onnx.ModelProto) -> bool:
    """A constant Pad with a non-zero value adds a value outside the input's range: it cannot share."""
    if node.op_type != "Pad":
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    mode = attrs.get("mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return False
    if len(node.input) < 3 or not node.input[2]:
        return float(attrs.get("value", 0.0)) != 0.0  # opset < 11 keeps the value in an attribute
    init = {t.name: t for t in model.graph.initializer}.get(node.input[2])
    return init is None or bool(np.any(numpy_helper.to_array(init) != 0))


def settle_concats(plan: QuantPlan, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Decide each Concat from the calibrated ranges (changes ``plan`` and returns the final ranges).

    * A model output that concatenates tensors of very different ranges (YOLO's box coordinates in pixels with
      its class probabilities) stays float: one int8 scale for both would round every probability to 0. Its
      inputs keep their own parameters.
    * Otherwise an input read only by the Concat takes the Concat output's range, so the Concat is exact. The
      output's statistics are those of all its inputs together, so this is the range a merged calibration of
      the inputs would choose.
    """
    out = dict(ranges)
    for output, inputs, is_model_output in plan.concats:
        if output not in plan.group_of:
            continue
        spans = [_span(ranges[plan.group_of[t]]) for t in inputs]
        if is_model_output and spans and max(spans) > CONCAT_SPAN_RATIO * max(min(spans), 1e-12):
            log.info(
                "model output %r concatenates ranges %.3g to %.3g apart: kept float", output, min(spans), max(spans)
            )
            plan.kept_float.append(output)
            continue
        for t in inputs:
            if t in plan.single_use:
                out[plan.group_of[t]] = ranges[plan.group_of[output]]
    if plan.kept_float:
        dropped = set(plan.kept_float)
        plan.activations = [t for t in plan.activations if t not in dropped]
    return out


def _span(r: tuple[float, float]) -> float:
    return max(r[1], 0.0) - min(r[0], 0.0)


def _weight_uses(model: onnx.ModelProto, int8: set[str], per_channel: bool) -> list[WeightUse]:
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    uses: list[WeightUse] = []
    bias_count: dict[str, int] = defaultdict(int)
    for node in g.node:
        index = BIAS_INPUT.get(node.op_type)
        if index is not None and len(node.input) > index and node.input[index] in inits:
            bias_count[node.input[index]] += 1
    weight_axes: dict[str, int | None] = {}
    for i, node in enumerate(g.node):
        index = COMPUTE_OPS.get(node.op_type)
        if index is None or len(node.input) <= index or node.input[index] not in inits:
            continue
        w_init = inits[node.input[index]]
        if w_init.data_type != onnx.TensorProto.FLOAT:
            continue
        axis = _channel_axis(node, list(w_init.dims)) if per_channel else None
        weight = w_init.name
        key = weight
        if weight in weight_axes and weight_axes[weight] != axis:
            key = f"{weight}@{node.output[0]}"  # a weight tied across ops with different channel axes
        weight_axes.setdefault(weight, axis)
        activation = node.input[0] if node.input[0] in int8 else None
        bias = _bias_input(node, inits, axis, list(w_init.dims))
        bias_key = None
        if bias is not None and activation is not None:
            bias_key = bias if bias_count[bias] == 1 else f"{bias}@{node.output[0]}"
        else:
            bias = None
        uses.append(WeightUse(i, weight, key, axis, activation, bias, bias_key))
    return uses


def _channel_axis(node: onnx.NodeProto, dims: list[int]) -> int | None:
    """The output-channel axis of a weight, or None where per-channel is not expressible."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if attrs.get("group", 1) == 1 else None
    if node.op_type == "Gemm":
        return 0 if attrs.get("transB", 0) else 1
    if node.op_type == "MatMul":
        return 1 if len(dims) == 2 else None
    return None


def _bias_input(
    node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], axis: int | None, w_dims: list[int]
) -> str | None:
    """The bias initializer if it can be stored int32 at s_in * s_w, else None (it stays float)."""
    index = BIAS_INPUT.get(node.op_type)
    if index is None or len(node.input) <= index or node.input[index] not in inits:
        return None
    bias = inits[node.input[index]]
    if bias.data_type != onnx.TensorProto.FLOAT or len(bias.dims) != 1:
        return None
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return None
    if axis is not None and bias.dims[0] != w_dims[axis]:
        return None
    return bias.name
