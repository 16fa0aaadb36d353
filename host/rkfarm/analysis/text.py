"""``error_analysis.txt``: the per-layer table in the vendor's layout, and a parser that reads it back.

Three ``#`` lines explain the columns, then a header and one row per analysed tensor in graph order::

    [Conv+Relu] relu_0.tmp_0      0.999447 | 4.9122     0.999937 | 1.6818

``[op types of the layer] tensor name``, then ``cos | euc`` pairs: entire and single, and with a board the
runtime's against golden and against the simulator. Cosines have six decimals, distances six significant
digits, so parsing gives the measured numbers back to that precision.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from rkfarm.analysis.result import AnalysisResult, LayerError
from rkfarm.errors import RkfarmError

_PAIR_TEXT = r"-?\d+\.\d+ \| \S+"
_ROW = re.compile(rf"^\[(?P<op>[^\]]*)\] (?P<name>.+?)\s+(?P<pairs>{_PAIR_TEXT}(?:\s+{_PAIR_TEXT})*)\s*$")
_PAIR = re.compile(r"(-?\d+\.\d+) \| (\S+)")
_GAP = "   "
PAIR_WIDTH = 22  # "0.999917 | 3.96226    "


def _pair(cos: float | None, euc: float | None) -> str:
    if cos is None or euc is None:
        return " " * PAIR_WIDTH
    return f"{cos:.6f} | {euc:<{PAIR_WIDTH - 11}.6g}"


def format_error_analysis(result: AnalysisResult) -> str:
    runtime = result.runtime is not None
    lines = [
        "# entire: the quantized model (simulator) run end to end, each layer's output against the float model's "
        "(golden); errors accumulate from layer to layer",
        "# single: each layer alone, with its int8 weights and its output quantization, fed the golden values of "
        "its inputs: the error that layer adds by itself",
        (
            f"# runtime: the same quantized model on {result.runtime}, against golden (entire) and against the "
            "simulator (vs_sim); cos: cosine similarity (1: identical), euc: euclidean distance (0: identical)"
            if runtime
            else "# cos: cosine similarity of the flattened tensors (1: identical); euc: euclidean distance "
            f"(0: identical); layers in graph order; {result.samples} sample(s)"
        ),
        "",
    ]
    width = max([len(f"[{e.op}] {e.name}") for e in result.layers] + [24]) + 2
    pair_width = PAIR_WIDTH + len(_GAP)
    groups = ["simulator".ljust(2 * pair_width), "runtime" if runtime else ""]
    columns = ["entire", "single", *(["entire", "vs_sim"] if runtime else [])]
    lines.append(("layer".ljust(width) + "".join(groups)).rstrip())
    lines.append((" " * width + "".join(c.ljust(pair_width) for c in columns)).rstrip())
    lines.append((" " * width + ("cos        euc".ljust(pair_width)) * len(columns)).rstrip())
    lines.append("-" * (width + pair_width * len(columns)))
    for e in result.layers:
        pairs = [_pair(e.entire_cos, e.entire_euc), _pair(e.single_cos, e.single_euc)]
        if runtime:
            pairs += [_pair(e.runtime_cos, e.runtime_euc), _pair(e.runtime_sim_cos, e.runtime_sim_euc)]
        lines.append((f"[{e.op}] {e.name}".ljust(width) + _GAP.join(pairs)).rstrip())
    return "\n".join(lines) + "\n"


def write_error_analysis(result: AnalysisResult, path: Path) -> Path:
    try:
        path.write_text(format_error_analysis(result), encoding="utf-8")
    except OSError as exc:
        raise RkfarmError(f"cannot write {path}: {exc}") from None
    return path


def parse_error_analysis(text: str) -> list[LayerError]:
    """The rows of an ``error_analysis.txt`` as LayerError records (index = row order)."""
    layers: list[LayerError] = []
    for line in text.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        numbers = [float(v) for pair in _PAIR.findall(match["pairs"]) for v in pair]
        if len(numbers) not in (4, 8) or not all(math.isfinite(v) for v in numbers):
            raise RkfarmError(f"error_analysis.txt: cannot read row {line!r}")
        runtime: list[float | None] = [*numbers[4:]] if len(numbers) == 8 else [None] * 4
        layers.append(LayerError(len(layers), match["op"], match["name"], *numbers[:4], *runtime))
    return layers
