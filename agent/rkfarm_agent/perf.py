"""The measuring sequence both the agent's EvalPerf and the host simulator run: warm-up, timed runs, and the
per-layer profile when asked, on the same feeds."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rkfarm_agent.backends.base import Array, LoadedModel
from rkfarm_proto.errors import RkfarmError
from rkfarm_proto.records import PROFILE_RUNS, LayerProfile, PerfOptions
from rkfarm_proto.tensors import to_numpy_dtype
from rkfarm_proto.v1 import package_pb2


@dataclass(frozen=True)
class Measurement:
    """What one eval_perf measured: each timed run, and the profile when per-layer times were asked for."""

    run_times_us: list[float]
    profile: LayerProfile | None


class MeasurementCancelledError(RkfarmError):
    """The caller went away while its model was being timed; nothing is left to answer."""


def time_runs(
    model: LoadedModel,
    feeds: Sequence[Any],
    runs: int,
    warmup: int,
    deadline: float | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[float]:
    """Wall time of each of ``runs`` inferences after ``warmup`` untimed ones, in microseconds.

    Past ``deadline`` (``time.monotonic()``) the warm-up ends and at most one timed run follows; once
    ``cancelled()`` is true, MeasurementCancelledError ends it all.
    """

    def stop() -> bool:
        if cancelled is not None and cancelled():
            raise MeasurementCancelledError("the caller went away; measuring stopped")
        return deadline is not None and time.monotonic() > deadline

    for _ in range(warmup):
        if stop():
            break
        model.run(feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        model.run(feeds)
        times.append((time.perf_counter_ns() - start) / 1000.0)
        if stop():
            break
    return times


def measure(
    model: LoadedModel,
    feeds: Sequence[Any],
    options: PerfOptions,
    deadline: float | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Measurement:
    """``options.warmup`` untimed runs, ``options.runs`` timed ones, then, with ``per_layer``, up to
    ``PROFILE_RUNS`` runs under the backend's profiler (which slows what it watches). Past ``deadline`` it
    stops early (the profile, if asked, then covers one run); ``cancelled`` stops it at once."""
    times = time_runs(model, feeds, options.runs, options.warmup, deadline, cancelled)
    profile = None
    if options.per_layer:
        late = deadline is not None and time.monotonic() > deadline
        profile = model.profile(feeds, runs=1 if late else min(options.runs, PROFILE_RUNS))
    return Measurement(times, profile)


def dummy_feeds(header: package_pb2.PackageHeader) -> list[Array]:
    """Prepared zero inputs of each payload input's shape (dynamic dims taken as 1), for timing. A model built
    with dynamic_input gets its largest shape set (most elements in all), which the vendor times too."""
    feeds: list[Array] = []
    sets = [[list(s.dims) for s in shape_set.inputs] for shape_set in header.shape_sets]
    largest = max(sets, key=lambda shapes: sum(int(np.prod(s)) for s in shapes)) if sets else None
    for index, spec in enumerate(header.inputs):
        shape = largest[index] if largest else [d if d > 0 else 1 for d in spec.tensor.shape]
        feeds.append(np.zeros(shape, dtype=to_numpy_dtype(spec.tensor.dtype)))
    return feeds
