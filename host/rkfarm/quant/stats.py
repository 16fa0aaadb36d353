"""Streaming statistics of one activation tensor: min, max and an exactly mergeable histogram.

Memory is bounded whatever the number of calibration samples: two floats and at most ``MAX_BINS`` counts per
tensor. The histogram's bin width is a power of two and its edges are multiples of that width, so real 0 is
an edge, widening the range merges neighbouring bins pairwise without any re-binning error, and the histograms
of tensors that share parameters merge exactly. The range always spans between ``MAX_BINS / 2`` and
``MAX_BINS`` bins, so the resolution never drops below ``MAX_BINS / 2`` bins over the observed range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

MAX_BINS = 4096
_TINY_WIDTH = 2.0**-40


class TensorStats:
    """min/max of everything seen, and optionally a histogram of it."""

    __slots__ = ("count", "counts", "max", "min", "offset", "width", "zeros")

    def __init__(self, histogram: bool) -> None:
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.zeros = 0  # values exactly 0 (ReLU, padding): every grid represents them exactly
        self.width = 0.0  # bin width (a power of two); 0 until the first histogram update
        self.offset = 0  # bin i covers [(offset + i) * width, (offset + i + 1) * width)
        self.counts: npt.NDArray[np.int64] | None = np.zeros(0, np.int64) if histogram else None

    @property
    def edges(self) -> npt.NDArray[np.float64]:
        assert self.counts is not None
        return (self.offset + np.arange(self.counts.size + 1, dtype=np.float64)) * self.width

    def update(self, values: npt.NDArray[np.floating]) -> None:
        """Fold one batch of a tensor in. Non-finite values raise ValueError (the caller names the tensor)."""
        flat = values.reshape(-1)
        if flat.size == 0:
            return
        lo, hi = float(flat.min()), float(flat.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("non-finite values (inf or nan)")
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += flat.size
        if self.counts is None:
            return
        self.zeros += flat.size - int(np.count_nonzero(flat))
        self._cover(min(lo, 0.0), max(hi, 0.0))
        index = np.floor(flat * np.float32(1.0 / self.width)).astype(np.int64)
        index -= self.offset
        np.clip(index, 0, self.counts.size - 1, out=index)  # float32 rounding at the outermost edge
        self.counts += np.bincount(index, minlength=self.counts.size)

    def _cover(self, lo: float, hi: float) -> None:
        """Grow the histogram to cover [lo, hi], doubling the width while it would need over MAX_BINS bins."""
        assert self.counts is not None
        if self.width == 0.0:
            span = hi - lo
            self.width = 2.0 ** math.ceil(math.log2(span / (MAX_BINS - 2))) if span > 0 else _TINY_WIDTH
            self.offset = math.floor(lo / self.width)
            self.counts = np.zeros(math.floor(hi / self.width) - self.offset + 1, np.int64)
            return
        while True:
            first = min(self.offset, math.floor(lo / self.width))
            last = max(self.offset + self.counts.size - 1, math.floor(hi / self.width))
            if last - first + 1 <= MAX_BINS:
                break
            self._double()
        if first < self.offset or last >= self.offset + self.counts.size:
            grown = np.zeros(last - first + 1, np.int64)
            start = self.offset - first
            grown[start : start + self.counts.size] = self.counts
            self.counts, self.offset = grown, first

    def _double(self) -> None:
        assert self.counts is not None
        absolute = self.offset + np.arange(self.counts.size)
        new_offset = self.offset // 2
        merged = np.bincount(absolute // 2 - new_offset, weights=self.counts)
        self.counts = merged.astype(np.int64)
        self.offset = new_offset
        self.width *= 2.0

    def coarsened(self, max_bins: int) -> TensorStats:
        """A copy with at most ``max_bins`` bins (pairs merged), for searches that need no finer resolution."""
        out = self.copy()
        while out.counts is not None and out.counts.size > max_bins:
            out._double()
        return out

    def copy(self) -> TensorStats:
        out = TensorStats(self.counts is not None)
        out.min, out.max, out.count, out.zeros = self.min, self.max, self.count, self.zeros
        out.width, out.offset = self.width, self.offset
        out.counts = None if self.counts is None else self.counts.copy()
        return out

    def nonzero_counts(self) -> npt.NDArray[np.int64]:
        """The histogram without the values that are exactly 0 (they sit in the bin starting at 0)."""
        assert self.counts is not None
        counts: npt.NDArray[np.int64] = self.counts.copy()
        if self.zeros and 0 <= -self.offset < counts.size:
            counts[-self.offset] -= self.zeros
        return counts

    @staticmethod
    def merged(parts: Sequence[TensorStats]) -> TensorStats:
        """One TensorStats for tensors that share parameters: union of ranges, sum of histograms."""
        out = parts[0].copy()
        for part in parts[1:]:
            out.min, out.max, out.count = min(out.min, part.min), max(out.max, part.max), out.count + part.count
            out.zeros += part.zeros
            if out.counts is None or part.counts is None or part.width == 0.0:
                continue
            other = part.copy()
            if out.width == 0.0:
                out.width, out.offset, out.counts = other.width, other.offset, other.counts
                continue
            while other.width < out.width:
                other._double()
            while out.width < other.width:
                out._double()
            assert other.counts is not None
            out._cover(other.offset * other.width, (other.offset + other.counts.size - 1) * other.width)
            while other.width < out.width:  # _cover may have doubled out again
                other._double()
            assert other.counts is not None and out.counts is not None
            start = other.offset - out.offset
            out.counts[start : start + other.counts.size] += other.counts
        return out
