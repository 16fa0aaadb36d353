"""auto_hybrid: the fewest layers to keep in float for the model's output to reach a threshold.

The target is the vendor's: ``config(auto_hybrid_cos_thresh=0.98, auto_hybrid_euc_thresh=None)`` — the mean
cosine similarity of every model output to the float model's, over the first ``samples`` calibration samples,
must reach ``cos_thresh`` (and the mean euclidean distance stay under ``euc_thresh`` when given).

Search:

1. measure the int8 model; if it already reaches the threshold, nothing is kept float;
2. rank the candidates — each set of tensors sharing quantization parameters, named by its first tensor — by
   the output error each causes when it alone is quantized (``sensitivity``: one session): every candidate on
   the samples the int8 model gets most wrong, the worst ``shortlist`` of them on every sample (ranking on the
   first few samples instead missed the few where the classifier's error concentrates, and kept 64 layers
   float instead of 8);
3. keep the shortest prefix of that ranking that reaches the threshold, measured on the real QDQ model with
   ONNX Runtime: double the prefix until it does, then bisect between the last failing and the first passing
   length;
4. prune: drop chosen layers one at a time, least harmful first, while the threshold still holds (at most
   ``max_prune_trials`` trials).

The result is the fewest layers this greedy order finds, not a proven minimum (that is a search over subsets).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rkfarm.config import RknnConfig
from rkfarm.errors import BuildError
from rkfarm.metrics import cosine, euclidean
from rkfarm.quant.collect import model_batches
from rkfarm.quant.dataset import Array, CalibrationDataset
from rkfarm.quant.hybrid import expand_groups, float_plan
from rkfarm.quant.qdq import Calibration, apply_qdq
from rkfarm.quant.sensitivity import isolated_errors
from rkfarm.runtime.sessions import open_session
from rkfarm.specs import input_specs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOptions:
    """What the search aims at and how long it may take; thresholds come from ``config()``."""

    cos_thresh: float
    euc_thresh: float | None
    samples: int = 8  # calibration samples the ranking and every trial measure the output on
    screen_samples: int = 2  # the hardest samples, on which every candidate is ranked first
    shortlist: int = 24  # candidates then ranked on every sample
    max_prune_trials: int = 16

    @classmethod
    def from_config(cls, cfg: RknnConfig, **overrides: Any) -> SearchOptions:
        euc = None if cfg.auto_hybrid_euc_thresh is None else float(cfg.auto_hybrid_euc_thresh)
        return cls(float(cfg.auto_hybrid_cos_thresh), euc, **overrides)


@dataclass(frozen=True)
class Score:
    cosine: float  # the lowest, over outputs, of the mean cosine over samples
    euclidean: float  # the highest, over outputs, of the mean euclidean distance
    per_sample: tuple[float, ...] = ()  # each sample's lowest output cosine

    def meets(self, options: SearchOptions) -> bool:
        euc_ok = options.euc_thresh is None or self.euclidean <= options.euc_thresh
        return self.cosine >= options.cos_thresh and euc_ok


@dataclass
class HybridResult:
    """What the search chose and measured."""

    float_layers: list[str]
    before: Score
    after: Score
    samples: int
    trials: int
    ranking: list[str] = field(default_factory=list)  # candidates, most harmful first
    elapsed_s: float = 0.0

    def describe(self) -> str:
        return (
            f"{len(self.float_layers)} layer(s) kept in float; output cosine {self.before.cosine:.4f} -> "
            f"{self.after.cosine:.4f}, euclidean {self.before.euclidean:.4g} -> {self.after.euclidean:.4g} "
            f"({self.samples} samples, {self.trials} trials, {self.elapsed_s:.1f} s)"
        )


class _Trials:
    """Measures the output of the model with a given set of float layers, against the float model."""

    def __init__(self, calibration: Calibration, samples: list[list[Array]], fixed: Sequence[str]) -> None:

        self.calibration = calibration
        self.samples = samples
        self.fixed = list(fixed)
        self.count = 0
        golden = open_session(calibration.model, "float")
        names = [i.name for i in golden.get_inputs()]
        self.inputs = names
        self.golden = [golden.run(None, dict(zip(names, feeds))) for feeds in samples]

    def score(self, floats: Sequence[str]) -> Score:

        cal = self.calibration
        plan = float_plan(cal.model, cal.plan, [*self.fixed, *floats])
        session = open_session(apply_qdq(cal.model, plan, cal.table), "quantized")
        cos: list[list[float]] = []
        euc: list[list[float]] = []
        for feeds, want in zip(self.samples, self.golden):
            got = session.run(None, dict(zip(self.inputs, feeds)))
            cos.append([cosine(w, g) for w, g in zip(want, got)])
            euc.append([euclidean(w, g) for w, g in zip(want, got)])
        self.count += 1
        per_sample = tuple(float(min(c)) for c in cos)
        return Score(float(np.min(np.mean(cos, axis=0))), float(np.max(np.mean(euc, axis=0))), per_sample)


def rank(
    calibration: Calibration,
    fixed: Sequence[str],
    samples: Sequence[Sequence[Array]],
    before: Score,
    options: SearchOptions,
) -> list[str]:
    """Candidates (one per parameter group), most harmful first: the output error each causes alone.

    Every candidate is measured on the ``screen_samples`` samples the int8 model gets most wrong (the error of
    a classifier concentrates on a few ambiguous inputs), then the ``shortlist`` worst on every sample."""

    cal = calibration
    plan = float_plan(cal.model, cal.plan, fixed)
    taken = set(expand_groups(cal.plan, fixed))
    hardest = sorted(range(len(samples)), key=lambda i: before.per_sample[i])[: max(1, options.screen_samples)]
    if len(hardest) < len(samples) and len(plan.groups) > options.shortlist:
        screen = isolated_errors(cal.model, plan, cal.table, [samples[i] for i in hardest])
        order = [rep for rep in sorted(screen, key=lambda rep: -screen[rep]) if rep not in taken]
        short, rest = order[: options.shortlist], order[options.shortlist :]
    else:
        short, rest = [rep for rep in plan.groups if rep not in taken], []
    errors = isolated_errors(cal.model, plan, cal.table, samples, only=short)
    return [*sorted(short, key=lambda rep: -errors[rep]), *rest]


def search(
    calibration: Calibration, cfg: RknnConfig, dataset: str, options: SearchOptions, fixed: Sequence[str] = ()
) -> HybridResult:
    """Choose float layers (beyond ``fixed``) for the output to reach the thresholds; see the module docstring."""
    from tqdm import tqdm

    started = time.perf_counter()
    data = CalibrationDataset(dataset, input_specs(calibration.model, cfg))
    samples = list(model_batches(data, calibration.model, max(1, options.samples)))
    trials = _Trials(calibration, samples, fixed)
    before = trials.score([])
    if before.meets(options):
        log.info("auto_hybrid: the int8 model already reaches cosine %.4f (%.4f)", options.cos_thresh, before.cosine)
        return HybridResult([], before, before, len(samples), trials.count, [], time.perf_counter() - started)
    ranking = rank(calibration, fixed, samples, before, options)
    if not ranking:
        raise BuildError("auto_hybrid: no layer left to keep in float")
    with tqdm(desc="auto hybrid", unit="trial", leave=False, disable=None) as bar:

        def passes(count: int) -> tuple[bool, Score]:
            score = trials.score(ranking[:count])
            bar.update(1)
            return score.meets(options), score

        failing, length = 0, 1
        ok, score = passes(length)
        while not ok and length < len(ranking):
            failing, length = length, min(2 * length, len(ranking))
            ok, score = passes(length)
        if not ok:
            log.warning(
                "auto_hybrid: even %d float layers give cosine %.4f < %.4f; keeping them all",
                length,
                score.cosine,
                options.cos_thresh,
            )
        while ok and length - failing > 1:
            middle = (failing + length) // 2
            ok_mid, score_mid = passes(middle)
            if ok_mid:
                length, score = middle, score_mid
            else:
                failing = middle
        chosen = ranking[:length]
        for name in reversed(ranking[:length][-options.max_prune_trials :] if ok else []):
            if len(chosen) == 1:
                break
            trial = [t for t in chosen if t != name]
            score_trial = trials.score(trial)
            bar.update(1)
            if score_trial.meets(options):
                chosen, score = trial, score_trial
    result = HybridResult(chosen, before, score, len(samples), trials.count, ranking, time.perf_counter() - started)
    log.info("auto_hybrid: %s", result.describe())
    return result
