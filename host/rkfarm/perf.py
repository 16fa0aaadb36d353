"""Performance and memory results, and the vendor-style tables eval_perf / eval_memory print."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rkfarm_proto.records import LayerTiming, MemoryReport


@dataclass(frozen=True)
class LatencyStats:
    """Latency over N timed runs after warm-up, in microseconds."""

    runs: int
    min_us: float
    median_us: float
    mean_us: float
    p90_us: float
    p99_us: float
    max_us: float
    std_us: float

    @classmethod
    def from_samples(cls, samples_us: Sequence[float]) -> LatencyStats:
        if not samples_us:
            raise ValueError("no timing samples")
        a = np.asarray(samples_us, dtype=np.float64)
        return cls(
            runs=int(a.size),
            min_us=float(a.min()),
            median_us=float(np.median(a)),
            mean_us=float(a.mean()),
            p90_us=float(np.percentile(a, 90)),
            p99_us=float(np.percentile(a, 99)),
            max_us=float(a.max()),
            std_us=float(a.std()),
        )


@dataclass(frozen=True)
class PerfData:
    """What a runtime measured: every timed run, and per-layer times when perf_debug was on."""

    run_times_us: list[float]
    layers: list[LayerTiming] = field(default_factory=list)
    where: str = ""  # "simulator (...)" or "agent <id> @ host:port (...)"
    profiled_run_times_us: list[float] = field(default_factory=list)  # runs with the profiler on


class PerfReport(str):
    """eval_perf()'s result: the vendor's printable string, plus the figures as attributes.

    ``str(report)`` is the table the vendor returns; ``report.total_us``, ``report.fps``, ``report.stats``
    and ``report.layers`` hold the numbers, and ``report.to_dict()`` is JSON-ready.
    """

    total_us: float
    fps: float
    stats: LatencyStats
    layers: list[LayerTiming]
    where: str
    profiled_run_times_us: list[float]

    def __new__(cls, data: PerfData) -> PerfReport:
        stats = LatencyStats.from_samples(data.run_times_us)
        obj = super().__new__(cls, format_perf(data, stats))
        obj.stats = stats
        obj.total_us = stats.median_us
        obj.fps = 1e6 / stats.median_us if stats.median_us > 0 else math.inf
        obj.layers = list(data.layers)
        obj.where = data.where
        obj.profiled_run_times_us = list(data.profiled_run_times_us)
        return obj

    def to_dict(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "total_time_us": self.total_us,
            "fps": self.fps,
            "latency_us": asdict(self.stats),
            "layers": [asdict(layer) for layer in self.layers],
            "profiled_run_times_us": self.profiled_run_times_us,
        }


def format_perf(data: PerfData, stats: LatencyStats) -> str:
    width = 118
    lines = ["=" * width, "Performance".center(width), "=" * width]
    if data.where:
        lines.append(f"Measured on: {data.where}")
    if data.layers:
        header = (
            f"{'ID':<5}{'OpType':<22}{'DataType':<10}{'Target':<8}{'InputShape':<34}"
            f"{'OutputShape':<22}{'Time(us)':>10}  FullName"
        )
        lines += [header, "-" * width]
        for layer in data.layers:
            lines.append(
                f"{layer.index + 1:<5}{layer.op_type[:21]:<22}{layer.data_type[:9]:<10}{layer.target[:7]:<8}"
                f"{_clip(layer.input_shapes, 33):<34}{_clip(layer.output_shapes, 21):<22}"
                f"{layer.time_us:>10.1f}  {layer.name}"
            )
        layer_total = sum(layer.time_us for layer in data.layers)
        lines += ["-" * width, f"Total Operator Elapsed Per Frame Time(us): {layer_total:.1f}"]
        if data.profiled_run_times_us:
            profiled = float(np.median(data.profiled_run_times_us))
            lines.append(f"Profiled Run Time Per Frame(us): {profiled:.1f} (the profiler's own overhead included)")
        lines += _ranking(data.layers, layer_total, width)
    lines += [
        "=" * width,
        f"Total Inference Time Per Frame(us): {stats.median_us:.1f}    FPS: {1e6 / stats.median_us:.2f}"
        if stats.median_us > 0
        else "Total Inference Time Per Frame(us): 0",
        f"Latency over {stats.runs} runs (us): min {stats.min_us:.1f}  median {stats.median_us:.1f}  "
        f"p90 {stats.p90_us:.1f}  p99 {stats.p99_us:.1f}  max {stats.max_us:.1f}  std {stats.std_us:.1f}",
        "=" * width,
    ]
    return "\n".join(lines)


def _ranking(layers: Sequence[LayerTiming], total: float, width: int) -> list[str]:
    calls: dict[str, int] = defaultdict(int)
    times: dict[str, float] = defaultdict(float)
    for layer in layers:
        calls[layer.op_type] += 1
        times[layer.op_type] += layer.time_us
    lines = ["=" * width, "Operator Time Consuming Ranking Table".center(width), "-" * width]
    lines.append(f"{'OpType':<24}{'CallNumber':>12}{'TotalTime(us)':>16}{'TimeRatio(%)':>14}")
    for op in sorted(times, key=times.__getitem__, reverse=True):
        ratio = 100.0 * times[op] / total if total > 0 else 0.0
        lines.append(f"{op[:23]:<24}{calls[op]:>12}{times[op]:>16.1f}{ratio:>13.2f}%")
    return lines


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def memory_dict(report: MemoryReport, where: str) -> dict[str, Any]:
    """eval_memory()'s dict: the documented keys, the vendor manual's keys, and how they were measured."""
    return {
        "weight_memory": report.weight_bytes,
        "internal_memory": report.internal_bytes,
        "other_memory": report.other_bytes,
        "total_memory": report.total_bytes,
        "total_weight_allocation": report.weight_bytes,
        "total_internal_allocation": report.internal_bytes,
        "total_model_allocation": report.total_bytes,
        "where": where,
        "method": report.method,
    }


def format_memory(mem: dict[str, Any]) -> str:
    width = 70
    mib = 1024 * 1024
    rows = [
        ("Weight Memory", mem["weight_memory"]),
        ("Internal Tensor Memory", mem["internal_memory"]),
        ("Other Memory", mem["other_memory"]),
        ("Total Memory", mem["total_memory"]),
    ]
    lines = ["=" * width, "Memory Profile Info Dump".center(width), "=" * width]
    if mem.get("where"):
        lines.append(f"Measured on: {mem['where']}")
    lines += [f"{name:<28}{value / mib:>12.2f} MiB  ({value} bytes)" for name, value in rows]
    lines += ["=" * width, f"Method: {mem.get('method', '')}", "=" * width]
    return "\n".join(lines)
