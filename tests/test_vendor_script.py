"""A script written for the vendor toolkit runs with only its import line changed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"


def test_vendor_script_runs_after_changing_the_import(cls_onnx: Path, tmp_path: Path) -> None:
    source = (DATA / "vendor_script.py").read_text()
    assert "from rknn.api import RKNN" in source
    ported = tmp_path / "ported.py"
    ported.write_text(source.replace("from rknn.api import RKNN", "from rkfarm import RKNN"))
    out = tmp_path / "model.rknn"
    proc = subprocess.run(
        [sys.executable, str(ported), str(cls_onnx), str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("done") == 6
    assert "outputs (1, 2)" in proc.stdout
    total = float(proc.stdout.split("outputs (1, 2)")[1].split()[0])
    assert abs(total - 1.0) < 1e-3  # softmax probabilities
    assert out.read_bytes().startswith(b"\x89RKF")
