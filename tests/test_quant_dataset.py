"""The vendor's dataset.txt: parsing, preprocessing like inference, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from conftest import CLS_MEAN, CLS_SIZE, CLS_STD
from rkfarm import RKNN
from rkfarm.build import input_specs
from rkfarm.config import RknnConfig
from rkfarm.errors import DatasetError
from rkfarm.frontends.onnx import load_onnx
from rkfarm.quant import table_from_qdq
from rkfarm.quant.dataset import CalibrationDataset
from rkfarm.samples import text_lines
from rkfarm_proto.v1 import package_pb2


@pytest.fixture(scope="module")
def specs(cls_onnx: Path) -> list[package_pb2.InputSpec]:
    cfg = RknnConfig.from_kwargs(mean_values=CLS_MEAN, std_values=CLS_STD, quant_img_RGB2BGR=True)
    return input_specs(load_onnx(cls_onnx, None, [CLS_SIZE], None, None).model, cfg)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    lines = text_lines(3, seed=4)
    (tmp_path / "imgs").mkdir()
    for i, line in enumerate(lines):
        Image.fromarray(line.image).save(tmp_path / "imgs" / f"{i}.png")
    np.save(tmp_path / "nhwc.npy", lines[0].image[np.newaxis])
    np.save(tmp_path / "nchw.npy", lines[0].image.transpose(2, 0, 1)[np.newaxis].astype(np.float32))
    Image.fromarray(lines[0].image).resize((100, 48)).save(tmp_path / "small.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "fake.png").write_bytes(b"GIF? no, plain bytes")
    return tmp_path


def dataset(folder: Path, text: str) -> Path:
    path = folder / "dataset.txt"
    path.write_text(text)
    return path


def test_samples_are_preprocessed_like_inference(folder: Path, specs: list[package_pb2.InputSpec]) -> None:
    path = dataset(folder, "# calibration set\nimgs/0.png\n\n  imgs/1.png  \nnhwc.npy\nnchw.npy\n")
    data = CalibrationDataset(path, specs)
    assert [line.number for line in data.lines] == [2, 4, 5, 6]
    samples = list(data)
    image = text_lines(3, seed=4)[0].image.astype(np.float32)
    # images: RGB -> BGR (quant_img_RGB2BGR), NHWC -> NCHW, (x - 127.5) / 127.5
    bgr = ((image[..., ::-1] - 127.5) / 127.5).transpose(2, 0, 1)[np.newaxis]
    np.testing.assert_allclose(samples[0][0], bgr, atol=1e-6)
    assert samples[0][0].shape == (1, 3, 48, 192) and samples[0][0].dtype == np.float32
    # .npy arrays are not swapped (RGB2BGR is for images only), NHWC or NCHW
    rgb = ((image - 127.5) / 127.5).transpose(2, 0, 1)[np.newaxis]
    np.testing.assert_allclose(samples[2][0], rgb, atol=1e-6)
    np.testing.assert_allclose(samples[3][0], rgb, atol=1e-6)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("imgs/0.png\nimgs/missing.png\n", r"line 2: .*missing\.png: no such file"),
        ("imgs/0.png\n\nsmall.jpg\n", r"line 3: .*small\.jpg: image is 100x48 but input 'x' takes 192x48"),
        ("notes.txt\n", r"line 1: .*notes\.txt: not a calibration file"),
        ("imgs/0.png\nfake.png\n", r"line 2: .*fake\.png: not an image Pillow can decode"),
        ("imgs/0.png\nbroken.png\n", r"line 2: .*broken\.png: cannot read the image"),
        ("imgs/0.png imgs/1.png\n", r"line 1: 2 file\(s\) for a model with 1 input\(s\) \(x\)"),
        ("\n# nothing\n\n", r"has no samples"),
    ],
)
def test_bad_datasets_name_the_line(folder: Path, specs: list[package_pb2.InputSpec], text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        CalibrationDataset(dataset(folder, text), specs)


def test_array_of_the_wrong_shape(folder: Path, specs: list[package_pb2.InputSpec]) -> None:
    np.save(folder / "wrong.npy", np.zeros((1, 48, 100, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"line 2: .*wrong\.npy: .*expected shape"):
        CalibrationDataset(dataset(folder, "imgs/0.png\nwrong.npy\n"), specs)
    np.save(folder / "pickled.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match=r"line 1: .*pickled\.npy: not a readable \.npy"):
        CalibrationDataset(dataset(folder, "pickled.npy\n"), specs)


def test_missing_dataset_file(specs: list[package_pb2.InputSpec], tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        CalibrationDataset(tmp_path / "nope.txt", specs)


def test_build_reports_dataset_errors(cls_onnx: Path, folder: Path, rknn: RKNN) -> None:
    rknn.config(mean_values=CLS_MEAN, std_values=CLS_STD)
    rknn.load_onnx(str(cls_onnx), input_size_list=[CLS_SIZE])
    with pytest.raises(DatasetError, match="line 1: .*small.jpg: image is 100x48"):
        rknn.build(do_quantization=True, dataset=str(dataset(folder, "small.jpg\n")))
    quiet = RKNN()  # the vendor contract: -1 and the reason logged
    quiet.config(mean_values=CLS_MEAN, std_values=CLS_STD)
    quiet.load_onnx(str(cls_onnx), input_size_list=[CLS_SIZE])
    assert quiet.build(do_quantization=True, dataset=str(folder / "nope.txt")) == -1
    assert isinstance(quiet.last_error, DatasetError)
    quiet.release()


def _two_input_model(path: Path) -> Path:
    """a + b -> Conv 3x3 -> Relu: a model with two image inputs."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "bias")
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Conv", ["sum", "w", "bias"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "two_inputs",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [weight, bias],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_two_inputs_per_line(tmp_path: Path) -> None:
    model = _two_input_model(tmp_path / "two.onnx")
    rng = np.random.default_rng(1)
    lines = []
    for i in range(12):
        np.save(tmp_path / f"a{i}.npy", rng.integers(0, 256, (8, 8, 3)).astype(np.float32))  # HWC, no batch
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"b{i}.png")
        lines.append(f"a{i}.npy b{i}.png")
    (tmp_path / "dataset.txt").write_text("\n".join(lines))
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[[128] * 3, [0] * 3], std_values=[[128] * 3, [255] * 3], float_dtype="float32")
        rknn.load_onnx(str(model))
        rknn.build(do_quantization=True, dataset=str(tmp_path / "dataset.txt"))
        assert rknn.package is not None and rknn.package.header.quantization.calibration_samples == 12
        table = table_from_qdq(onnx.load_from_string(rknn.package.payload))
        # a: (x - 128) / 128 of 0..255 -> [-1, 0.992]; b: x / 255 -> [0, 1] (zero point -128)
        assert table["a"].min[0] == pytest.approx(-1.0, abs=0.01) and table["b"].zero_point.tolist() == [-128]
        a = rng.integers(0, 256, (1, 8, 8, 3)).astype(np.float32)
        b = rng.integers(0, 256, (1, 8, 8, 3)).astype(np.uint8)
        rknn.init_runtime()
        got = rknn.inference([a, b])
    assert got is not None
    want = _reference_two_inputs(model, (a - 128) / 128, b / 255.0)
    assert np.abs(got[0] - want).max() < 0.05 * np.abs(want).max()


def _reference_two_inputs(model: Path, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feeds = {"a": a.transpose(0, 3, 1, 2).astype(np.float32), "b": b.transpose(0, 3, 1, 2).astype(np.float32)}
    out: np.ndarray = session.run(None, feeds)[0]
    return out


def test_cli_reports_the_bad_line(cls_onnx: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rkfarm.cli import main

    bad = dataset(folder, "imgs/0.png\nimgs/1.png\nnotes.txt\n")
    argv = ["build", str(cls_onnx), "-o", str(folder / "m.rkfm"), "--input-size", "1,3,48,192",
            "--quantize", "--dataset", str(bad)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("rkfarm: error: ") and "line 3" in err and "notes.txt" in err
