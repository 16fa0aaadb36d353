"""eval_perf results as something to look at: a self-contained HTML page and a Chrome trace / Perfetto file.

``write_perf_html(report, path)`` (``PerfReport.to_html``, ``rkfarm perf --html``) writes one page with no
external resources: the latency figures, the distribution of the timed runs (a histogram with the median,
p90 and p99 marked), and, for a report with per-layer times (``perf_debug``), a bar per layer in graph order
coloured by op type, the op-type ranking and a sortable per-layer table. Bars carry ``class="bar"`` /
``"opbar"`` / ``"hist"`` and ``data-*`` attributes with their numbers.

``write_chrome_trace(report, path)`` (``PerfReport.to_chrome_trace``, ``rkfarm perf --trace``) writes the Trace
Event Format that chrome://tracing and ui.perfetto.dev open: ``{"traceEvents": [...]}`` with complete events
(``ph: "X"``, ``ts``/``dur`` in µs) on three named threads of one process:

* ``timed runs`` — one event per timed run, its measured duration;
* ``profiled runs`` — one event per run under the profiler (which slows what it watches), its duration;
* ``layers`` — under each profiled run, one event per layer in graph order. The profiler reports each
  layer's time averaged over the profiled runs (the records hold no per-run layer times), so every run shows
  the same layer durations: the mean, as each event's ``args`` says.

A measurement records durations, not start times: runs are laid end to end from 0 (``otherData`` says so), and a
run's layers start with it, one after another.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rkfarm.errors import RkfarmError
from rkfarm.html_charts import (
    OTHER_COLOUR,
    PALETTE,
    Frame,
    chart_width,
    esc,
    fmt_us,
    legend,
    min_px,
    nice_step,
    page,
    wrap,
)
from rkfarm_proto.records import LayerTiming

PerfReport = Any  # rkfarm.perf.PerfReport (duck-typed: this module sits below rkfarm.perf)

BAR_H = 300
HIST_H = 240
MAX_BINS = 40
PID = 1
TID_TIMED, TID_PROFILED, TID_LAYERS = 1, 2, 3


def op_ranking(layers: Sequence[LayerTiming]) -> list[tuple[str, int, float]]:
    """(op type, calls, total µs) per op type, the most time first: the vendor's ranking table's rows."""
    calls: dict[str, int] = defaultdict(int)
    times: dict[str, float] = defaultdict(float)
    for layer in layers:
        calls[layer.op_type] += 1
        times[layer.op_type] += layer.time_us
    return [(op, calls[op], times[op]) for op in sorted(times, key=times.__getitem__, reverse=True)]


def op_colours(layers: Sequence[LayerTiming]) -> dict[str, str]:
    """A colour per op type: the palette for the op types that take the most time, grey for the rest."""
    ranked = [op for op, _, _ in op_ranking(layers)]
    return {op: PALETTE[i] if i < len(PALETTE) else OTHER_COLOUR for i, op in enumerate(ranked)}


def _y_axis(frame: Frame, top_value: float) -> tuple[float, list[tuple[float, str]]]:
    """A round axis maximum at or above ``top_value`` and its labelled grid lines (µs)."""
    step = nice_step(top_value, 5) if top_value > 0 else 1.0
    high = step * max(1, math.ceil(top_value / step - 1e-9))
    ticks = [(k * step, fmt_us(k * step) if k else "0") for k in range(round(high / step) + 1)]
    span = frame.bottom - frame.top
    return high, [(frame.bottom - span * v / high, text) for v, text in ticks]


def _layer_bars(layers: Sequence[LayerTiming], colours: dict[str, str]) -> str:
    frame = Frame(chart_width(len(layers)), BAR_H)
    high, ticks = _y_axis(frame, max(layer.time_us for layer in layers))
    total = sum(layer.time_us for layer in layers)
    slot = (frame.right - frame.left) / len(layers)

    def x(k: int) -> float:
        return frame.left + slot * (k + 0.5)

    parts = [frame.open("time per layer", "perf layers", min_px(frame.width)), frame.y_grid(ticks)]
    for k, layer in enumerate(layers):
        h = (frame.bottom - frame.top) * layer.time_us / high
        share = 100.0 * layer.time_us / total if total > 0 else 0.0
        tip = (
            f"#{layer.index + 1} [{layer.op_type}] {layer.name}: {layer.time_us:.1f} us ({share:.1f}%); "
            f"in {layer.input_shapes or '-'} out {layer.output_shapes or '-'}; {layer.data_type} on {layer.target}"
        )
        parts.append(
            f'<rect class="bar" data-index="{layer.index}" data-op="{esc(layer.op_type)}" data-us="{layer.time_us!r}" '
            f'x="{x(k) - slot * 0.4:.2f}" y="{frame.bottom - h:.2f}" width="{slot * 0.8:.2f}" height="{h:.2f}" '
            f'fill="{colours[layer.op_type]}"><title>{esc(tip)}</title></rect>'
        )
    parts.append(frame.x_ticks(len(layers), x, lambda k: layers[k].index + 1))
    parts.append(frame.axis_titles("layer (graph order, the ID column)", "time per layer"))
    parts.append("</svg>")
    return wrap("".join(parts))


def _op_bars(layers: Sequence[LayerTiming], colours: dict[str, str]) -> str:
    ranking = op_ranking(layers)
    total = sum(t for _, _, t in ranking)
    row, label_w, width = 22, 190, 1000.0
    height = 16 + row * len(ranking) + 10
    top_value = max(t for _, _, t in ranking) or 1.0
    inner = width - label_w - 170
    parts = [Frame(width, height).open("time per op type", "perf ops", min_px(width))]
    for k, (op, calls, time_us) in enumerate(ranking):
        y = 12 + row * k
        w = inner * time_us / top_value
        share = 100.0 * time_us / total if total > 0 else 0.0
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 14}" font-size="12" text-anchor="end">{esc(op)}</text>'
            f'<rect class="opbar" data-op="{esc(op)}" data-calls="{calls}" data-us="{time_us!r}" x="{label_w}" '
            f'y="{y + 2}" width="{w:.2f}" height="{row - 6}" fill="{colours[op]}">'
            f"<title>{esc(f'{op}: {calls} call(s), {time_us:.1f} us, {share:.1f}%')}</title></rect>"
            f'<text x="{label_w + w + 6:.1f}" y="{y + 14}" font-size="11">{esc(fmt_us(time_us))} · {share:.1f}% · '
            f"{calls}&#215;</text>"
        )
    parts.append("</svg>")
    return wrap("".join(parts))


def histogram(samples: Sequence[float], max_bins: int = MAX_BINS) -> tuple[list[float], list[int]]:
    """Bin edges and counts of ``samples``: about 2 sqrt(n) bins (10 to ``max_bins``) on 1-2-5 edges."""
    lo, hi = min(samples), max(samples)
    target = max(1, min(max_bins, max(10, round(2 * math.sqrt(len(samples))))))
    step = nice_step(hi - lo, target) if hi > lo else max(abs(lo) * 0.01, 1.0)
    start = math.floor(lo / step) * step
    bins = max(1, math.floor((hi - start) / step) + 1)
    edges = [start + i * step for i in range(bins + 1)]
    counts = [0] * bins
    for v in samples:
        counts[min(bins - 1, int((v - start) // step))] += 1
    return edges, counts


def _latency_hist(report: PerfReport) -> str:
    samples = report.run_times_us
    edges, counts = histogram(samples)
    frame = Frame(1000.0, HIST_H)
    lo, hi = edges[0], edges[-1]
    top = max(counts)
    step = max(1, int(nice_step(float(top), 4)))
    high = step * math.ceil(top / step)
    span = frame.bottom - frame.top

    def x(v: float) -> float:
        return frame.left + (frame.right - frame.left) * (v - lo) / (hi - lo)

    def y(c: float) -> float:
        return frame.bottom - span * c / high

    parts = [frame.open("latency distribution", "perf hist", min_px(frame.width))]
    parts.append(frame.y_grid([(y(c), str(c)) for c in range(0, high + 1, step)]))
    for k, count in enumerate(counts):
        a, b = edges[k], edges[k + 1]
        tip = f"{a:.1f} to {b:.1f} us: {count} run(s)"
        parts.append(
            f'<rect class="hist" data-count="{count}" data-from="{a!r}" data-to="{b!r}" x="{x(a) + 0.5:.2f}" '
            f'y="{y(count):.2f}" width="{max(x(b) - x(a) - 1.0, 0.5):.2f}" height="{span * count / high:.2f}" '
            f'fill="#1f77b4"><title>{esc(tip)}</title></rect>'
        )
    stats = report.stats
    markers = (
        ("median", stats.median_us, "#2ca02c"),
        ("p90", stats.p90_us, "#ff7f0e"),
        ("p99", stats.p99_us, "#d62728"),
    )
    for k, (name, value, colour) in enumerate(markers):
        parts.append(
            f'<line class="marker" data-name="{name}" x1="{x(value):.2f}" x2="{x(value):.2f}" y1="{frame.top}" '
            f'y2="{frame.bottom:.1f}" stroke="{colour}" stroke-dasharray="4 3"><title>{name} {value:.1f} us</title>'
            f'</line><text x="{x(value) + 3:.1f}" y="{frame.top + 10 + 12 * k:.1f}" font-size="11" fill="{colour}">'
            f"{name}</text>"
        )
    labels = [(lo + (hi - lo) * k / 5) for k in range(6)]
    parts.append(frame.baseline())
    parts += [
        f'<text x="{x(v):.1f}" y="{frame.bottom + 18:.1f}" font-size="11" text-anchor="middle">{esc(fmt_us(v))}</text>'
        for v in labels
    ]
    parts.append(frame.axis_titles("time per run", "runs"))
    parts.append("</svg>")
    return wrap("".join(parts))


def _stats_table(report: PerfReport) -> str:
    s = report.stats
    rows = [
        ("measured on", esc(report.where or "-")),
        ("timed runs", str(s.runs)),
        ("median", f"{s.median_us:.1f} us ({report.fps:.2f} FPS)"),
        ("min / mean / max", f"{s.min_us:.1f} / {s.mean_us:.1f} / {s.max_us:.1f} us"),
        ("p90 / p99 / std", f"{s.p90_us:.1f} / {s.p99_us:.1f} / {s.std_us:.1f} us"),
    ]
    if report.batch_size > 1:
        rows.append(("per sample", f"{report.per_sample_us:.1f} us (batch {report.batch_size})"))
    if report.layers:
        rows.append(("sum of layer times", f"{sum(layer.time_us for layer in report.layers):.1f} us"))
    if report.profiled_run_times_us:
        runs = report.profiled_run_times_us
        rows.append(("profiled runs", f"{len(runs)}, median {statistics.median(runs):.1f} us (profiler overhead in)"))
    cells = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="stats"><tbody>{cells}</tbody></table>'


def _layer_table(layers: Sequence[LayerTiming]) -> str:
    total = sum(layer.time_us for layer in layers)
    head = "".join(
        f'<th class="{"t" if h in ("op type", "name", "data type", "target", "input", "output") else ""}">{h}</th>'
        for h in ("ID", "op type", "name", "data type", "target", "input", "output", "time (us)", "share (%)")
    )
    rows = []
    for layer in layers:
        share = 100.0 * layer.time_us / total if total > 0 else 0.0
        text = (layer.op_type, layer.name, layer.data_type, layer.target, layer.input_shapes, layer.output_shapes)
        cells = "".join(f'<td class="t" data-v="{esc(t)}">{esc(t)}</td>' for t in text)
        rows.append(
            f'<tr><td data-v="{layer.index + 1}">{layer.index + 1}</td>{cells}'
            f'<td data-v="{layer.time_us!r}">{layer.time_us:.1f}</td><td data-v="{share!r}">{share:.2f}</td></tr>'
        )
    return (
        f'<div class="scroll"><table class="sortable layers"><thead><tr>{head}</tr></thead><tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table></div>"
    )


def _shape_table(report: PerfReport) -> str:
    head = "<tr><th>set</th><th class='t'>input shapes</th><th>median (us)</th><th>min (us)</th><th>FPS</th></tr>"
    rows = "".join(
        f"<tr><td>{p.index}{'*' if p.index == report.main_shape else ''}</td>"
        f"<td class='t'>{esc(' '.join(str(s) for s in p.shapes))}</td><td>{p.stats.median_us:.1f}</td>"
        f"<td>{p.stats.min_us:.1f}</td><td>{p.fps:.2f}</td></tr>"
        for p in report.per_shape
    )
    return (
        "<h2>Per dynamic_input shape set</h2>\n"
        f'<div class="scroll"><table><thead>{head}</thead><tbody>{rows}</tbody></table></div>\n'
        '<div class="note">* the largest set: the figures above are its.</div>'
    )


def render_perf_html(report: PerfReport, title: str = "") -> str:
    """The whole page for ``report``; ``title`` names the model."""
    parts = [
        f'<div class="sub">Latency over {report.stats.runs} timed run(s) after warm-up. Hover a bar for its '
        "numbers; click a column header to sort.</div>",
        _stats_table(report),
        "<h2>Latency distribution</h2>",
        _latency_hist(report),
    ]
    layers = report.layers
    if layers:
        colours = op_colours(layers)
        shown = [(op, c) for op, c in colours.items() if c != OTHER_COLOUR]
        if len(shown) < len(colours):
            shown.append(("other op types", OTHER_COLOUR))
        parts += [
            "<h2>Time per layer</h2>",
            '<div class="note">From the backend\'s profiler, averaged over the profiled runs; the profiler slows '
            "what it watches, so the layers add up to more than a timed run.</div>",
            legend(shown),
            _layer_bars(layers, colours),
            "<h2>Time per op type</h2>",
            _op_bars(layers, colours),
            "<h2>Layers</h2>",
            _layer_table(layers),
        ]
    else:
        parts.append(
            '<div class="note">No per-layer times: time with <code>--perf-debug</code> '
            "(<code>init_runtime(perf_debug=True)</code>) for the per-layer chart and the op-type ranking.</div>"
        )
    if report.per_shape:
        parts.append(_shape_table(report))
    return page(f"Performance: {title or 'model'}", "\n".join(parts))


def _event(name: str, cat: str, ts: float, dur: float, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "cat": cat,
        "ph": "X",
        "ts": round(ts, 3),
        "dur": round(max(dur, 0.0), 3),
        "pid": PID,
        "tid": tid,
        "args": args,
    }


def _meta(name: str, tid: int, value: str) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": PID, "tid": tid, "args": {"name": value}}


def chrome_trace(report: PerfReport, title: str = "") -> dict[str, Any]:
    """The Trace Event Format document for ``report`` (see the module's docstring for its layout)."""
    events = [
        _meta("process_name", 0, f"rkfarm eval_perf: {title or report.where or 'model'}"),
        _meta("thread_name", TID_TIMED, "timed runs"),
    ]
    clock = 0.0
    for k, dur in enumerate(report.run_times_us):
        events.append(_event(f"run {k + 1}", "run", clock, dur, TID_TIMED, {"time_us": dur}))
        clock += dur
    layers = report.layers
    if layers:
        profiled = report.profiled_run_times_us
        averaged = max(len(profiled), 1)
        events += [
            _meta("thread_name", TID_PROFILED, "profiled runs"),
            _meta("thread_name", TID_LAYERS, f"layers (mean of {averaged} profiled run(s))"),
        ]
        layer_sum = sum(layer.time_us for layer in layers)
        for k in range(averaged):
            start = clock
            if profiled:
                dur = profiled[k]
                events.append(
                    _event(f"profiled run {k + 1}", "profiled_run", start, dur, TID_PROFILED, {"time_us": dur})
                )
            else:
                dur = 0.0
            at = start
            for layer in layers:
                args = {
                    "id": layer.index + 1,
                    "op_type": layer.op_type,
                    "data_type": layer.data_type,
                    "target": layer.target,
                    "input_shapes": layer.input_shapes,
                    "output_shapes": layer.output_shapes,
                    "time_us": layer.time_us,
                    "averaged_over_runs": averaged,
                }
                events.append(_event(layer.name, f"layer,{layer.op_type}", at, layer.time_us, TID_LAYERS, args))
                at += max(layer.time_us, 0.0)
            clock = start + max(dur, layer_sum)
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "producer": "rkfarm eval_perf",
            "where": report.where,
            "median_us": report.stats.median_us,
            "runs": report.stats.runs,
            "note": "runs laid end to end from ts 0: the measurement records durations, not start times; layer "
            "times are the profiler's means over the profiled runs",
        },
    }


def _write(path: Path, text: str) -> Path:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise RkfarmError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def write_perf_html(report: PerfReport, path: Path, title: str = "") -> Path:
    return _write(path, render_perf_html(report, title))


def write_chrome_trace(report: PerfReport, path: Path, title: str = "") -> Path:
    return _write(path, json.dumps(chrome_trace(report, title), indent=1) + "\n")
