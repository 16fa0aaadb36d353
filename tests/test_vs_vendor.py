"""benchmarks/vs_vendor.py runs: rkfarm alone on the classifier (no vendor toolkit needed, so CI runs it), and,
where the vendor's side environment exists, rkfarm beside the vendor and the vendor compiler with rkfarm's ranges.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rkfarm.vendor import MISSING, available

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_vendor.py"
SMALL = ["--models", "ppocr-cls", "--algorithms", "normal", "--cal-count", "8", "--eval-count", "6"]


def _run(tmp_path: Path, *extra: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "out.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *SMALL, "--json", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text()), done.stdout


def _plausible(side: dict[str, Any]) -> None:
    for s in ("A", "B"):
        assert 0.9 < side[s]["cosine"] <= 1.0 + 1e-9, side
        assert side[s]["min_cosine"] <= side[s]["cosine"]
        assert 0.0 <= side[s]["task"] <= 1.0


@pytest.mark.slow
def test_runs_without_the_vendor(tmp_path: Path) -> None:
    results, table = _run(tmp_path, "--no-vendor")
    (row,) = results["rows"]
    assert (row["model"], row["algorithm"], row["calibration"], row["evaluation"]) == ("ppocr-cls", "normal", 8, 6)
    assert row["rkfarm"]["build_s"] > 0
    _plausible(row["rkfarm"])
    assert "vendor" not in row and "bridge" not in row and results["vendor_toolkit"] is None
    assert "| PP-OCR cls 48x192 (8/6) | normal |" in table
    assert "held-out set B" in table


@pytest.mark.slow
@pytest.mark.skipif(not available(), reason=f"needs the vendor's RKNN-Toolkit2: {MISSING}")
def test_runs_beside_the_vendor(tmp_path: Path) -> None:
    results, table = _run(tmp_path)
    (row,) = results["rows"]
    assert results["vendor_toolkit"] == "2.5.0"
    for side in ("rkfarm", "vendor", "bridge"):
        assert "error" not in row[side], row[side]
        _plausible(row[side])
    assert row["vendor"]["build_s"] > 0
    assert row["bridge"]["cfg_rkfarm_ranges"] > 100  # the classifier's cfg: 143 int8 entries
    assert "rkfarm ranges" in table
