"""Timing loops shared by the agent's EvalPerf and the host simulator."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from rkfarm_agent.backends.base import Array, LayerTiming, LoadedModel
from rkfarm_proto.tensors import to_numpy_dtype
from rkfarm_proto.v1 import agent_pb2, package_pb2

PROFILE_RUNS = 20  # runs averaged into a per-layer table (the profiler slows every run it watches)


def time_runs(
    model: LoadedModel, feeds: Sequence[Any], runs: int, warmup: int, deadline: float | None = None
) -> list[float]:
    """Wall time of each of ``runs`` inferences after ``warmup`` untimed ones, in microseconds; fewer runs if
    ``time.monotonic()`` passes ``deadline``."""
    for _ in range(warmup):
        model.run(feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        model.run(feeds)
        times.append((time.perf_counter_ns() - start) / 1000.0)
        if deadline is not None and time.monotonic() > deadline:
            break
    return times


def layer_to_proto(layer: LayerTiming) -> agent_pb2.LayerTime:
    return agent_pb2.LayerTime(**dataclasses.asdict(layer))


def layer_from_proto(message: agent_pb2.LayerTime) -> LayerTiming:
    return LayerTiming(**{f.name: getattr(message, f.name) for f in dataclasses.fields(LayerTiming)})


def dummy_feeds(header: package_pb2.PackageHeader) -> list[Array]:
    """Prepared zero inputs of each payload input's shape (dynamic dims taken as 1), for timing."""
    feeds: list[Array] = []
    for spec in header.inputs:
        shape = [d if d > 0 else 1 for d in spec.tensor.shape]
        feeds.append(np.zeros(shape, dtype=to_numpy_dtype(spec.tensor.dtype)))
    return feeds
