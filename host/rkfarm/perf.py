"""Performance and memory results, and the vendor-style tables eval_perf / eval_memory print.

A package built with ``rknn_batch_size=N`` runs N samples per inference: the report adds per-batch and
per-sample figures. One built with ``dynamic_input`` is timed once per shape set (``evaluate``): the main figures
are the largest set's (the vendor's MaxShape), and a section lists every set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rkfarm.perf_report import op_ranking
from rkfarm_proto.records import LayerTiming, MemoryReport, PerfOptions
from rkfarm_proto.tensors import shape_str, to_numpy_dtype
from rkfarm_proto.v1 import package_pb2


class Timed(Protocol):
    """What ``evaluate`` needs of a runtime (``rkfarm.runtime.Runtime`` has it; perf stays below runtime)."""

    def inference(self, inputs: Sequence[Any], data_format: Any, inputs_pass_through: Any) -> Any: ...

    def eval_perf(self, options: PerfOptions) -> PerfData: ...


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


@dataclass(frozen=True)
class ShapePerf:
    """The timing of one dynamic_input shape set: its index, its input shapes (payload layout), its latency."""

    index: int
    shapes: list[list[int]]
    stats: LatencyStats

    @property
    def fps(self) -> float:
        return 1e6 / self.stats.median_us if self.stats.median_us > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "shapes": self.shapes, "fps": self.fps, "latency_us": asdict(self.stats)}


class PerfReport(str):
    """eval_perf()'s result: the vendor's printable string, plus the figures as attributes.

    ``str(report)`` is the table the vendor returns; ``report.total_us``, ``report.fps``, ``report.stats``
    and ``report.layers`` hold the numbers, and ``report.to_dict()`` is JSON-ready. ``total_us`` and ``fps`` are
    per inference run; with ``rknn_batch_size=N`` (``report.batch_size``) a run holds N samples:
    ``report.per_sample_us`` and ``report.samples_per_s``. ``report.per_shape`` has one ``ShapePerf`` per
    dynamic_input shape set (empty for a static model); the main figures are then set ``report.main_shape``'s.
    ``report.run_times_us`` holds every timed run. ``report.to_html(path)`` writes a self-contained page (per-layer
    bars, op-type ranking, latency distribution) and ``report.to_chrome_trace(path)`` a Trace Event Format file
    that chrome://tracing and ui.perfetto.dev open (see ``rkfarm.perf_report``).
    """

    total_us: float
    fps: float
    stats: LatencyStats
    run_times_us: list[float]
    layers: list[LayerTiming]
    where: str
    profiled_run_times_us: list[float]
    batch_size: int
    per_sample_us: float
    samples_per_s: float
    per_shape: list[ShapePerf]
    main_shape: int | None

    def __new__(
        cls,
        data: PerfData,
        batch_size: int = 1,
        per_shape: Sequence[ShapePerf] = (),
        main_shape: int | None = None,
    ) -> PerfReport:
        stats = LatencyStats.from_samples(data.run_times_us)
        batch_size = max(1, int(batch_size))
        obj = super().__new__(cls, format_perf(data, stats, batch_size, per_shape, main_shape))
        obj.stats = stats
        obj.run_times_us = list(data.run_times_us)
        obj.total_us = stats.median_us
        obj.fps = 1e6 / stats.median_us if stats.median_us > 0 else math.inf
        obj.layers = list(data.layers)
        obj.where = data.where
        obj.profiled_run_times_us = list(data.profiled_run_times_us)
        obj.batch_size = batch_size
        obj.per_sample_us = stats.median_us / batch_size
        obj.samples_per_s = obj.fps * batch_size
        obj.per_shape = list(per_shape)
        obj.main_shape = main_shape
        return obj

    def to_dict(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "total_time_us": self.total_us,
            "fps": self.fps,
            "batch_size": self.batch_size,
            "per_sample_us": self.per_sample_us,
            "samples_per_s": self.samples_per_s,
            "latency_us": asdict(self.stats),
            "run_times_us": self.run_times_us,
            "layers": [asdict(layer) for layer in self.layers],
            "profiled_run_times_us": self.profiled_run_times_us,
            "per_shape": [p.to_dict() for p in self.per_shape],
            "main_shape": self.main_shape,
        }

    def to_html(self, path: str | os.PathLike[str], title: str = "") -> Path:
        """Write this report as a self-contained HTML page (no network needed to open it); returns the path."""
        from rkfarm.perf_report import write_perf_html

        return write_perf_html(self, Path(path), title)

    def to_chrome_trace(self, path: str | os.PathLike[str], title: str = "") -> Path:
        """Write this report as Chrome trace / Perfetto JSON (Trace Event Format); returns the path."""
        from rkfarm.perf_report import write_chrome_trace

        return write_chrome_trace(self, Path(path), title)


def evaluate(runtime: Timed, header: package_pb2.PackageHeader, options: PerfOptions) -> PerfReport:
    """eval_perf on an opened package: its batch size from the header, and for a dynamic_input package one
    measurement per shape set, on zeros of that set (pass-through, in the payload's layout); the per-layer
    profile, if asked, is the largest set's. The largest set is timed last, so it stays the runtime's last
    inputs (what a later plain ``runtime.eval_perf`` times, as the vendor does)."""
    batch = int(header.rknn_batch_size) or 1
    sets = [[[int(d) for d in s.dims] for s in shape_set.inputs] for shape_set in header.shape_sets]
    if not sets:
        return PerfReport(runtime.eval_perf(options), batch)
    sizes = [sum(int(np.prod(shape)) for shape in shapes) for shapes in sets]
    main = sizes.index(max(sizes))
    dtypes = [to_numpy_dtype(spec.tensor.dtype) for spec in header.inputs]
    measured: dict[int, PerfData] = {}
    for index in [*(i for i in range(len(sets)) if i != main), main]:
        zeros = [np.zeros(shape, dtype) for shape, dtype in zip(sets[index], dtypes)]
        runtime.inference(zeros, None, [1] * len(zeros))
        measured[index] = runtime.eval_perf(replace(options, per_layer=options.per_layer and index == main))
    per_shape = [ShapePerf(i, sets[i], LatencyStats.from_samples(measured[i].run_times_us)) for i in range(len(sets))]
    return PerfReport(measured[main], batch, per_shape, main)


def format_perf(
    data: PerfData,
    stats: LatencyStats,
    batch_size: int = 1,
    per_shape: Sequence[ShapePerf] = (),
    main_shape: int | None = None,
) -> str:
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
    ]
    if batch_size > 1 and stats.median_us > 0:
        lines.append(
            f"Batch {batch_size} (rknn_batch_size): {stats.median_us / 1000:.3f} ms per batch, "
            f"{stats.median_us / batch_size / 1000:.3f} ms per sample, {1e6 * batch_size / stats.median_us:.1f} "
            "samples/s"
        )
    if per_shape:
        lines += _shape_table(per_shape, main_shape, width)
    lines.append("=" * width)
    return "\n".join(lines)


def _shape_table(per_shape: Sequence[ShapePerf], main_shape: int | None, width: int) -> list[str]:
    lines = [
        "=" * width,
        "Per dynamic_input Shape Set (zeros, payload layout)".center(width),
        "-" * width,
        f"{'Set':<6}{'InputShapes':<60}{'Median(us)':>14}{'Min(us)':>12}{'FPS':>12}",
    ]
    for item in per_shape:
        mark = "*" if item.index == main_shape else ""
        shapes = " ".join(shape_str(s) for s in item.shapes)
        lines.append(
            f"{str(item.index) + mark:<6}{_clip(shapes, 59):<60}{item.stats.median_us:>14.1f}"
            f"{item.stats.min_us:>12.1f}{item.fps:>12.2f}"
        )
    if main_shape is not None:
        lines.append("* the largest set (the vendor's MaxShape): the figures above are its")
    return lines


def _ranking(layers: Sequence[LayerTiming], total: float, width: int) -> list[str]:
    lines = ["=" * width, "Operator Time Consuming Ranking Table".center(width), "-" * width]
    lines.append(f"{'OpType':<24}{'CallNumber':>12}{'TotalTime(us)':>16}{'TimeRatio(%)':>14}")
    for op, calls, time_us in op_ranking(layers):
        ratio = 100.0 * time_us / total if total > 0 else 0.0
        lines.append(f"{op[:23]:<24}{calls:>12}{time_us:>16.1f}{ratio:>13.2f}%")
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
