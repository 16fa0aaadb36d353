"""Helpers shared by the benchmark scripts: interleaved timing, medians, tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, per_round: int, warmup: int = 20
) -> dict[str, list[float]]:
    """Time each callable in alternating blocks, so machine noise hits all of them alike. Microseconds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(per_round):
                t0 = time.perf_counter_ns()
                fn()
                samples[name].append((time.perf_counter_ns() - t0) / 1000.0)
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100.0 * len(s)))]
