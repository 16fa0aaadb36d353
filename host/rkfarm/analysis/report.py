"""``report.html``: the analysis as one self-contained page — two per-layer charts and a sortable table.

No external resources (no CDN, no fonts, no images): the charts are inline SVG with a tooltip per point, the
sorting a few lines of inline JavaScript, so the file opens offline and can be attached to a ticket.

* The cosine chart: entire, single and, when the model also ran on a board, the board's (runtime) cosine
  against golden, per layer in graph order, with a tick per layer and labels every few layers.
* The ``log10(1 − cosine)`` chart of the same series: cosines of a healthy int8 model all sit within 1e-3 of 1,
  a flat line on the first chart, while one decade on this axis is a tenfold larger error, so the layers that
  lose the most stand apart. A value of exactly 1 (an exact layer) has no logarithm: it is drawn on the axis
  floor as a hollow point and its tooltip says so.

The worst layers (lowest single cosine: the layers that add the most error by themselves) are marked red in
both charts and highlighted in the table. Points carry ``class="pt"`` and ``data-series``/``data-index``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rkfarm.analysis.result import AnalysisResult, LayerError
from rkfarm.errors import RkfarmError
from rkfarm.html_charts import (
    WORST_COLOUR,
    Frame,
    chart_width,
    esc,
    legend,
    min_px,
    nice_step,
    page,
    wrap,
)

WORST_MARKED = 5
PLOT_H = 300
LOG_FLOOR = 1e-12  # 1 - cos below this (float rounding) is drawn on the floor


@dataclass(frozen=True)
class Series:
    label: str  # also the points' data-series
    attr: str
    colour: str
    dash: str = ""  # stroke-dasharray: the board's line is dashed, so the entire line under it still shows


ENTIRE = Series("entire", "entire_cos", "#1f77b4")
SINGLE = Series("single", "single_cos", "#ff7f0e")
BOARD = Series("board", "runtime_cos", "#2ca02c", "5 3")


def _series(result: AnalysisResult) -> list[Series]:
    has_board = result.runtime is not None and any(e.runtime_cos is not None for e in result.layers)
    return [ENTIRE, SINGLE, BOARD] if has_board else [ENTIRE, SINGLE]


def _value(e: LayerError, s: Series) -> float | None:
    v = getattr(e, s.attr)
    return None if v is None or not math.isfinite(v) else float(v)


def _cos_floor(values: list[float]) -> float:
    """A round lower bound for the cosine axis: the lowest value, rounded down to a power-of-ten step."""
    low = min(values, default=1.0)
    gap = max(1.0 - low, 1e-6)
    step = 10.0 ** math.floor(math.log10(gap))
    return max(-1.0, float(math.floor(low / step)) * step)


def _tip(e: LayerError, series: list[Series]) -> str:
    parts = [f"#{e.index} [{e.op}] {e.name}"]
    for s in series:
        v = _value(e, s)
        parts.append(f"{s.label} cos {v:.6f} (1-cos {1.0 - v:.2e})" if v is not None else f"{s.label} -")
    if e.runtime_sim_cos is not None:
        parts.append(f"board vs simulator cos {e.runtime_sim_cos:.6f}")
    return "; ".join(parts)


def _chart(
    result: AnalysisResult,
    series: list[Series],
    worst: set[int],
    css: str,
    y_title: str,
    transform: Callable[[float], tuple[float, bool]],
    y_range: tuple[float, float],
    y_ticks: list[tuple[float, str]],
) -> str:
    """One per-layer line chart. ``transform(cos)`` gives the plotted value and whether it sits on the floor."""
    layers = result.layers
    frame = Frame(chart_width(len(layers)), PLOT_H)
    lo, hi = y_range
    n = max(len(layers) - 1, 1)
    pos = {e.index: k for k, e in enumerate(layers)}

    def x(k: int) -> float:
        return frame.left + (frame.right - frame.left) * (k / n if len(layers) > 1 else 0.5)

    def y(v: float) -> float:
        return frame.top + (frame.bottom - frame.top) * (1.0 - (v - lo) / (hi - lo))

    parts = [frame.open(y_title, f"accuracy {css}", min_px(frame.width))]
    parts.append(frame.y_grid([(y(v), text) for v, text in y_ticks]))
    parts.append(frame.x_ticks(len(layers), x, lambda k: layers[k].index))
    parts.append(frame.axis_titles("layer (graph order, the # column)", y_title))
    tips = {e.index: esc(_tip(e, series)) for e in layers}
    for s in series:
        points = []
        for e in layers:
            v = _value(e, s)
            if v is not None:
                points.append((e, *transform(v)))
        if not points:
            continue
        line = " ".join(f"{x(pos[e.index]):.1f},{y(v):.1f}" for e, v, _ in points)
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        parts.append(f'<polyline fill="none" stroke="{s.colour}" stroke-width="1.5"{dash} points="{line}"/>')
        for e, v, floored in points:
            bad = s is SINGLE and e.index in worst
            radius, colour = (5.0, WORST_COLOUR) if bad else (2.4, s.colour)
            fill = "#fff" if floored else colour
            parts.append(
                f'<circle class="pt" data-series="{s.label}" data-index="{e.index}" cx="{x(pos[e.index]):.1f}" '
                f'cy="{y(v):.1f}" r="{radius}" fill="{fill}" stroke="{colour}"><title>{tips[e.index]}</title></circle>'
            )
    parts.append("</svg>")
    return wrap("".join(parts))


def _cos_chart(result: AnalysisResult, series: list[Series], worst: set[int]) -> str:
    values = [v for e in result.layers for s in series if (v := _value(e, s)) is not None]
    floor = _cos_floor(values)
    ticks = [(floor + (1.0 - floor) * k / 4, f"{floor + (1.0 - floor) * k / 4:.6g}") for k in range(5)]
    return _chart(result, series, worst, "cos", "cosine vs golden", lambda v: (v, False), (floor, 1.0), ticks)


def _log_chart(result: AnalysisResult, series: list[Series], worst: set[int]) -> str:
    gaps = [1.0 - v for e in result.layers for s in series if (v := _value(e, s)) is not None]
    positive = [g for g in gaps if g > LOG_FLOOR]
    low = math.floor(math.log10(min(positive))) - 1 if positive else -7
    high = math.ceil(math.log10(max(positive))) if positive else 0
    low, high = max(low, round(math.log10(LOG_FLOOR))), max(high, low + 1)
    step = max(1, int(nice_step(float(high - low), 6)))

    def transform(cos: float) -> tuple[float, bool]:
        gap = 1.0 - cos
        if gap <= 10.0**low:
            return float(low), True
        return math.log10(gap), False

    ticks = [(float(d), f"1e{d}") for d in range(low, high + 1, step)]
    return _chart(
        result,
        series,
        worst,
        "logerr",
        "1 - cosine (log scale, higher is worse)",
        transform,
        (float(low), float(high)),
        ticks,
    )


def _cell(value: float | None, digits: str) -> str:
    if value is None:
        return '<td data-v="">-</td>'
    return f'<td data-v="{value!r}">{value:{digits}}</td>'


def _row(e: LayerError, runtime: bool, worst: set[int]) -> str:
    cells = [
        f'<td data-v="{e.index}">{e.index}</td>',
        f'<td class="t" data-v="{esc(e.op)}">{esc(e.op)}</td>',
        f'<td class="t" data-v="{esc(e.name)}"><code>{esc(e.name)}</code></td>',
        _cell(e.entire_cos, ".6f"),
        _cell(e.entire_euc, ".5g"),
        _cell(e.single_cos, ".6f"),
        _cell(e.single_euc, ".5g"),
    ]
    if runtime:
        cells += [_cell(e.runtime_cos, ".6f"), _cell(e.runtime_euc, ".5g")]
        cells += [_cell(e.runtime_sim_cos, ".6f"), _cell(e.runtime_sim_euc, ".5g")]
    css = ' class="worst"' if e.index in worst else ""
    return f"<tr{css}>{''.join(cells)}</tr>"


def render_report(result: AnalysisResult) -> str:
    runtime = result.runtime is not None
    worst_layers = result.worst(WORST_MARKED)
    worst = {e.index for e in worst_layers}
    series = _series(result)
    headers = ["#", "layer", "tensor", "entire cos", "entire euc", "single cos", "single euc"]
    if runtime:
        headers += ["runtime cos", "runtime euc", "runtime vs sim cos", "runtime vs sim euc"]
    head = "".join(f'<th class="{"t" if h in ("layer", "tensor") else ""}">{h}</th>' for h in headers)
    rows = "\n".join(_row(e, runtime, worst) for e in result.layers)
    listed = ", ".join(f"<code>{esc(e.name)}</code> ({e.single_cos:.6f})" for e in worst_layers)
    where = f"; board (runtime): {esc(result.runtime or '')}" if runtime else ""
    names = [(s.label if s is not BOARD else "board (runtime)", s.colour) for s in series]
    keys = legend(names, [("worst (single)", WORST_COLOUR)])
    body = (
        f'<div class="sub">{len(result.layers)} layers, {result.samples} sample(s){where}. '
        "entire: the quantized model run end to end against the float model; single: each layer alone, fed the "
        "float model's values"
        + ("; board: the quantized model on the board, against the float model" if BOARD in series else "")
        + ". Hover a point for its layer; click a column header to sort.</div>\n"
        f"<p>Worst layers (lowest single cosine): {listed}</p>\n{keys}\n"
        f"<h2>Cosine vs golden</h2>\n{_cos_chart(result, series, worst)}\n"
        "<h2>1 &minus; cosine, log scale</h2>\n"
        '<div class="note">The same cosines as a tenfold-per-step error scale: the higher a point, the more the '
        "layer loses. Hollow points on the floor are layers with no measurable error (cosine 1).</div>\n"
        f"{_log_chart(result, series, worst)}\n"
        f'<h2>Layers</h2>\n<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>\n'
        f"{rows}\n</tbody></table></div>"
    )
    return page(f"Accuracy analysis: {result.model_name or 'model'}", body)


def write_report(result: AnalysisResult, path: Path) -> Path:
    try:
        path.write_text(render_report(result), encoding="utf-8")
    except OSError as exc:
        raise RkfarmError(f"cannot write {path}: {exc}") from None
    return path
