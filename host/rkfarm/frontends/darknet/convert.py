"""A checked darknet ``Network`` and its weights as a standard ONNX graph (opset 17, NCHW, static shapes).

One input, ``data``: float32 ``[1, channels, height, width]`` from ``[net]``. Each layer's output tensor is
``<kind>_<index>`` (``conv_15``); layers that only pass a tensor on (dropout, a one-input route, yolo, region,
cost) add no node. The graph outputs are the tensors the yolo/region layers read, in their order, undecoded (the
vendor's convention: decoding boxes is the application's); without such layers, the last layer's output.

Batch normalization is folded into the convolution (or connected) weights as the maintained darknet
(AlexeyAB's, which yolov4 and mish come from, and whose weights most users have) computes it at inference:
``(x - rolling_mean) / sqrt(rolling_variance + 1e-5) * scales + biases``, the same formula as ONNX's and Caffe's
BatchNorm. (The original pjreddie darknet divided by ``sqrt(var) + 1e-6``; the two differ only where a variance is
near zero.)
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from rkfarm.frontends.darknet.layers import (
    Connected,
    Conv,
    Layer,
    MaxPool,
    Network,
    Route,
    Shape,
    Shortcut,
    Softmax,
    Upsample,
)
from rkfarm.frontends.darknet.weights import Array

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "data"
BN_EPSILON = 1e-5  # added to rolling_variance under the square root, as AlexeyAB's darknet normalize_cpu does
LEAKY_SLOPE = 0.1
SHORT = {"convolutional": "conv", "connected": "fc"}


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: npt.ArrayLike, dtype: type = np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def activation(self, x: str, kind: str, out: str) -> str:
        if kind == "linear":
            return x
        if kind == "leaky":
            return self.node("LeakyRelu", [x], out, alpha=LEAKY_SLOPE)
        if kind == "logistic":
            return self.node("Sigmoid", [x], out)
        if kind == "relu":
            return self.node("Relu", [x], out)
        if kind == "tanh":
            return self.node("Tanh", [x], out)
        if kind == "swish":  # x * logistic(x)
            return self.node("Mul", [x, self.node("Sigmoid", [x], f"{out}_sigmoid")], out)
        if kind == "mish":  # x * tanh(softplus(x)); opset 17 has no Mish
            soft = self.node("Softplus", [x], f"{out}_softplus")
            return self.node("Mul", [x, self.node("Tanh", [soft], f"{out}_tanh")], out)
        raise AssertionError(kind)  # layers.py admits only ACTIVATIONS


def _fold(arrays: dict[str, Array], bn: bool) -> tuple[Array, Array]:
    """Weights and bias with batch normalization folded in, computed in float64."""
    weights = arrays["weights"].astype(np.float64)
    biases = arrays["biases"].astype(np.float64)
    if not bn:
        return weights.astype(np.float32), biases.astype(np.float32)
    variance = arrays["rolling_variance"].astype(np.float64)  # weights.py checked it is not negative
    scale = arrays["scales"].astype(np.float64) / np.sqrt(variance + BN_EPSILON)
    folded = weights * scale.reshape((-1,) + (1,) * (weights.ndim - 1))
    bias = biases - arrays["rolling_mean"].astype(np.float64) * scale
    return folded.astype(np.float32), bias.astype(np.float32)


def _layer(g: _Graph, layer: Layer, x: list[str], shapes: list[Shape], arrays: dict[str, Array], name: str) -> str:
    """Add one layer's nodes; return its output tensor (an input's, for layers that pass it on)."""
    p = layer.params
    src = shapes[0]
    if isinstance(p, Conv):
        w, b = _fold(arrays, p.batch_normalize)
        pre = name if p.activation == "linear" else f"{name}_pre"
        g.node("Conv", [x[0], g.const(f"{name}_weight", w), g.const(f"{name}_bias", b)], pre,
               kernel_shape=[p.size, p.size], strides=[p.stride, p.stride], pads=[p.padding] * 4, group=p.groups,
               dilations=[1, 1])  # fmt: skip
        return g.activation(pre, p.activation, name)
    if isinstance(p, MaxPool):
        before = p.padding // 2
        after = p.padding - before
        return g.node("MaxPool", [x[0]], name, kernel_shape=[p.size, p.size], strides=[p.stride, p.stride],
                      pads=[before, before, after, after])  # fmt: skip
    if isinstance(p, Route):
        if p.groups == 1:
            return x[0] if len(x) == 1 else g.node("Concat", x, name, axis=1)
        parts = []
        for j, (tensor, shape) in enumerate(zip(x, shapes)):
            width = shape.c // p.groups  # channels per group; layers.py checked that groups divides them
            bounds = [g.const(f"{name}_{j}_{k}", [v], np.int64) for k, v in
                      (("start", p.group_id * width), ("end", (p.group_id + 1) * width), ("axis", 1))]  # fmt: skip
            parts.append(g.node("Slice", [tensor, *bounds], f"{name}_part{j}" if len(x) > 1 else name))
        return parts[0] if len(parts) == 1 else g.node("Concat", parts, name, axis=1)
    if isinstance(p, Shortcut):
        total = x[0]
        for k, other in enumerate(x[1:]):
            last = k == len(x) - 2
            total = g.node("Add", [total, other], name if last and p.activation == "linear" else f"{name}_sum{k}")
        return g.activation(total, p.activation, name)
    if isinstance(p, Upsample):
        y = x[0]
        if p.stride > 1:
            scales = g.const(f"{name}_scales", [1.0, 1.0, p.stride, p.stride])
            y = g.node("Resize", [y, "", scales], name if p.scale == 1 else f"{name}_nearest", mode="nearest",
                       coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # fmt: skip
        if p.scale != 1:
            y = g.node("Mul", [y, g.const(f"{name}_scale", p.scale)], name)
        return y
    if isinstance(p, Connected):
        w, b = _fold(arrays, p.batch_normalize)
        flat = g.node("Flatten", [x[0]], f"{name}_flat", axis=1)
        gemm = g.node("Gemm", [flat, g.const(f"{name}_weight", w), g.const(f"{name}_bias", b)], f"{name}_gemm",
                      transB=1)  # fmt: skip
        act = g.activation(gemm, p.activation, f"{name}_act")
        return g.node("Reshape", [act, g.const(f"{name}_shape", [1, p.outputs, 1, 1], np.int64)], name)
    if isinstance(p, Softmax):
        grouped = [1, p.groups, src.size // p.groups]
        y = g.node("Reshape", [x[0], g.const(f"{name}_groups", grouped, np.int64)], f"{name}_grouped")
        if p.temperature != 1:
            y = g.node("Div", [y, g.const(f"{name}_temperature", p.temperature)], f"{name}_tempered")
        y = g.node("Softmax", [y], f"{name}_softmax", axis=-1)
        return g.node("Reshape", [y, g.const(f"{name}_shape", [1, src.c, src.h, src.w], np.int64)], name)
    if layer.kind == "avgpool":
        return g.node("GlobalAveragePool", [x[0]], name)
    if layer.kind in ("dropout", "yolo", "region", "cost"):
        return x[0]
    raise AssertionError(layer.kind)


def to_onnx(net: Network, weights: dict[int, dict[str, Array]], name: str) -> onnx.ModelProto:
    g = _Graph()
    tensors: list[str] = []
    for layer in net.layers:
        inputs = [INPUT_NAME if i < 0 else tensors[i] for i in layer.inputs]
        shapes = [net.input if i < 0 else net.layers[i].shape for i in layer.inputs]
        tensors.append(_layer(g, layer, inputs, shapes, weights.get(layer.index, {}), _name(layer)))
    outputs: list[onnx.ValueInfoProto] = []
    for i in net.outputs:
        tensor = tensors[i]
        if tensor == INPUT_NAME or tensor in (o.name for o in outputs):
            tensor = g.node("Identity", [tensor], f"output_{i}")
        s = net.layers[i].shape
        outputs.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, [1, s.c, s.h, s.w]))
    x = net.input
    graph = helper.make_graph(
        g.nodes, name, [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, x.c, x.h, x.w])], outputs,
        initializer=g.inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rkfarm-darknet")
    model.ir_version = 8
    return model


def _name(layer: Layer) -> str:
    return f"{SHORT.get(layer.kind, layer.kind)}_{layer.index}"
