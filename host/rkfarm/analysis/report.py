"""``report.html``: the analysis as one self-contained page — a per-layer plot and a sortable table.

No external resources (no CDN, no fonts, no images): the plot is inline SVG with a tooltip per point, the
sorting a few lines of inline JavaScript, so the file opens offline and can be attached to a ticket. The
worst layers (lowest single cosine: the layers that add the most error by themselves) are marked in the plot
and highlighted in the table.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from rkfarm.analysis.result import AnalysisResult, LayerError
from rkfarm.errors import RkfarmError

WORST_MARKED = 5
PLOT_W, PLOT_H, PAD_L, PAD_R, PAD_T, PAD_B = 1000, 300, 60, 20, 20, 40
SERIES = (("entire", "entire_cos", "#1f77b4"), ("single", "single_cos", "#ff7f0e"))

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} .sub{color:#666;margin-bottom:16px}
svg{background:#fafafa;border:1px solid #ddd} .legend span{margin-right:16px}
table{border-collapse:collapse;margin-top:16px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right} td.t,th.t{text-align:left}
th{background:#f0f0f0;cursor:pointer;user-select:none} th:hover{background:#e4e4e4}
tr.worst td{background:#fde2e2} tr.worst td.t{font-weight:600} code{font-size:12px}
"""

_SCRIPT = """
document.querySelectorAll('th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var body = document.querySelector('tbody'), rows = Array.from(body.rows);
    var asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
      return asc ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
"""


def _axis_floor(values: list[float]) -> float:
    """A round lower bound for the cosine axis: the lowest value, rounded down to a power-of-ten step."""
    low = min([*values, 0.999])
    gap = max(1.0 - low, 1e-6)
    step = 10.0 ** math.floor(math.log10(gap))
    return max(-1.0, float(math.floor(low / step)) * step)


def _plot(result: AnalysisResult, worst: set[int]) -> str:
    layers = result.layers
    n = max(len(layers) - 1, 1)
    values = [getattr(e, attr) for e in layers for _, attr, _ in SERIES]
    floor = _axis_floor(values)
    inner_w, inner_h = PLOT_W - PAD_L - PAD_R, PLOT_H - PAD_T - PAD_B

    def x(i: int) -> float:
        return PAD_L + inner_w * i / n

    def y(v: float) -> float:
        return PAD_T + inner_h * (1.0 - (v - floor) / (1.0 - floor))

    parts = [f'<svg width="{PLOT_W}" height="{PLOT_H}" viewBox="0 0 {PLOT_W} {PLOT_H}" role="img">']
    for k in range(5):
        v = floor + (1.0 - floor) * k / 4
        parts.append(
            f'<line x1="{PAD_L}" x2="{PLOT_W - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/>'
            f'<text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{v:.6g}</text>'
        )
    parts.append(
        f'<text x="{PLOT_W / 2}" y="{PLOT_H - 8}" font-size="12" text-anchor="middle">layer (graph order)</text>'
        f'<text x="14" y="{PLOT_H / 2}" font-size="12" transform="rotate(-90 14 {PLOT_H / 2})" '
        'text-anchor="middle">cosine vs golden</text>'
    )
    for label, attr, colour in SERIES:
        points = " ".join(f"{x(e.index):.1f},{y(getattr(e, attr)):.1f}" for e in layers)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}">'
            f"<title>{label}</title></polyline>"
        )
        for e in layers:
            tip = html.escape(f"#{e.index} [{e.op}] {e.name}: entire {e.entire_cos:.6f}, single {e.single_cos:.6f}")
            bad = e.index in worst and attr == "single_cos"
            radius, fill = (5, "#d62728") if bad else (2.2, colour)
            parts.append(
                f'<circle cx="{x(e.index):.1f}" cy="{y(getattr(e, attr)):.1f}" r="{radius}" fill="{fill}">'
                f"<title>{tip}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _cell(value: float | None, digits: str) -> str:
    if value is None:
        return '<td data-v="">-</td>'
    return f'<td data-v="{value!r}">{value:{digits}}</td>'


def _row(e: LayerError, runtime: bool, worst: set[int]) -> str:
    cells = [
        f'<td data-v="{e.index}">{e.index}</td>',
        f'<td class="t" data-v="{html.escape(e.op)}">{html.escape(e.op)}</td>',
        f'<td class="t" data-v="{html.escape(e.name)}"><code>{html.escape(e.name)}</code></td>',
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
    headers = ["#", "layer", "tensor", "entire cos", "entire euc", "single cos", "single euc"]
    if runtime:
        headers += ["runtime cos", "runtime euc", "runtime vs sim cos", "runtime vs sim euc"]
    head = "".join(f'<th class="{"t" if h in ("layer", "tensor") else ""}">{h}</th>' for h in headers)
    rows = "\n".join(_row(e, runtime, worst) for e in result.layers)
    listed = ", ".join(f"<code>{html.escape(e.name)}</code> ({e.single_cos:.4f})" for e in worst_layers)
    where = f"; runtime: {html.escape(result.runtime or '')}" if runtime else ""
    title = f"Accuracy analysis: {html.escape(result.model_name or 'model')}"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body>\n<h1>{title}</h1>\n"
        f'<div class="sub">{len(result.layers)} layers, {result.samples} sample(s){where}. '
        "entire: the quantized model run end to end against the float model; single: each layer alone, fed the "
        "float model's values. Click a column header to sort.</div>\n"
        f"<p>Worst layers (lowest single cosine): {listed}</p>\n"
        '<div class="legend">'
        + "".join(f'<span style="color:{c}">&#9632; {label}</span>' for label, _, c in SERIES)
        + '<span style="color:#d62728">&#9679; worst</span></div>\n'
        f"{_plot(result, worst)}\n<table><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table>\n"
        f"<script>{_SCRIPT}</script>\n</body></html>\n"
    )


def write_report(result: AnalysisResult, path: Path) -> Path:
    try:
        path.write_text(render_report(result), encoding="utf-8")
    except OSError as exc:
        raise RkfarmError(f"cannot write {path}: {exc}") from None
    return path
