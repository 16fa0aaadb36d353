"""The pieces rkfarm's self-contained HTML reports share: inline SVG charts, the page style, table sorting.

Nothing here loads anything from outside the page (no CDN, no fonts, no images): a chart is inline SVG whose
points and bars carry a ``<title>`` tooltip and ``data-*`` attributes (what a test or a script reads back), the
sorting is a few lines of inline JavaScript. A chart scales with the page (``width:100%``) down to a minimum
width, below which its own box scrolls sideways, so nothing is clipped in a narrow window and a model with
hundreds of layers keeps a readable bar or point per layer.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PAD_L, PAD_R, PAD_T, PAD_B = 70, 20, 16, 46
MIN_SCALE = 0.72  # a chart is drawn at least this large (text 8 px): below, its box scrolls sideways
PX_PER_ITEM = 7  # the narrowest a layer's point or bar gets
MAX_X_LABELS = 24
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
OTHER_COLOUR = "#9e9e9e"
WORST_COLOUR = "#d62728"

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:20px 0 6px} .sub,.note{color:#666;margin-bottom:10px}
.note{font-size:13px} .chart{overflow-x:auto;max-width:100%}
.chart svg{display:block;box-sizing:border-box;background:#fafafa;border:1px solid #ddd}
.legend span{margin-right:16px;white-space:nowrap} .scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right} td.t,th.t{text-align:left}
table.sortable th{background:#f0f0f0;cursor:pointer;user-select:none} table.sortable th:hover{background:#e4e4e4}
tr.worst td{background:#fde2e2} tr.worst td.t{font-weight:600} code{font-size:12px}
.stats td:first-child{text-align:left;color:#555}
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.from(body.rows);
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
});
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def page(title: str, body: str) -> str:
    """A whole self-contained page: ``body`` (HTML) under ``title``, with the shared style and sorting."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n<h1>{esc(title)}</h1>\n{body}\n"
        f"<script>{SORT_SCRIPT}</script>\n</body></html>\n"
    )


def legend(items: Sequence[tuple[str, str]], marks: Sequence[tuple[str, str]] = ()) -> str:
    """Coloured squares for ``items`` (label, colour), then dots for ``marks``."""
    spans = [f'<span style="color:{c}">&#9632; {esc(t)}</span>' for t, c in items]
    spans += [f'<span style="color:{c}">&#9679; {esc(t)}</span>' for t, c in marks]
    return f'<div class="legend">{" ".join(spans)}</div>'


def nice_step(span: float, target: int) -> float:
    """A 1-2-5 step that cuts ``span`` into about ``target`` pieces."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(target, 1)
    base = 10.0 ** math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 5.0, 10.0):
        if raw <= mult * base:
            return mult * base
    return 10.0 * base


def int_step(count: int, labels: int = MAX_X_LABELS) -> int:
    """The 1-2-5 step for labelling ``count`` items with at most about ``labels`` labels."""
    return max(1, int(nice_step(float(count), labels)))


def fmt_us(value: float) -> str:
    """A time in µs, short: 950 µs, 12.3 ms, 1.20 s."""
    if value >= 1e6:
        return f"{value / 1e6:.3g} s"
    if value >= 1e3:
        return f"{value / 1e3:.3g} ms"
    return f"{value:.3g} µs"


@dataclass(frozen=True)
class Frame:
    """The geometry of one chart: its size in SVG units and the plotting area inside the paddings."""

    width: float
    height: float

    @property
    def left(self) -> float:
        return PAD_L

    @property
    def right(self) -> float:
        return self.width - PAD_R

    @property
    def top(self) -> float:
        return PAD_T

    @property
    def bottom(self) -> float:
        return self.height - PAD_B

    def open(self, label: str, css: str, min_px: float) -> str:
        return (
            f'<svg class="{css}" viewBox="0 0 {self.width:.0f} {self.height:.0f}" width="100%" '
            f'style="min-width:{min_px:.0f}px" preserveAspectRatio="xMinYMin meet" role="img" '
            f'aria-label="{esc(label)}">'
        )

    def axis_titles(self, x_title: str, y_title: str) -> str:
        mid = (self.top + self.bottom) / 2
        return (
            f'<text x="{(self.left + self.right) / 2:.1f}" y="{self.height - 6:.1f}" font-size="12" '
            f'text-anchor="middle">{esc(x_title)}</text>'
            f'<text x="14" y="{mid:.1f}" font-size="12" transform="rotate(-90 14 {mid:.1f})" '
            f'text-anchor="middle">{esc(y_title)}</text>'
        )

    def y_grid(self, ticks: Sequence[tuple[float, str]]) -> str:
        """Horizontal grid lines at the given SVG y positions, labelled on the left."""
        return "".join(
            f'<line x1="{self.left}" x2="{self.right:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text class="ytick" x="{self.left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">'
            f"{esc(text)}</text>"
            for y, text in ticks
        )

    def baseline(self) -> str:
        y = f"{self.bottom:.1f}"
        return f'<line x1="{self.left}" x2="{self.right:.1f}" y1="{y}" y2="{y}" stroke="#999"/>'

    def x_ticks(self, count: int, x_of: Callable[[int], float], number_of: Callable[[int], int]) -> str:
        """A tick mark per item when they fit (4 px each; only the labelled ones otherwise); the items whose
        number (``number_of(i)``: the layer's # or ID) is a multiple of a 1-2-5 step are labelled with it."""
        step = int_step(count)
        parts = [self.baseline()]
        dense = (self.right - self.left) / max(count, 1) < 4
        for i in range(count):
            number = number_of(i)
            long = number % step == 0
            if dense and not long:
                continue
            parts.append(
                f'<line class="xtick" x1="{x_of(i):.1f}" x2="{x_of(i):.1f}" y1="{self.bottom:.1f}" '
                f'y2="{self.bottom + (6 if long else 3):.1f}" stroke="#999"/>'
            )
            if long:
                parts.append(
                    f'<text class="xlabel" x="{x_of(i):.1f}" y="{self.bottom + 18:.1f}" font-size="11" '
                    f'text-anchor="middle">{number}</text>'
                )
        return "".join(parts)


def chart_width(items: int, base: float = 1000.0) -> float:
    """SVG width for ``items`` points or bars: ``base``, or wider so each gets at least PX_PER_ITEM."""
    return max(base, PAD_L + PAD_R + items * PX_PER_ITEM)


def min_px(width: float) -> float:
    """The narrowest a chart of ``width`` SVG units is drawn (px): its box scrolls below that."""
    return width * MIN_SCALE


def wrap(svg: str) -> str:
    return f'<div class="chart">{svg}</div>'
