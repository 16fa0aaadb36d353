"""The rkfarm command line: build, info, run; --help, --json, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rkfarm.cli import main
from rkfarm.samples import text_lines


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rkfarm.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_teaches() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    assert "examples:" in out.stdout and "rkfarm build" in out.stdout
    for command in ("build", "run", "info"):
        sub = run_cli(command, "--help")
        assert sub.returncode == 0 and "usage: rkfarm " + command in sub.stdout


def test_build_info_run(cls_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pkg = tmp_path / "cls.rkfm"
    mean = std = "127.5,127.5,127.5"
    rc = main(["build", str(cls_onnx), "-o", str(pkg), "--input-size", "1,3,48,192",
               "--mean", mean, "--std", std, "--target", "rk3588", "--json"])  # fmt: skip
    assert rc == 0
    built = json.loads(capsys.readouterr().out)
    assert built["path"] == str(pkg) and built["target_platform"] == "rk3588"

    assert main(["info", str(pkg), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "rkfm"
    assert info["header"]["inputs"][0]["shape"] == [1, 3, 48, 192]
    assert info["header"]["inputs"][0]["mean_values"] == [127.5, 127.5, 127.5]
    assert main(["info", str(pkg)]) == 0
    assert "float16" in capsys.readouterr().out

    lines = text_lines(2, seed=3)
    image = tmp_path / "line.png"
    Image.fromarray(lines[1].image).save(image)
    array = tmp_path / "line.npy"
    np.save(array, lines[0].image[np.newaxis])
    for source, label in ((image, lines[1].label), (array, lines[0].label)):
        outdir = tmp_path / f"out-{source.suffix[1:]}"
        assert main(["run", str(pkg), str(source), "-o", str(outdir), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)["outputs"][0]
        saved = np.load(summary["path"])
        assert saved.shape == (1, 2)
        assert summary["argmax"] == int(saved.argmax()) == label


def test_errors_are_one_line_and_nonzero(tmp_path: Path, cls_onnx: Path) -> None:
    missing = run_cli("info", str(tmp_path / "absent.rkfm"))
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "no such file" in missing.stderr
    dyn = run_cli("build", str(cls_onnx), "-o", str(tmp_path / "x.rkfm"))
    assert dyn.returncode == 1 and "--input-size" in dyn.stderr and "input_size_list" not in dyn.stderr
    usage = run_cli("build")
    assert usage.returncode == 2


def test_info_recognises_foreign_files(tmp_path: Path, cls_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vendor = tmp_path / "yolo.rknn"
    vendor.write_bytes(b"RKNN\0\0\0\0" + (6).to_bytes(8, "little") + b"\0" * 100)
    assert main(["info", str(vendor), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "rknn" and info["rknn_format_version"] == 6 and "librknnrt" in info["note"]
    assert main(["info", str(cls_onnx)]) == 0
    assert "rkfarm build" in capsys.readouterr().out
