"""Building the ONNX graph: nodes, constants and the static shape of every tensor, for the layer converters."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

from rkfarm.errors import ModelLoadError, NotSupportedError
from rkfarm.frontends.caffe import caffe_pb2
from rkfarm.frontends.caffe.weights import Array, BlobSpec, Weights

Shape = tuple[int, ...]


class Builder:
    """Nodes in the order they are added (already topological), initializers, and a shape for each tensor."""

    def __init__(self, reserved: set[str]) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shapes: dict[str, Shape] = {}
        self._tensors = set(reserved)
        self._node_names: set[str] = set()

    def unique(self, base: str) -> str:
        """A tensor name not used yet (``base`` itself when free)."""
        name, k = base, 1
        while name in self._tensors:
            name, k = f"{base}_{k}", k + 1
        self._tensors.add(name)
        return name

    def claim(self, name: str) -> None:
        self._tensors.add(name)

    def const(self, base: str, array: npt.ArrayLike, dtype: npt.DTypeLike = np.float32) -> str:
        arr = np.asarray(array, dtype=dtype)
        name = self.unique(base)
        self.initializers.append(numpy_helper.from_array(arr, name))
        self.shapes[name] = tuple(int(d) for d in arr.shape)
        return name

    def int64s(self, base: str, values: Sequence[int]) -> str:
        return self.const(base, np.asarray(list(values), dtype=np.int64), np.int64)

    def add(
        self, op: str, inputs: Sequence[str], outputs: Sequence[str], shapes: Sequence[Shape], name: str,
        **attrs: Any,
    ) -> None:  # fmt: skip
        node_name, k = name, 1
        while node_name in self._node_names:
            node_name, k = f"{name}_{k}", k + 1
        self._node_names.add(node_name)
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=node_name, **attrs))
        for out, shape in zip(outputs, shapes):
            if any(d <= 0 for d in shape):
                raise AssertionError(f"{name}: non-positive dim in {shape}")
            self.shapes[out] = tuple(int(d) for d in shape)

    def rename(self, mapping: dict[str, str]) -> None:
        """Rename tensors everywhere (node inputs and outputs, shapes)."""
        for node in self.nodes:
            for i, t in enumerate(node.input):
                node.input[i] = mapping.get(t, t)
            for i, t in enumerate(node.output):
                node.output[i] = mapping.get(t, t)
        self.shapes = {mapping.get(t, t): s for t, s in self.shapes.items()}


def canonical_axis(axis: int, rank: int) -> int | None:
    """Caffe's CanonicalAxisIndex: a negative axis counts from the end; None when out of range."""
    a = axis + rank if axis < 0 else axis
    return a if 0 <= a < rank else None


@dataclass
class LayerContext:
    """What a converter sees: its layer, the ONNX names of its bottoms and of the tops it must write."""

    b: Builder
    layer: caffe_pb2.LayerParameter
    where: str  # "model.prototxt:57" for messages
    inputs: list[str]
    outputs: list[str]
    weights: Weights

    @property
    def name(self) -> str:
        return self.layer.name

    def fail(self, problem: str) -> NoReturn:
        """A layer rkfarm cannot convert as written: one line naming file, line, layer and type."""
        raise ModelLoadError(f"{self.where}: layer {self.layer.name!r} ({self.layer.type}): {problem}")

    def refuse(self, problem: str) -> NoReturn:
        """A valid Caffe option rkfarm does not implement."""
        raise NotSupportedError(
            f"{self.where}: layer {self.layer.name!r} ({self.layer.type}): {problem} is not supported by rkfarm"
        )

    def shape(self, i: int = 0) -> Shape:
        return self.b.shapes[self.inputs[i]]

    def expect(self, bottoms: int | tuple[int, int], tops: int | tuple[int, int] = 1) -> None:
        """Check the number of bottoms and tops (an exact count or an inclusive range)."""
        for what, n, want in (("bottom", len(self.inputs), bottoms), ("top", len(self.outputs), tops)):
            lo, hi = (want, want) if isinstance(want, int) else want
            if not lo <= n <= hi:
                wanted = str(lo) if lo == hi else f"{lo} to {hi}"
                self.fail(f"has {n} {what}(s), needs {wanted}")

    def axis(self, axis: int, rank: int | None = None, what: str = "axis") -> int:
        rank = len(self.shape()) if rank is None else rank
        a = canonical_axis(axis, rank)
        if a is None:
            self.fail(f"{what} {axis} is out of range for a {rank}-D input")
        return a

    def blobs(self, specs: Sequence[BlobSpec]) -> list[Array]:
        return self.weights.get(self.layer, specs)

    def tmp(self, suffix: str) -> str:
        return self.b.unique(f"{self.layer.name}/{suffix}")

    def const(self, suffix: str, array: npt.ArrayLike) -> str:
        return self.b.const(f"{self.layer.name}/{suffix}", array)

    def int64s(self, suffix: str, values: Sequence[int]) -> str:
        return self.b.int64s(f"{self.layer.name}/{suffix}", values)

    def node(
        self, op: str, inputs: Sequence[str], shape: Shape, out: str | None = None, suffix: str | None = None,
        **attrs: Any,
    ) -> str:  # fmt: skip
        """Add a one-output node; the layer's main node (``suffix`` None) is named as the layer."""
        out = out if out is not None else self.tmp(suffix or op.lower())
        name = self.layer.name if suffix is None else f"{self.layer.name}/{suffix}"
        self.b.add(op, inputs, [out], [shape], name, **attrs)
        return out

    def reshape(self, x: str, shape: Shape, out: str | None = None, suffix: str | None = None) -> str:
        if math.prod(shape) != math.prod(self.b.shapes[x]):
            raise AssertionError(f"reshape {self.b.shapes[x]} -> {shape}")
        target = self.int64s(f"{suffix or 'reshape'}_shape", shape)
        return self.node("Reshape", [x, target], shape, out=out, suffix=suffix)
