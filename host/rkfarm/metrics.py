"""Cosine similarity and euclidean distance of tensors, averaged over samples without keeping the samples."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.generic]


def _dot(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    # einsum's own loop, not BLAS: a multithreaded BLAS call between ONNX Runtime runs fights its threads for the
    # cores (on a loaded 2-core machine that made the sums cost more than the inferences)
    return float(np.einsum("i,i->", x, y))


def cosine(a: Array, b: Array) -> float:
    """Cosine similarity of the flattened tensors; 1.0 when both are all zero, 0.0 when only one is."""
    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    nx, ny = math.sqrt(_dot(x, x)), math.sqrt(_dot(y, y))
    if nx == 0.0 or ny == 0.0:
        return 1.0 if nx == ny else 0.0
    return min(1.0, max(-1.0, _dot(x, y) / (nx * ny)))


def euclidean(a: Array, b: Array) -> float:
    """Euclidean distance of the flattened tensors."""
    d = np.asarray(a, np.float64).ravel() - np.asarray(b, np.float64).ravel()
    return math.sqrt(_dot(d, d))


class Means:
    """Running means of (cosine, euclidean) per key: one sample's tensors in, only sums kept."""

    def __init__(self) -> None:
        self._sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])

    def add(self, key: str, a: Array, b: Array) -> None:
        entry = self._sums[key]
        entry[0] += cosine(a, b)
        entry[1] += euclidean(a, b)
        entry[2] += 1.0

    def __contains__(self, key: str) -> bool:
        return key in self._sums

    def get(self, key: str) -> tuple[float, float]:
        cos, euc, count = self._sums[key]
        return cos / count, euc / count
