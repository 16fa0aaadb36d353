"""RKNN API on the simulator, on the real PP-OCR text-direction classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import CLS_MEAN, CLS_SIZE, CLS_STD, cosine, preprocess_cls
from rkfarm import RKNN
from rkfarm.errors import InputError, ModelLoadError, PackageError, StateError
from rkfarm.samples import TextLine
from rkfarm_proto.package import read_package


def _reference(onnx_path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def test_float32_package_matches_onnx(cls_onnx: Path, cls_package_fp32: Path, cls_lines: list[TextLine]) -> None:
    ref = _reference(cls_onnx)
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package_fp32))
        rknn.init_runtime()
        for line in cls_lines:
            x = preprocess_cls(line.image)
            got = rknn.inference([x], data_format="nchw", inputs_pass_through=[1])
            assert got is not None
            want = ref.run(None, {"x": x})[0]
            assert np.abs(got[0] - want).max() <= 1e-4


def test_float16_package_cosine(cls_onnx: Path, cls_package: Path, cls_lines: list[TextLine]) -> None:
    ref = _reference(cls_onnx)
    pkg = read_package(cls_package)
    assert pkg.header.float_dtype == "float16"
    fp16_weights = [
        t for t in onnx.load_from_string(pkg.payload).graph.initializer if t.data_type == onnx.TensorProto.FLOAT16
    ]
    assert fp16_weights, "float16 build stores float16 weights"
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package))
        rknn.init_runtime()
        cosines = []
        for line in cls_lines:
            got = rknn.inference([line.image[np.newaxis]])
            assert got is not None
            want = ref.run(None, {"x": preprocess_cls(line.image)})[0]
            cosines.append(cosine(got[0], want))
    assert min(cosines) >= 0.9999, cosines


def test_mean_std_nhwc_equals_manual_preprocessing(cls_package_fp32: Path, cls_lines: list[TextLine]) -> None:
    """uint8 NHWC in, mean/std from the package: same as doing it by hand and feeding ONNX Runtime."""
    pkg = read_package(cls_package_fp32)
    session = ort.InferenceSession(pkg.payload, providers=["CPUExecutionProvider"])
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package_fp32))
        rknn.init_runtime()
        for line in cls_lines[:8]:
            nhwc = line.image[np.newaxis]
            got = rknn.inference([nhwc])
            hwc = rknn.inference([line.image])  # 3-D: batch of one
            nchw = rknn.inference([nhwc.transpose(0, 3, 1, 2)], data_format="nchw")
            want = session.run(None, {"x": preprocess_cls(line.image)})[0]
            assert got is not None and hwc is not None and nchw is not None
            np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(got[0], hwc[0])
            np.testing.assert_array_equal(got[0], nchw[0])


def test_the_classifier_reads_text_direction(cls_package: Path, cls_lines: list[TextLine]) -> None:
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package))
        rknn.init_runtime()
        preds = []
        for line in cls_lines:
            out = rknn.inference([line.image])
            assert out is not None
            preds.append(int(out[0].argmax()))
    accuracy = np.mean([p == line.label for p, line in zip(preds, cls_lines)])
    assert accuracy >= 0.8, f"accuracy {accuracy:.2f} on rendered lines"


def test_cut_at_inner_tensor_returns_it(cls_onnx: Path, rknn: RKNN) -> None:
    model = onnx.load(str(cls_onnx))
    inner = next(n for n in model.graph.node if n.op_type == "GlobalAveragePool").output[0]
    rknn.config(mean_values=CLS_MEAN, std_values=CLS_STD, float_dtype="float32")
    rknn.load_onnx(str(cls_onnx), input_size_list=[CLS_SIZE], outputs=[inner])
    rknn.build(do_quantization=False)
    rknn.init_runtime()
    x = np.random.default_rng(1).integers(0, 255, (1, 48, 192, 3), dtype=np.uint8)
    got = rknn.inference([x])
    assert got is not None and len(got) == 1
    assert rknn.package is not None and rknn.package.header.outputs[0].name == inner
    # The same tensor, read from the full model with ONNX Runtime.
    full = onnx.load(str(cls_onnx))
    full.graph.output.append(onnx.helper.make_tensor_value_info(inner, onnx.TensorProto.FLOAT, None))
    want = ort.InferenceSession(full.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        [inner], {"x": preprocess_cls(x[0])}
    )[0]
    assert got[0].shape == want.shape
    np.testing.assert_allclose(got[0], want, atol=1e-4)


def test_input_size_list_fixes_dynamic_dims(cls_onnx: Path, rknn: RKNN) -> None:
    rknn.config(float_dtype="float32")
    rknn.load_onnx(str(cls_onnx), input_size_list=[[1, 3, 48, 160]])
    rknn.build(do_quantization=False)
    assert rknn.package is not None
    assert list(rknn.package.header.inputs[0].tensor.shape) == [1, 3, 48, 160]
    assert list(rknn.package.header.outputs[0].shape) == [1, 2]


def test_dynamic_dims_without_sizes_say_how_to_fix(cls_onnx: Path, rknn: RKNN) -> None:
    with pytest.raises(ModelLoadError, match=r"dynamic dims \[1, 3, \?, \?\].*input_size_list"):
        rknn.load_onnx(str(cls_onnx))


def test_graph_is_cleaned_up(cls_package: Path) -> None:
    payload = onnx.load_from_string(read_package(cls_package).payload)
    ops = {n.op_type for n in payload.graph.node}
    assert "BatchNormalization" not in ops, "BatchNorm folded into Conv"
    assert "Constant" not in ops, "constants folded"
    assert len({n.name for n in payload.graph.node}) == len(payload.graph.node), "unique node names"
    onnx.checker.check_model(payload)


@pytest.mark.parametrize(
    ("shape", "dtype", "pattern"),
    [
        ((1, 48, 190, 3), np.uint8, r"input 'x': expected shape \[1, 48, 192, 3\].*got \[1, 48, 190, 3\]"),
        ((2, 48, 192, 3), np.uint8, r"input 'x': expected shape \[1, 48, 192, 3\].*got \[2, 48, 192, 3\]"),
        ((1, 48, 192, 3), np.complex64, r"input 'x': dtype complex64 is not supported"),
    ],
)
def test_wrong_input_names_input_and_shapes(
    cls_package: Path, shape: tuple[int, ...], dtype: type, pattern: str
) -> None:
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package))
        rknn.init_runtime()
        with pytest.raises(InputError, match=pattern):
            rknn.inference([np.zeros(shape, dtype=dtype)])
        with pytest.raises(InputError, match="takes 1 input"):
            rknn.inference([np.zeros((1, 48, 192, 3), np.uint8)] * 2)


def test_return_codes_by_default(cls_package: Path, tmp_path: Path) -> None:
    rknn = RKNN()
    assert rknn.init_runtime() == -1
    assert isinstance(rknn.last_error, StateError)
    assert rknn.inference([np.zeros(1)]) is None
    bad = tmp_path / "bad.rkfm"
    bad.write_bytes(cls_package.read_bytes()[:5000])
    assert rknn.load_rknn(str(bad)) == -1
    assert isinstance(rknn.last_error, PackageError)
    assert rknn.load_rknn(str(cls_package)) == 0
    assert rknn.init_runtime() == 0
    assert rknn.inference([np.zeros((1, 48, 192, 3), np.uint8)]) is not None
    assert rknn.last_error is None
    rknn.release()


@pytest.mark.parametrize("kind", ["truncated", "flipped", "magic", "onnx", "empty", "text"])
def test_bad_packages_are_refused(kind: str, cls_package: Path, cls_onnx: Path, tmp_path: Path) -> None:
    data = cls_package.read_bytes()
    path = tmp_path / f"{kind}.rkfm"
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
        pattern = "truncated"
    elif kind == "flipped":
        b = bytearray(data)
        b[len(b) // 2] ^= 0x10
        path.write_bytes(bytes(b))
        pattern = "sha256 does not match"
    elif kind == "magic":
        path.write_bytes(b"XXXX" + data[4:])
        pattern = "not an rkfarm model package"
    elif kind == "onnx":
        path = cls_onnx
        pattern = "looks like an ONNX model"
    elif kind == "empty":
        path.write_bytes(b"")
        pattern = "not an rkfarm model package"
    else:
        path.write_text("hello world, not a model\n")
        pattern = "not an rkfarm model package"
    with RKNN(raise_errors=True) as rknn, pytest.raises(PackageError, match=pattern) as err:
        rknn.load_rknn(str(path))
    assert str(path) in str(err.value)


def test_bad_onnx_files(tmp_path: Path, cls_onnx: Path, rknn: RKNN) -> None:
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(cls_onnx.read_bytes()[:100_000])
    with pytest.raises(ModelLoadError, match=r"cut\.onnx: not a valid ONNX model"):
        rknn.load_onnx(str(cut))
    with pytest.raises(ModelLoadError, match="no such file"):
        rknn.load_onnx(str(tmp_path / "absent.onnx"))


def test_order_of_calls_is_explained(rknn: RKNN) -> None:
    with pytest.raises(StateError, match=r"load_onnx\(\)"):
        rknn.build(do_quantization=False)
    with pytest.raises(StateError, match="build"):
        rknn.export_rknn("x.rkfm")


def test_quantize_without_dataset_is_explained(cls_onnx: Path, rknn: RKNN) -> None:
    rknn.load_onnx(str(cls_onnx), input_size_list=[CLS_SIZE])
    with pytest.raises(Exception, match="dataset"):
        rknn.build()  # the vendor's default is do_quantization=True


def test_eval_perf_and_memory_on_simulator(cls_package: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package))
        rknn.init_runtime(perf_debug=True)
        perf = rknn.eval_perf(runs=20, warmup=2)
        assert perf is not None
        printed = capsys.readouterr().out
        assert "Total Inference Time Per Frame(us)" in printed and "FPS" in printed
        assert "Operator Time Consuming Ranking Table" in printed
        assert isinstance(perf, str) and perf.stats.runs == 20
        assert perf.stats.min_us <= perf.stats.median_us <= perf.stats.p99_us
        assert perf.layers and any(layer.op_type == "Conv" for layer in perf.layers)
        mem = rknn.eval_memory(is_print=False)
        assert mem is not None
        pkg = read_package(cls_package)
        assert mem["weight_memory"] == pkg.header.weight_bytes > 0
        assert mem["total_memory"] == mem["weight_memory"] + mem["internal_memory"] + mem["other_memory"]


def test_sdk_version(cls_package: Path) -> None:
    with RKNN() as rknn:
        assert rknn.get_sdk_version().startswith("API: rkfarm")
        rknn.load_rknn(str(cls_package))
        rknn.init_runtime()
        assert "simulator" in rknn.get_sdk_version()
