"""The vendor's dataset.txt: parsing, preprocessing like inference, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model
from PIL import Image

from conftest import CLS_MEAN, CLS_SIZE, CLS_STD
from rkfarm import RKNN
from rkfarm.config import RknnConfig
from rkfarm.errors import DatasetError
from rkfarm.frontends.onnx import load_onnx
from rkfarm.quant import table_from_qdq
from rkfarm.quant.dataset import CalibrationDataset
from rkfarm.samples import text_lines
from rkfarm.specs import input_specs
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
    with pytest.raises(DatasetError, match=r"line 2: .*notes\.txt: not a calibration file"):
        rknn.build(do_quantization=True, dataset=str(dataset(folder, "small.jpg\nnotes.txt\n")))
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
    onnx.save(make_model(g, 13), str(path))
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


def test_resize_is_the_vendors_bilinear() -> None:
    """OpenCV's INTER_LINEAR, as the vendor resizes: half-pixel centres, no antialiasing, rounded to uint8
    (Pillow's bilinear filter would average over a wider support when shrinking and give other numbers)."""
    from rkfarm.quant.dataset import resize_bilinear

    row = np.array([[0, 40, 80, 120]], np.uint8)
    assert resize_bilinear(row, 1, 2).tolist() == [[20, 100]]  # sources x = 0.5 and 2.5
    assert resize_bilinear(np.array([[0, 1]], np.uint8), 1, 4).tolist() == [[0, 0, 1, 1]]  # 0, .25, .75, 1
    image = np.zeros((2, 2, 3), np.uint8)
    image[1, 1] = (200, 100, 40)
    # 0.75 * 0.75 of the corner pixel, rounded half up: 112.5, 56.25, 22.5
    assert resize_bilinear(image, 4, 4)[2, 2].tolist() == [113, 56, 23]


def test_images_of_another_size_are_resized(
    folder: Path, specs: list[package_pb2.InputSpec], caplog: pytest.LogCaptureFixture
) -> None:
    from rkfarm.quant.dataset import resize_bilinear

    image = text_lines(3, seed=4)[0].image
    Image.fromarray(image).resize((384, 96)).save(folder / "big.png")  # twice the input size
    with caplog.at_level("INFO", logger="rkfarm"):
        data = CalibrationDataset(dataset(folder, "big.png\nsmall.jpg\nimgs/0.png\n"), specs)
    assert sum("resizing calibration images" in r.getMessage() for r in caplog.records) == 1
    big, small, same = list(data)
    assert big[0].shape == small[0].shape == same[0].shape == (1, 3, 48, 192)
    want = resize_bilinear(np.asarray(Image.open(folder / "big.png").convert("RGB")), 48, 192).astype(np.float32)
    bgr = ((want[..., ::-1] - 127.5) / 127.5).transpose(2, 0, 1)[np.newaxis]
    np.testing.assert_allclose(big[0], bgr, atol=1e-6)
    # a 2x shrink with half-pixel centres averages each 2x2 block: close to the original line
    assert np.abs(big[0] - same[0]).mean() < 0.05


def test_npy_samples_are_read_in_the_models_layout(tmp_path: Path) -> None:
    """The vendor reads .npy samples as NCHW; with a 3x3x3 input an array fits NHWC and NCHW alike."""
    weight = numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "cube",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 3])],
        [weight],
    )
    specs = input_specs(make_model(g, 13), RknnConfig())
    cube = np.arange(27, dtype=np.float32).reshape(1, 3, 3, 3)
    np.save(tmp_path / "batched.npy", cube)
    np.save(tmp_path / "plain.npy", cube[0])
    np.save(tmp_path / "nhwc.npy", np.zeros((1, 3, 3, 2), np.float32))
    (tmp_path / "dataset.txt").write_text("batched.npy\nplain.npy\n")
    for sample in CalibrationDataset(tmp_path / "dataset.txt", specs):
        np.testing.assert_array_equal(sample[0], cube)  # not transposed
    (tmp_path / "dataset.txt").write_text("nhwc.npy\n")
    with pytest.raises(DatasetError, match=r"nhwc\.npy: .*expected shape"):
        CalibrationDataset(tmp_path / "dataset.txt", specs)


def _cache_model(path: Path) -> Path:
    """A [1, 6, 1, 2] input beside a [4, 6, 1, 2] cache: the inputs differ in dim 0 (which is no batch dim)."""
    nodes = [
        helper.make_node("ReduceMean", ["cache"], ["mean"], axes=[0], keepdims=1),
        helper.make_node("Add", ["new", "mean"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["out"]),
    ]
    g = helper.make_graph(
        nodes,
        "cache",
        [
            helper.make_tensor_value_info("new", TensorProto.FLOAT, [1, 6, 1, 2]),
            helper.make_tensor_value_info("cache", TensorProto.FLOAT, [4, 6, 1, 2]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 6, 1, 2])],
    )
    onnx.save(make_model(g, 13), str(path))
    return path


def test_inputs_of_one_sample_may_differ_in_dim0(tmp_path: Path) -> None:
    model = _cache_model(tmp_path / "cache.onnx")
    rng = np.random.default_rng(3)
    lines, caches, news = [], [], []
    for i in range(5):
        caches.append(rng.uniform(-1, 3, (4, 6, 1, 2)).astype(np.float32))
        news.append(rng.uniform(-2, 1, (1, 6, 1, 2)).astype(np.float32))
        np.save(tmp_path / f"cache{i}.npy", caches[-1])
        np.save(tmp_path / f"new{i}.npy", news[-1])
        lines.append(f"new{i}.npy cache{i}.npy")
    (tmp_path / "dataset.txt").write_text("\n".join(lines) + "\n")
    with RKNN(raise_errors=True) as rknn:
        rknn.config(float_dtype="float32")
        rknn.load_onnx(str(model))
        rknn.build(do_quantization=True, dataset=str(tmp_path / "dataset.txt"))
        assert rknn.package is not None
        table = table_from_qdq(onnx.load_from_string(rknn.package.payload))
        # each input's range is that input's data, not a slice of it (no row of one input fed as another's)
        for name, data in (("cache", caches), ("new", news)):
            low, high = min(float(d.min()) for d in data), max(float(d.max()) for d in data)
            step = (high - low) / 255  # the range read back from scale and zero point is exact to a step
            assert table[name].min[0] == pytest.approx(low, abs=step)
            assert table[name].max[0] == pytest.approx(high, abs=step)
        rknn.init_runtime()
        got = rknn.inference([news[0], caches[0]], data_format=["nchw", "nchw"])
    assert got is not None and got[0].shape == (1, 6, 1, 2)
    want = np.maximum(news[0] + caches[0].mean(axis=0, keepdims=True), 0)
    assert np.abs(got[0] - want).max() < 0.05


def test_a_line_whose_inputs_hold_different_shares_of_a_run(tmp_path: Path) -> None:
    model = _cache_model(tmp_path / "cache.onnx")
    np.save(tmp_path / "cache.npy", np.zeros((4, 6, 1, 2), np.float32))
    np.save(tmp_path / "two.npy", np.zeros((2, 6, 1, 2), np.float32))
    (tmp_path / "dataset.txt").write_text("two.npy cache.npy\n")
    specs = input_specs(load_onnx(model, None, None, None, None).model, RknnConfig())
    with pytest.raises(DatasetError, match=r"line 1: the inputs hold 'new': 2, 'cache': 4 rows .* takes 1, 4"):
        CalibrationDataset(tmp_path / "dataset.txt", specs)
