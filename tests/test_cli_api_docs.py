"""docs/API.md is what tools/gen_api_docs.py writes from the current docstrings (like the protobuf stubs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_api_reference_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "API.md"
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_api_docs.py"), "--out", str(out)], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    text = out.read_text()
    for needed in ("### `RKNN.config(", "| 1 | `mean_values` | `None` |", "### `RKNN.load_onnx(", "### `RKNN.build(",
                   "### `RKNNLite.init_runtime(", "### `ModelLoadError(RkfarmError)`"):  # fmt: skip
        assert needed in text, needed
    assert "PerfReport.upper" not in text  # str's own methods are not rkfarm's API
    committed = (ROOT / "docs" / "API.md").read_text()
    assert committed == text, "docs/API.md is stale: run `python tools/gen_api_docs.py`"
