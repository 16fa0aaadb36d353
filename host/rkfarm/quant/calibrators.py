"""Calibration algorithms: from streamed activation statistics to one clipping range per parameter group.

Each algorithm is one small class with ``collect(name, values)`` (called once per batch and tensor) and
``compute(groups)`` (once, at the end); ``CALIBRATORS`` maps the vendor's ``quantized_algorithm`` names to them.

* ``normal``: the observed min/max.
* ``kl_divergence``: the range whose 256-level quantized histogram is closest, in KL divergence, to the
  observed one (entropy calibration). The histogram has 2048 bins over the observed range and the candidate
  ranges cover 256 to 2048 of them, so the search can clip up to 8x; onnxruntime's Entropy calibrator at its
  defaults (128 bins, 128 quantized bins) has a single candidate and returns min/max. Spikes are capped
  first (see ``EntropyCalibrator.prepare``): without that, the flat white background of the text-line
  calibration images drove the search to clip the first layers 3-5x and cost the PP-OCR classifier 7 points
  of top-1 agreement. A range may leave out at most 0.1% of the values on each side: divergence weighs a
  dense cluster of large values (1% of a PP-OCRv4 recognizer activation, at 7x the bulk's range) as a tail
  worth folding, which took that model's output cosine from 0.96 to 0.83.
* ``mmse``: the range minimising the mean squared error of quantizing the observed histogram with the exact
  asymmetric int8 grid (zero point rounding and saturation included), spikes capped as for ``kl_divergence``:
  uncapped, the search fitted PP-OCRv4 det's ranges to where its calibration pages' flat white background fell
  between two levels: output cosine on photographed pages 0.977, capped 0.984.

The model's outputs keep their observed range with every algorithm: they are what the user reads (class
probabilities, box coordinates), and clipping them cannot be compensated by any later layer — the search clipped
PP-OCRv4's recognition probabilities at 0.125. So do the inputs of every Softmax (``pipeline.softmax_inputs``).
A tensor whose readers saturate has its range cut where they turn flat (``saturation``), after the search: the
search runs on the values as observed. Searching the clamped values instead (their mass beyond the bound piled
into its end bin) lost output cosine with kl_divergence on PP-OCRv4 det (0.9805 -> 0.9712 on rendered pages)
and with mmse on PP-OCRv4 rec (0.962 -> 0.952 on photographed lines): the pile is mass the readers ignore, and
the searches spent levels on it (or, spike-capped, lost the bulk's edge).
Both searches ignore values that are exactly 0 (ReLU outputs,
padding): every candidate grid represents them exactly. Both are vectorised over candidates and bins with numpy.
Asymmetric ranges have two ends: the search first shrinks both ends by a common factor, then alternates between the
upper end (lower fixed) and the lower end (upper fixed), twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from rkfarm.errors import BuildError
from rkfarm.quant.stats import TensorStats

Range = tuple[float, float]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

KL_BINS = 2048
KL_LEVELS = 256
MSE_BINS = 4096
CANDIDATES = 96
SWEEPS = 2
SPIKE_WINDOW = 8  # bins on each side
SPIKE_FACTOR = 2.0
KL_MAX_CLIPPED = 1e-3  # of the non-zero values, per side
_KL_EPS = 1e-4 / KL_BINS


class Calibrator:
    """Collects TensorStats per tensor; subclasses choose a range from a group's merged stats."""

    name: ClassVar[str] = ""
    histogram: ClassVar[bool] = False

    def __init__(self) -> None:
        self.stats: dict[str, TensorStats] = {}

    def collect(self, name: str, values: npt.NDArray[np.floating]) -> None:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = TensorStats(self.histogram)
        try:
            stats.update(values)
        except ValueError as exc:
            raise BuildError(
                f"tensor {name!r} has {exc} during calibration; check the dataset's preprocessing (mean/std)"
            ) from None

    def compute(
        self,
        groups: Mapping[str, Sequence[str]],
        full_range: Set[str] = frozenset(),
        bounds: Mapping[str, Range] | None = None,
    ) -> dict[str, Range]:
        """One (min, max) per group representative; every member must have been collected. Groups holding a
        tensor of ``full_range`` (the model's outputs, Softmax inputs) keep the observed min/max whatever the
        algorithm. A group in ``bounds`` (``saturation``: its readers are flat outside them) has its chosen range
        cut to them."""
        from tqdm import tqdm

        ranges: dict[str, Range] = {}
        quiet = None if self.histogram else True  # a bar on a terminal for KL/MMSE only: min/max is instant
        bar = tqdm(groups.items(), total=len(groups), desc=f"{self.name} range search", unit="tensor", leave=False,
                   disable=quiet)  # fmt: skip
        with bar:
            for rep, names in bar:
                missing = [n for n in names if n not in self.stats]
                if missing:
                    raise BuildError(f"calibration saw no values for tensor(s) {missing[:3]}")
                merged = TensorStats.merged([self.stats[n] for n in names])
                if any(name in full_range for name in names):
                    lo, hi = merged.min, merged.max
                else:
                    lo, hi = self.choose(merged)
                if bounds and rep in bounds:  # cut after the search, see the module's docstring
                    lo, hi = max(lo, bounds[rep][0]), min(hi, bounds[rep][1])
                ranges[rep] = (min(lo, 0.0), max(hi, 0.0))
        return ranges

    def choose(self, stats: TensorStats) -> Range:
        raise NotImplementedError


class MinMaxCalibrator(Calibrator):
    name = "normal"

    def choose(self, stats: TensorStats) -> Range:
        return stats.min, stats.max


class _SearchCalibrator(Calibrator):
    """Alternating search of the range's two ends, minimising ``cost`` over bin-edge candidates."""

    histogram = True
    bins: ClassVar[int] = MSE_BINS
    min_bins: ClassVar[int] = 1  # fewest bins a candidate range may span
    max_clipped: ClassVar[float] = 1.0  # largest fraction of the values a range may leave out on each side

    def choose(self, stats: TensorStats) -> Range:
        h = stats.coarsened(self.bins)
        assert h.counts is not None
        counts = self.prepare(h.nonzero_counts().astype(np.float64))  # exact zeros cost nothing on any grid
        n = counts.size
        zero = -h.offset  # index of the edge at real 0
        if n < 2 * self.min_bins or counts.sum() == 0:
            return stats.min, stats.max
        cum = np.concatenate([[0], np.cumsum(h.nonzero_counts())])
        allowed = self.max_clipped * cum[-1]
        a_max = int(np.searchsorted(cum, allowed, side="right")) - 1  # a <= a_max clips at most that below
        b_min = int(np.searchsorted(cum, cum[-1] - allowed, side="left"))  # b >= b_min clips at most that above
        a, b = 0, n  # the range is [edges[a], edges[b]]
        if 0 < zero < n:  # both signs: first shrink both ends together, then refine each end
            shrink = np.sqrt(np.linspace(0.0, 1.0, CANDIDATES))[1:]
            ja = np.round(zero * (1.0 - shrink)).astype(np.int64)
            jb = np.round(zero + (n - zero) * shrink).astype(np.int64)
            keep = (jb - ja >= self.min_bins) & (ja < zero) & (jb > zero) & (ja <= a_max) & (jb >= b_min)
            if keep.any():
                best = int(np.argmin(self.cost(counts, ja[keep], jb[keep], h)))
                a, b = int(ja[keep][best]), int(jb[keep][best])
        for _ in range(SWEEPS):
            if b > zero:  # search the upper end
                lowest = max(a + self.min_bins, zero + 1, b_min)
                if lowest < n:
                    cands = _candidates(lowest, n)
                    b = int(cands[np.argmin(self.cost(counts, np.full_like(cands, a), cands, h))])
            if a < zero:  # search the lower end
                highest = min(b - self.min_bins, zero - 1, a_max)
                if highest > 0:
                    cands = _candidates(0, highest, dense_at_first=True)
                    a = int(cands[np.argmin(self.cost(counts, cands, np.full_like(cands, b), h))])
        edges = h.edges
        return max(float(edges[a]), stats.min), min(float(edges[b]), stats.max)

    def prepare(self, counts: FloatArray) -> FloatArray:
        return counts

    def cost(self, counts: FloatArray, a: IntArray, b: IntArray, h: TensorStats) -> FloatArray:
        raise NotImplementedError


def cap_spikes(counts: FloatArray) -> FloatArray:
    """Counts capped at twice the median of their neighbourhood. A spike is a layer's constant response to a flat
    image background (the calibration images' white paper); on the images a user feeds, with uneven light and
    noise, it is spread out, so a range fitted to where the spike falls on the grid fits nothing there."""
    padded = np.pad(counts, SPIKE_WINDOW, mode="edge")
    local = np.median(sliding_window_view(padded, 2 * SPIKE_WINDOW + 1), axis=1)
    capped: FloatArray = np.minimum(counts, SPIKE_FACTOR * local + 1.0)
    return capped


def _candidates(first: int, last: int, dense_at_first: bool = False) -> IntArray:
    """Up to CANDIDATES bin edges from ``first`` to ``last`` inclusive, denser at the end that clips least."""
    if last - first + 1 <= CANDIDATES:
        return np.arange(first, last + 1, dtype=np.int64)
    step = (last - first) * np.sqrt(np.linspace(0.0, 1.0, CANDIDATES))
    edges = last - step if dense_at_first else first + step
    unique: IntArray = np.unique(np.round(edges).astype(np.int64))
    return unique


class EntropyCalibrator(_SearchCalibrator):
    name = "kl_divergence"
    bins = KL_BINS
    min_bins = KL_LEVELS
    max_clipped = KL_MAX_CLIPPED

    def prepare(self, counts: FloatArray) -> FloatArray:
        """The divergence models quantization as spreading a level's mass evenly over its bins, which suits
        smooth densities; a lone spike would look like a divergence only clipping can shrink (``cap_spikes``)."""
        return cap_spikes(counts)

    def cost(self, counts: FloatArray, a: IntArray, b: IntArray, h: TensorStats) -> FloatArray:
        """KL(P || Q). P: the histogram cut to [a, b) with the mass outside folded into its end bins. Q: the cut
        histogram *without* that mass, merged into 256 equal groups and spread back evenly over the bins where P
        is non-zero. Clipping shows as P's heavy end bins that Q cannot match; coarse levels as Q's flattening."""
        n = counts.size
        k = a.size
        j = np.arange(n)
        rows = np.arange(k)
        inside = (j >= a[:, None]) & (j < b[:, None])
        cut = np.where(inside, counts, 0.0)
        p = cut.copy()
        cum = np.concatenate([[0.0], np.cumsum(counts)])
        p[rows, a] += cum[a]
        p[rows, b - 1] += cum[n] - cum[b]
        group = (j - a[:, None]) * KL_LEVELS // (b - a)[:, None]
        flat = np.clip(group, 0, KL_LEVELS - 1) + rows[:, None] * KL_LEVELS
        nonzero = inside & (p > 0)
        mass = np.bincount(flat[inside], weights=cut[inside], minlength=k * KL_LEVELS)
        filled = np.bincount(flat[nonzero], minlength=k * KL_LEVELS)
        q = np.where(nonzero, mass[flat] / np.maximum(filled[flat], 1), 0.0)
        p /= p.sum(axis=1, keepdims=True)
        q /= np.maximum(q.sum(axis=1, keepdims=True), 1e-300)
        q = np.where(nonzero, np.maximum(q, _KL_EPS), 1.0)  # smoothing: no infinite divergence for empty groups
        safe_p = np.where(nonzero, p, 1.0)
        cost: FloatArray = np.sum(np.where(nonzero, p * np.log(safe_p / q), 0.0), axis=1)
        return cost


class MseCalibrator(_SearchCalibrator):
    name = "mmse"
    bins = MSE_BINS

    def prepare(self, counts: FloatArray) -> FloatArray:
        """Spikes capped as for the divergence (``cap_spikes``): the squared error of a spike depends only on
        where it falls between two levels, which the search would otherwise fit the range to."""
        return cap_spikes(counts)

    def cost(self, counts: FloatArray, a: IntArray, b: IntArray, h: TensorStats) -> FloatArray:
        """Expected squared error of quantizing the bin centres with the int8 grid of each candidate range."""
        edges = h.edges
        centres = (edges[:-1] + edges[1:]) / 2
        used = counts > 0
        centres, weights = centres[used], counts[used]
        lo, hi = edges[a], edges[b]
        scale = (hi - lo) / 255.0
        zero_point = np.clip(np.round(-lo / scale) - 128, -128, 127)[:, None]
        q = np.clip(np.round(centres / scale[:, None]) + zero_point, -128, 127)
        err = centres - (q - zero_point) * scale[:, None]
        cost: FloatArray = (err * err) @ weights
        return cost


CALIBRATORS: dict[str, type[Calibrator]] = {
    MinMaxCalibrator.name: MinMaxCalibrator,
    EntropyCalibrator.name: EntropyCalibrator,
    MseCalibrator.name: MseCalibrator,
}
