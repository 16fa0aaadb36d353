"""build / run / info / encrypt as a new user meets them (issue 16, items 2, 6, 7, 9, 11): wrong --input-size is
refused, `run` takes NCHW arrays and resizes images as calibration does, `info` describes source models, --json
has real types, encrypt never overwrites by accident, verbose=True tells the config and the load."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from test_cli_errors import one_line_failure, tiny_onnx

from rkfarm import RKNN
from rkfarm.cli import main

TINY = ["--input-size", "1,3,8,8"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rkfarm.cli", *args], capture_output=True, text=True, timeout=300)


def reference(model: Path, nchw: np.ndarray) -> np.ndarray:
    """The source model on ONNX Runtime: the independent answer."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"x": nchw.astype(np.float32)})[0]
    return out


@pytest.mark.parametrize(
    ("size", "says"),
    [
        ("1,3,8", "with the batch dim added"),  # rank 3 for a rank-4 input: read as [1,1,3,8]
        ("1,8,8,3", "NHWC order"),
        ("1,4,8,8", "dim 1 is 3 in the model, 4 given"),
    ],
)
def test_wrong_input_size_is_refused_and_nothing_written(tmp_path: Path, size: str, says: str) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    out_path = tmp_path / "bad.rkfm"
    out = cli("build", str(model), "--input-size", size, "-o", str(out_path))
    one_line_failure(out, "--input-size", says)
    assert not out_path.exists()


def test_static_dims_must_match_too(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "static.onnx", dynamic_hw=False)
    one_line_failure(cli("build", str(model), "--input-size", "1,3,16,16", "-o", str(tmp_path / "s.rkfm")),
                     "dim 2 is 8 in the model, 16 given")  # fmt: skip
    assert main(["build", str(model), "-o", str(tmp_path / "ok.rkfm")]) == 0  # no --input-size needed


def test_info_on_source_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    assert main(["info", str(model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["framework"] == "onnx" and info["opset"] == 17 and info["producer"] == "test"
    assert info["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 3, None, None],
                               "dim_names": ["batch", None, "h", "w"]}]  # fmt: skip
    assert info["outputs"][0]["name"] == "y"
    assert info["input_size"]["needed"] and info["input_size"]["example"] == "--input-size 1,3,H,W"
    assert main(["info", str(model)]) == 0
    text = capsys.readouterr().out
    assert "x: float32[batch,3,h,w]" in text and "dynamic: dim 0, 2, 3" in text and "--input-size 1,3,H,W" in text

    static = tiny_onnx(tmp_path / "static.onnx", dynamic_hw=False)
    assert main(["info", str(static), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_size"]["needed"] is False

    prototxt = tmp_path / "tiny.prototxt"
    prototxt.write_text(
        'name: "tiny"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 16 dim: 16 }\n'
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"\n'
        "  convolution_param { num_output: 4 kernel_size: 3 } }\n"
    )
    assert main(["info", str(prototxt), "--json"]) == 0
    caffe = json.loads(capsys.readouterr().out)
    assert caffe["framework"] == "caffe" and caffe["inputs"][0]["shape"] == [1, 3, 16, 16]
    assert caffe["outputs"][0]["shape"] == [1, 4, 14, 14]

    cfg = tmp_path / "tiny.cfg"
    cfg.write_text("[net]\nwidth=32\nheight=24\nchannels=3\n\n[convolutional]\nfilters=4\nsize=3\nstride=1\n"
                   "pad=1\nactivation=leaky\n")  # fmt: skip
    assert main(["info", str(cfg)]) == 0
    assert "float32[1,3,24,32]" in capsys.readouterr().out

    torchscript = tmp_path / "net.pt"
    torchscript.write_bytes(b"PK\x03\x04" + b"\0" * 60)
    assert main(["info", str(torchscript), "--json"]) == 0
    pt = json.loads(capsys.readouterr().out)
    assert pt["framework"] == "pytorch" and pt["input_size"]["needed"] and pt["inputs"] is None


def test_run_takes_nchw_arrays_and_resizes_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    pkg = tmp_path / "tiny.rkfm"
    assert main(["build", str(model), *TINY, "--float-dtype", "float32", "-o", str(pkg)]) == 0
    capsys.readouterr()
    rng = np.random.default_rng(1)
    nchw = rng.integers(0, 255, (1, 3, 8, 8)).astype(np.uint8)
    expected = reference(model, nchw)
    tol = 1e-4 * max(1.0, float(np.ptp(expected)))
    np.save(tmp_path / "nchw.npy", nchw)
    np.save(tmp_path / "nhwc.npy", nchw.transpose(0, 2, 3, 1))
    cases = [("nchw.npy",), ("nhwc.npy",), ("nchw.npy", "--data-format", "NCHW"), ("nhwc.npy", "--data-format", "nhwc")]
    for i, (name, *flags) in enumerate(cases):
        out_dir = tmp_path / f"out{i}"
        assert main(["run", str(pkg), str(tmp_path / name), "-o", str(out_dir), "--json", *flags]) == 0, name
        summary = json.loads(capsys.readouterr().out)["outputs"][0]
        got = np.load(summary["path"])
        assert np.abs(got - expected).max() <= tol, (name, flags)
        assert isinstance(summary["shape"][0], int)

    # an image of another size is resized as calibration resizes it (OpenCV bilinear) and the command says so
    import cv2

    small = rng.integers(0, 255, (4, 6, 3)).astype(np.uint8)
    Image.fromarray(small).save(tmp_path / "small.png")
    out = cli("run", str(pkg), str(tmp_path / "small.png"), "-o", str(tmp_path / "img"), "--json")
    assert out.returncode == 0, out.stderr
    assert "6x4 image resized to 8x8" in out.stderr
    resized = cv2.resize(small, (8, 8), interpolation=cv2.INTER_LINEAR)
    expected = reference(model, resized.transpose(2, 0, 1)[np.newaxis])
    got = np.load(json.loads(out.stdout)["outputs"][0]["path"])
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, float(np.ptp(expected)))


def test_data_format_is_case_insensitive_in_the_api(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    x = np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32)
    with RKNN(raise_errors=True) as rknn:
        rknn.config(float_dtype="float32")
        rknn.load_onnx(str(model), input_size_list=[[1, 3, 8, 8]])
        rknn.build(do_quantization=False)
        rknn.init_runtime()
        upper = rknn.inference([x], data_format="NCHW")
        assert upper is not None
        expected = reference(model, x)
        assert np.abs(upper[0] - expected).max() <= 1e-4 * max(1.0, float(np.ptp(expected)))


def test_json_has_real_types(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    dataset = tmp_path / "ds.txt"
    for i in range(2):
        np.save(tmp_path / f"s{i}.npy", np.random.default_rng(i).normal(size=(1, 3, 8, 8)).astype(np.float32))
    dataset.write_text("s0.npy\ns1.npy\n")
    pkg = tmp_path / "q.rkfm"
    args = ["build", str(model), *TINY, "--quantize", "--dataset", str(dataset), "--algorithm", "mmse"]
    assert main([*args, "-o", str(pkg), "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    for key in ("payload_size", "weight_bytes", "activation_bytes"):
        assert isinstance(built[key], int), key
    assert built["payload_size"] == len(RKNN_payload(pkg))
    assert built["build_options"]["quantized_algorithm"] == "mmse"  # not "'mmse'"
    assert main(["info", str(pkg), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert isinstance(info["header"]["payload_size"], int) and isinstance(info["size_bytes"], int)
    assert info["header"]["quantization"]["calibration_samples"] == 2


def RKNN_payload(path: Path) -> bytes:  # noqa: N802 - reads like the call it stands for
    from rkfarm_proto.package import read_package

    return read_package(path).payload


def test_encrypt_refuses_to_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RKFARM_FARM_KEY_FILE", str(tmp_path / "farm.key"))
    model = tiny_onnx(tmp_path / "tiny.onnx")
    pkg = tmp_path / "tiny.rkfm"
    assert main(["build", str(model), *TINY, "-o", str(pkg)]) == 0
    assert main(["keygen"]) == 0
    target = tmp_path / "tiny.crypt.rkfm"
    target.write_bytes(b"keep me")
    assert main(["encrypt", str(pkg)]) == 1
    assert target.read_bytes() == b"keep me"
    assert main(["encrypt", str(pkg), "--force"]) == 0
    assert target.read_bytes() != b"keep me"
    assert main(["encrypt", str(pkg), "-o", str(pkg), "--force"]) == 1  # never over its own input


def test_verbose_logs_config_and_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    with caplog.at_level(logging.INFO, logger="rkfarm"):
        rknn = RKNN(raise_errors=True)
        rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="RK3588")
        rknn.load_onnx(str(model), input_size_list=[[1, 3, 8, 8]])
    text = caplog.text
    assert "config: mean_values=[[127.5, 127.5, 127.5]]" in text and "target_platform='rk3588'" in text
    assert "loaded tiny.onnx (onnx" in text and "x [1, 3, 8, 8]" in text and "opset 17" in text


def test_json_schema_document_names_every_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/CLI-JSON.md lists what the commands print (a field added without a word there fails here)."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "CLI-JSON.md").read_text()
    model = tiny_onnx(tmp_path / "tiny.onnx")
    pkg = tmp_path / "tiny.rkfm"
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 3), np.float32))
    outputs = {}
    for name, args in (
        ("build", ["build", str(model), *TINY, "-o", str(pkg), "--json"]),
        ("info", ["info", str(model), "--json"]),
        ("run", ["run", str(pkg), str(tmp_path / "x.npy"), "-o", str(tmp_path / "o"), "--json"]),
        ("perf", ["perf", str(pkg), "--runs", "2", "--warmup", "0", "--json"]),
        ("mem", ["mem", str(pkg), "--json"]),
        ("doctor", ["doctor", "--no-agents", "--json"]),
    ):
        assert main(args) in (0, 1), name
        outputs[name] = json.loads(capsys.readouterr().out)

    def keys(value: object) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        if isinstance(value, list):
            return {k for v in value for k in keys(v)}
        return set()

    for name, value in outputs.items():
        for key in keys(value) - {"build_options"}:
            assert f"`{key}`" in doc or f"`{key}[]`" in doc, f"{name} --json field {key!r} is not in docs/CLI-JSON.md"
