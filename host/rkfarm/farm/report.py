"""A sweep as a person reads it: a terminal table, JSON, CSV, and a self-contained HTML page.

The page needs no network (inline SVG and CSS, no script): per board, the latency distribution of its timed runs
(box from p10 to p90, median line, every run a dot, on one axis for all boards); the slowest layers compared
across boards (a table shaded by each layer's time relative to its fastest board); and the boards that failed,
with why.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from rkfarm.farm.results import BoardRun, SweepResult, layer_key

MiB = 1024 * 1024
TOP_LAYERS = 12


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f}"


def _tags(run: BoardRun) -> str:
    return ",".join(f"{k}={v}" if v else k for k, v in sorted(run.tags.items())) or "-"


def _status(run: BoardRun) -> str:
    if run.ok:
        return "ok" if len(run.attempts) < 2 else f"ok (for {run.attempts[0]}, which vanished)"
    return ("vanished: " if run.vanished else "failed: ") + run.error


def format_table(result: SweepResult) -> str:
    """The comparison for a terminal: one line per board, fastest first, then the failures and a summary."""
    header = ("BOARD", "PLATFORM", "TAGS", "MEDIAN ms", "P90 ms", "MIN ms", "MAX ms", "FPS", "MEM MiB", "OPEN s",
              "STATUS")  # fmt: skip
    ordered = sorted(result.boards, key=lambda r: (not r.ok, r.median_us or math.inf, r.agent_id))
    rows = [header]
    for run in ordered:
        mem = run.memory.get("total_memory")
        rows.append((
            run.agent_id, run.platform or "-", _tags(run), _ms(run.latency_us.get("median_us")),
            _ms(run.latency_us.get("p90_us")), _ms(run.latency_us.get("min_us")), _ms(run.latency_us.get("max_us")),
            f"{run.fps:.1f}" if run.ok else "-", f"{mem / MiB:.1f}" if mem is not None else "-",
            f"{run.open_s:.2f}" if run.ok else "-", _status(run)[:90],
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines += _layer_lines(result)
    ok = result.succeeded
    lines.append(
        f"{result.model}: {len(ok)} of {len(result.boards)} board(s) measured ({len(result.failed)} failed) in "
        f"{result.wall_s:.1f} s; {result.runs} runs after {result.warmup} warm-up each"
    )
    if len(ok) > 1:
        medians = [r.median_us for r in ok if r.median_us is not None]
        lines.append(f"median across boards {_ms(float(np.median(medians)))} ms, spread {_ms(min(medians))}–"
                     f"{_ms(max(medians))} ms")  # fmt: skip
    return "\n".join(lines)


def slowest_layers(result: SweepResult, top: int = TOP_LAYERS) -> tuple[list[str], dict[str, dict[str, float]]]:
    """The ``top`` layers with the highest time on any board, and per layer {board: time_us}."""
    table: dict[str, dict[str, float]] = {}
    for run in result.succeeded:
        for layer in run.layers:
            table.setdefault(layer_key(layer), {})[run.agent_id] = float(layer.get("time_us", 0.0))
    order = sorted(table, key=lambda k: -max(table[k].values()))[:top]
    return order, table


def _layer_lines(result: SweepResult) -> list[str]:
    order, table = slowest_layers(result, 8)
    if not order:
        return []
    boards = [r.agent_id for r in sorted(result.succeeded, key=lambda r: r.agent_id)][:6]
    lines = ["", f"slowest layers (us){'' if len(result.succeeded) <= 6 else ', first 6 boards'}:"]
    width = min(40, max(len(k) for k in order))
    lines.append("  ".join(["LAYER".ljust(width), *(b[:12].rjust(12) for b in boards)]))
    for key in order:
        cells = [f"{table[key][b]:.1f}" if b in table[key] else "-" for b in boards]
        lines.append("  ".join([key[:width].ljust(width), *(c.rjust(12) for c in cells)]))
    lines.append("")
    return lines


def to_json(result: SweepResult) -> str:
    return json.dumps(result.to_dict(), indent=2, default=str) + "\n"


CSV_FIELDS = ("agent_id", "address", "platform", "version", "tags", "ok", "vanished", "error", "attempts",
              "median_us", "p90_us", "p99_us", "min_us", "max_us", "mean_us", "std_us", "runs", "fps",
              "total_memory", "uploaded_bytes", "open_s", "perf_s", "elapsed_s")  # fmt: skip


def to_csv(result: SweepResult) -> str:
    """One row per board (``CSV_FIELDS``); latencies in microseconds, memory in bytes."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for run in result.boards:
        writer.writerow({
            "agent_id": run.agent_id, "address": run.address, "platform": run.platform, "version": run.version,
            "tags": _tags(run) if run.tags else "", "ok": int(run.ok), "vanished": int(run.vanished),
            "error": run.error, "attempts": " ".join(run.attempts),
            **{k: run.latency_us.get(k, "") for k in ("median_us", "p90_us", "p99_us", "min_us", "max_us",
                                                      "mean_us", "std_us", "runs")},
            "fps": f"{run.fps:.3f}" if run.ok else "", "total_memory": run.memory.get("total_memory", ""),
            "uploaded_bytes": run.uploaded_bytes, "open_s": f"{run.open_s:.4f}", "perf_s": f"{run.perf_s:.4f}",
            "elapsed_s": f"{run.elapsed_s:.4f}",
        })  # fmt: skip
    return out.getvalue()


# -- HTML ------------------------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left;white-space:nowrap}th{background:#f4f4f4}.bad{color:#b00}
.note{color:#666}td.status,th.status{text-align:left}
.scroll{overflow-x:auto}svg text{font:11px system-ui,sans-serif}
"""


def write_html(result: SweepResult, path: Path) -> Path:
    """Write the sweep as one self-contained HTML page; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result), encoding="utf-8")
    return path


def render_html(result: SweepResult) -> str:
    e = html.escape
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(result.started_unix))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>rkfarm sweep: {e(result.model)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Sweep of {e(result.model)}</h1>",
        f"<p class='note'>{when}; boards matching {e(' or '.join(result.selectors))}; {result.runs} timed runs "
        f"after {result.warmup} warm-up per board; {len(result.succeeded)} of {len(result.boards)} measured in "
        f"{result.wall_s:.1f} s. Model sha256 {e(result.model_sha256[:16])}…</p>",
        "<h2>Boards</h2>", _html_table(result),
        "<h2>Latency distribution</h2>", "<div class='scroll'>", _latency_svg(result), "</div>",
    ]  # fmt: skip
    order, table = slowest_layers(result)
    if order:
        parts += ["<h2>Slowest layers across boards</h2>", "<div class='scroll'>", _layer_table(result, order, table),
                  "</div>"]  # fmt: skip
    if result.failed:
        parts.append("<h2>Failed boards</h2><ul>")
        parts += [f"<li class='bad'><b>{e(r.agent_id)}</b>: {e(_status(r))}</li>" for r in result.failed]
        parts.append("</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_table(result: SweepResult) -> str:
    e = html.escape
    head = ["board", "platform", "tags", "median ms", "p90 ms", "p99 ms", "fps", "memory MiB", "open s"]
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "<th class='status'>status</th></tr>"]
    for run in sorted(result.boards, key=lambda r: (not r.ok, r.median_us or math.inf)):
        mem = run.memory.get("total_memory")
        rows.append(
            f"<tr><td>{e(run.agent_id)}</td><td>{e(run.platform or '-')}</td><td>{e(_tags(run))}</td>"
            f"<td>{_ms(run.latency_us.get('median_us'))}</td><td>{_ms(run.latency_us.get('p90_us'))}</td>"
            f"<td>{_ms(run.latency_us.get('p99_us'))}</td><td>{f'{run.fps:.1f}' if run.ok else '-'}</td>"
            f"<td>{f'{mem / MiB:.1f}' if mem is not None else '-'}</td>"
            f"<td>{f'{run.open_s:.2f}' if run.ok else '-'}</td>"
            f"<td class='status{'' if run.ok else ' bad'}'>{e(_status(run))}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _latency_svg(result: SweepResult) -> str:
    """One row per measured board: p10–p90 box, median line, whiskers to min/max, a dot per run."""
    runs = sorted((r for r in result.succeeded if r.run_times_us), key=lambda r: r.median_us or 0.0)
    if not runs:
        return "<p class='note'>no board was measured</p>"
    low = min(min(r.run_times_us) for r in runs) / 1000
    high = max(max(r.run_times_us) for r in runs) / 1000
    span = (high - low) or max(high, 1e-3)
    low, high = max(0.0, low - 0.03 * span), high + 0.03 * span
    left, width, row_h = 170, 760, 26
    height = 30 + row_h * len(runs)

    def x(ms: float) -> float:
        return left + (ms - low) / (high - low) * width

    e = html.escape
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{left + width + 50}' height='{height}' role='img' "
           f"aria-label='latency per board'>"]  # fmt: skip
    for i in range(6):  # the axis
        ms = low + (high - low) * i / 5
        out.append(f"<line x1='{x(ms):.1f}' x2='{x(ms):.1f}' y1='4' y2='{height - 18}' stroke='#eee'/>")
        out.append(f"<text x='{x(ms):.1f}' y='{height - 4}' text-anchor='middle'>{ms:.3g} ms</text>")
    for row, run in enumerate(runs):
        y = 10 + row * row_h
        mid = y + row_h / 2 - 2
        a = np.asarray(run.run_times_us) / 1000
        p10, med, p90 = (float(np.percentile(a, q)) for q in (10, 50, 90))
        out.append(f"<text x='{left - 8}' y='{mid + 4:.1f}' text-anchor='end'>{e(run.agent_id[:24])}</text>")
        out.append(f"<line x1='{x(float(a.min())):.1f}' x2='{x(float(a.max())):.1f}' y1='{mid:.1f}' y2='{mid:.1f}' "
                   "stroke='#999'/>")  # fmt: skip
        out.append(f"<rect x='{x(p10):.1f}' y='{y + 3}' width='{max(1.0, x(p90) - x(p10)):.1f}' height='{row_h - 10}' "
                   "fill='#cfe0f5' stroke='#4a7bb7'/>")  # fmt: skip
        out.append(f"<line x1='{x(med):.1f}' x2='{x(med):.1f}' y1='{y + 3}' y2='{y + row_h - 7}' stroke='#1b4f8f' "
                   "stroke-width='2'><title>median {med:.3f} ms</title></line>")  # fmt: skip
        for value in a[:: max(1, a.size // 200)]:
            out.append(f"<circle cx='{x(float(value)):.1f}' cy='{mid:.1f}' r='1.6' fill='#d0602a' opacity='.6'/>")
    out.append("</svg>")
    return "".join(out)


def _layer_table(result: SweepResult, order: list[str], table: dict[str, dict[str, float]]) -> str:
    e = html.escape
    boards = sorted(r.agent_id for r in result.succeeded if r.layers)
    head = "".join(f"<th>{e(b)}</th>" for b in boards)
    rows = [f"<table><tr><th>layer</th>{head}<th>slowest / fastest</th></tr>"]
    for key in order:
        times = table[key]
        fastest = min(times.values()) or 1e-9
        cells = []
        for board in boards:
            if board not in times:
                cells.append("<td>-</td>")
                continue
            ratio = times[board] / fastest
            shade = min(1.0, (ratio - 1.0) / 1.0)  # white at the fastest, red at twice as slow or more
            color = f"rgb(255,{int(255 - 120 * shade)},{int(255 - 120 * shade)})"
            cells.append(f"<td style='background:{color}'>{times[board]:.1f}</td>")
        spread = max(times.values()) / fastest
        rows.append(f"<tr><td>{e(key)}</td>{''.join(cells)}<td>{spread:.2f}×</td></tr>")
    rows.append("</table><p class='note'>µs per layer; shading: time relative to the fastest board.</p>")
    return "\n".join(rows)


def load_json(path: Path) -> dict[str, Any]:
    """A sweep written with ``--json`` (for tools that compare two sweeps)."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


__all__ = ["CSV_FIELDS", "format_table", "render_html", "slowest_layers", "to_csv", "to_json", "write_html"]
