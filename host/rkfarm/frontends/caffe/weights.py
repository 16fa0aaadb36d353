"""Layer weights: from a caffemodel's blobs (checked against the shapes the prototxt implies) or, without a
caffemodel, random numbers from a fixed seed so that a model can be built and timed before it is trained."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rkfarm.errors import ModelLoadError
from rkfarm.frontends.caffe import caffe_pb2

Array = npt.NDArray[np.float32]
SEED = 0


@dataclass(frozen=True)
class BlobSpec:
    """One blob a layer needs: its shape and role; the role picks a sane distribution for random weights."""

    shape: tuple[int, ...]
    role: str  # weight, bias, mean, variance, factor, scale, slope


def blob_shape(blob: caffe_pb2.BlobProto) -> list[int]:
    """A blob's shape: ``shape.dim``, else the legacy num/channels/height/width, else its length."""
    if blob.HasField("shape"):
        return [int(d) for d in blob.shape.dim]
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return [blob.num, blob.channels, blob.height, blob.width]
    return [len(blob.double_data) or len(blob.data)]


def _strip_ones(shape: Sequence[int]) -> list[int]:
    dims = list(shape)
    while dims and dims[0] == 1:
        dims.pop(0)
    return dims


def _random(rng: np.random.Generator, spec: BlobSpec) -> Array:
    shape = spec.shape
    if spec.role == "weight":
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        return (rng.standard_normal(shape) * math.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
    if spec.role in ("bias", "mean"):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)
    if spec.role in ("variance", "scale"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)  # variance positive
    if spec.role == "slope":
        return rng.uniform(0.05, 0.3, shape).astype(np.float32)
    if spec.role == "factor":
        return np.ones(shape, np.float32)
    raise AssertionError(spec.role)


class Weights:
    """Where layers get their blobs: a caffemodel (``path`` and its layers) or random numbers (``path`` None)."""

    def __init__(self, path: Path | None, layers: dict[str, list[caffe_pb2.BlobProto]] | None) -> None:
        self.path = path
        self.layers = layers
        self.rng = np.random.default_rng(SEED)

    @property
    def random(self) -> bool:
        return self.layers is None

    def get(self, layer: caffe_pb2.LayerParameter, specs: Sequence[BlobSpec]) -> list[Array]:
        """The layer's blobs as float32 arrays of exactly the shapes in ``specs``."""
        if self.layers is None:
            return [_random(self.rng, s) for s in specs]
        what = f"{self.path}: layer {layer.name!r} ({layer.type})"
        blobs = self.layers.get(layer.name)
        if blobs is None or (not blobs and specs):
            raise ModelLoadError(
                f"{what} needs {len(specs)} weight blob(s) but the caffemodel has none for it "
                "(is it the caffemodel of this prototxt?)"
            )
        if len(blobs) != len(specs):
            roles = ", ".join(s.role for s in specs)
            raise ModelLoadError(f"{what} has {len(blobs)} blob(s); the prototxt makes it need {len(specs)} ({roles})")
        arrays = []
        for i, (blob, spec) in enumerate(zip(blobs, specs)):
            shape = blob_shape(blob)
            values = blob.double_data if len(blob.double_data) else blob.data
            if len(values) != math.prod(shape):
                raise ModelLoadError(
                    f"{what}: blob {i} ({spec.role}) holds {len(values)} values but its shape {shape} needs "
                    f"{math.prod(shape)} (truncated or not a caffemodel)"
                )
            if _strip_ones(shape) != _strip_ones(spec.shape):
                raise ModelLoadError(
                    f"{what}: blob {i} ({spec.role}) has shape {shape}; the prototxt makes it {list(spec.shape)}"
                )
            arrays.append(np.asarray(values, dtype=np.float32).reshape(spec.shape))
        return arrays
