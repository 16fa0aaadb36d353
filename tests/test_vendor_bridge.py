"""The vendor compiler as a bridge to the NPU (``rkfarm.vendor.bridge``): rkfarm's calibration compiled by the
vendor's RKNN-Toolkit2 into a real ``.rknn``, checked with the vendor's own ``load_rknn`` in its environment, and
read back by ``rkfarm info``. The refusals and the missing-environment message need no toolkit.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from quant_fixtures import write_dataset

from conftest import CLS_MEAN, CLS_SIZE, CLS_STD
from rkfarm import RKNN
from rkfarm.cli import main as cli_main
from rkfarm.errors import BuildError, NotSupportedError
from rkfarm.packages import vendor_rknn_metadata
from rkfarm.quant import table_from_qdq
from rkfarm.samples import text_lines
from rkfarm.vendor import MISSING, VendorEnvError, available, build_for, vendor_python
from rkfarm.vendor.env import child_env
from rkfarm_proto.package import read_package
from rkfarm_proto.v1 import package_pb2

needs_vendor = pytest.mark.skipif(not available(), reason=f"needs the vendor's RKNN-Toolkit2: {MISSING}")
LOAD_RKNN = """
import sys
from rknn.api import RKNN
r = RKNN(verbose=False)
code = r.load_rknn(sys.argv[1])
r.release()
print("LOAD_RKNN", code)
"""


def _cls(rknn: RKNN, cls_onnx: Path, algorithm: str = "normal") -> None:
    rknn.config(mean_values=CLS_MEAN, std_values=CLS_STD, target_platform="rk3588", quantized_algorithm=algorithm)
    rknn.load_onnx(str(cls_onnx), input_size_list=[CLS_SIZE])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("cal"), [line.image for line in text_lines(8, seed=1)])


@pytest.mark.slow
@needs_vendor
def test_bridge_makes_an_rknn_the_vendor_loads(
    cls_onnx: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with RKNN(raise_errors=True) as rknn:
        _cls(rknn, cls_onnx)
        rknn.build(do_quantization=True, dataset=str(dataset), compiler="vendor")
        rknn.export_rknn(tmp_path / "cls.rkfm")
    package = read_package(tmp_path / "cls.rkfm")
    header = package.header
    assert header.payload_kind == package_pb2.PAYLOAD_KIND_RKNN
    assert header.producer.startswith("RKNN-Toolkit2 2.5.0 (vendor compiler)")
    assert header.build_options["compiler"] == "vendor RKNN-Toolkit2 2.5.0"
    assert header.build_options["quantization_ranges"].endswith("(normal)")
    assert header.target_platform == "rk3588" and header.quantization.calibration_samples == 8
    rknn_file = tmp_path / "cls.rknn"
    rknn_file.write_bytes(package.payload)
    assert package.payload.startswith(b"RKNN")

    # the vendor's own loader, in its environment
    done = subprocess.run(
        [str(vendor_python()), "-c", LOAD_RKNN, str(rknn_file)], capture_output=True, text=True, env=child_env()
    )
    assert "LOAD_RKNN 0" in done.stdout, done.stdout[-1500:] + done.stderr[-1500:]

    # rkfarm info reads the toolkit version and the target platform, from the .rknn and from the package
    assert cli_main(["info", str(rknn_file), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)["rknn_metadata"]
    assert meta["toolkit_version"] == "2.5.0" and meta["target_platforms"] == ["rk3588"]
    assert [t["name"] for t in meta["inputs"]] == ["x"] and meta["inputs"][0]["shape"] == CLS_SIZE
    assert cli_main(["info", str(rknn_file)]) == 0
    text = capsys.readouterr().out
    assert "toolkit version:  2.5.0" in text and "target platform:  rk3588" in text
    assert cli_main(["info", str(tmp_path / "cls.rkfm")]) == 0
    text = capsys.readouterr().out
    assert "vendor .rknn:    RKNN-Toolkit2 2.5.0, for rk3588" in text and "compiler=vendor" in text


@pytest.mark.slow
@needs_vendor
def test_the_vendor_cfg_carries_rkfarms_ranges(cls_onnx: Path, dataset: Path, tmp_path: Path) -> None:
    with RKNN(raise_errors=True) as rknn:  # rkfarm's own build, the same calibration (deterministic)
        _cls(rknn, cls_onnx, "kl_divergence")
        rknn.build(do_quantization=True, dataset=str(dataset))
        assert rknn.package is not None
        ours = table_from_qdq(onnx.load_from_string(rknn.package.payload))
        loaded, cfg = rknn._loaded, rknn._config
    assert loaded is not None
    built = build_for("vendor", loaded, cfg, True, str(dataset), keep_dir=tmp_path)
    entries = yaml.safe_load((tmp_path / "model" / "model.quantization.cfg").read_text())["quantize_parameters"]
    compared = 0
    for name, params in ours.items():
        entry = entries.get(name)
        if entry is None or params.dtype != "int8" or params.per_channel or entry["dtype"] != "int8":
            continue
        np.testing.assert_allclose([entry["min"][0], entry["max"][0]], [params.min[0], params.max[0]], rtol=1e-6)
        compared += 1
    assert compared > 100 and len(built.replaced) >= compared
    # a convolution the toolkit fuses with its ReLU gets the ReLU output's range (the classifier's second conv)
    assert entries["batch_norm_1.tmp_2"]["min"] == entries["relu_0.tmp_0"]["min"] == [0.0]
    assert entries["batch_norm_1.tmp_2"]["max"] == entries["relu_0.tmp_0"]["max"]
    assert set(built.kept) >= {"x_int8"}  # the toolkit's input conversion keeps its own (exact) range


def test_missing_environment_is_one_clear_line(
    cls_onnx: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RKFARM_VENDOR_PYTHON", str(tmp_path / "no-python"))
    with RKNN(raise_errors=True) as rknn:
        _cls(rknn, cls_onnx)
        with pytest.raises(VendorEnvError) as err:
            rknn.build(do_quantization=False, compiler="vendor")
    assert str(err.value) == MISSING


def test_refusals(cls_onnx: Path, dataset: Path) -> None:
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=CLS_MEAN, std_values=CLS_STD)
        rknn.load_onnx(str(cls_onnx), input_size_list=[CLS_SIZE])
        with pytest.raises(BuildError, match="target_platform"):
            rknn.build(do_quantization=False, compiler="vendor")
        rknn.config(target_platform="rk3588")
        with pytest.raises(NotSupportedError, match="auto_hybrid"):
            rknn.build(do_quantization=True, dataset=str(dataset), auto_hybrid=True, compiler="vendor")
        with pytest.raises(NotSupportedError, match="rknn_batch_size"):
            rknn.build(do_quantization=True, dataset=str(dataset), rknn_batch_size=2, compiler="vendor")
        with pytest.raises(BuildError, match="compiler must be one of"):
            rknn.build(do_quantization=False, compiler="tvm")
        rknn.config(float_dtype="float32")
        with pytest.raises(NotSupportedError, match="float16"):
            rknn.build(do_quantization=False, compiler="vendor")


def test_metadata_of_a_file_laid_out_as_the_toolkit_writes_it() -> None:
    meta = {
        "version": "2.5.0",
        "target_platform": ["rk3576"],
        "norm_tensor": [{"tensor_id": 0, "url": "in", "size": [1, 3, 8, 8], "dtype": {"vx_type": "int8"}}],
        "graph": [{"left": "input", "left_tensor_id": 0, "right": "norm_tensor", "right_tensor_id": 0}],
    }
    model = b"\x00" * 40 + b"2.5.0(compiler version: 2.5.0 (abc@2026))\x00" + b"\x00" * 7
    text = json.dumps(meta).encode()
    data = b"RKNN\x00\x00\x00\x00" + struct.pack("<QQ", 6, len(model)) + b"\x00" * 40 + model
    data += struct.pack("<Q", len(text)) + text
    got = vendor_rknn_metadata(data)
    assert got is not None
    assert (got["toolkit_version"], got["target_platforms"]) == ("2.5.0", ["rk3576"])
    assert got["compiler_version"] == "2.5.0 (abc@2026)"
    assert got["inputs"] == [{"name": "in", "shape": [1, 3, 8, 8], "dtype": "int8"}] and got["outputs"] == []
    assert vendor_rknn_metadata(data[:-5]) is None  # truncated JSON
    assert vendor_rknn_metadata(b"ONNX" + data[4:]) is None
