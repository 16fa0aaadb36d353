"""config(dynamic_input=...): one package, several input shape sets (the vendor's functions/dynamic_input).

The reference is ONNX Runtime run directly on the source ONNX model at each set's shape, with the
normalisation computed here in numpy; rkfarm's package must give the same numbers, refuse shapes outside the
sets on the simulator and in the agent's own backend code alike, and keep the sets through export/load_rknn.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model
from PIL import Image

from rkfarm import RKNN
from rkfarm.errors import BuildError, ConfigError, DatasetError, ModelLoadError, NotSupportedError
from rkfarm.quant import table_from_qdq
from rkfarm_agent.backends.onnxruntime import OnnxRuntimeBackend
from rkfarm_agent.errors import BackendError
from rkfarm_proto.errors import InputError
from rkfarm_proto.package import ModelPackage
from rkfarm_proto.records import LoadOptions
from rkfarm_proto.v1 import package_pb2

SETS = [[[1, 3, 16, 16]], [[1, 3, 24, 32]], [[1, 3, 8, 12]]]
MEAN = [[120.0, 110.0, 100.0]]
STD = [[60.0, 62.0, 64.0]]


def conv_net(path: Path, height: str | int = "h", width: str | int = "w", reshape: bool = False) -> Path:
    """Conv-ReLU-Conv(stride 2)-ReLU-Conv: the output's spatial dims follow the input's symbolic 'h' and 'w'."""
    rng = np.random.default_rng(3)

    def weight(*shape: int) -> npt.NDArray[np.float32]:
        values: npt.NDArray[np.float32] = (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)
        return values

    inits = [
        numpy_helper.from_array(weight(8, 3, 3, 3), "w1"),
        numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array(weight(8, 8, 3, 3), "w2"),
        numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "b2"),
        numpy_helper.from_array(weight(4, 8, 1, 1), "w3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["y" if not reshape else "c3"]),
    ]
    if reshape:  # a graph that fixes its size: only 16x16 inputs reshape to [1, 256]
        inits.append(numpy_helper.from_array(np.array([1, 4 * 8 * 8], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["c3", "shape"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256] if reshape else [1, 4, "oh", "ow"])],
        inits,
    )
    model = make_model(graph, 17)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return conv_net(tmp_path_factory.mktemp("dyn") / "net.onnx")


@pytest.fixture(scope="module")
def image_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Calibration images of assorted sizes (none a set's): resized to every set as the vendor resizes them."""
    folder = tmp_path_factory.mktemp("images")
    lines = []
    for i, (h, w) in enumerate([(20, 20), (30, 40), (12, 18), (26, 26), (16, 24), (40, 30)]):
        Image.fromarray(smooth_image(h, w, seed=100 + i)).save(folder / f"img{i}.png")
        lines.append(f"img{i}.png")
    (folder / "dataset.txt").write_text("\n".join(lines) + "\n")
    return folder / "dataset.txt"


def reference(source: Path, image_nhwc: np.ndarray) -> np.ndarray:
    """ONNX Runtime on the source model, with mean/std and the NHWC->NCHW transpose done here in numpy."""
    x = (image_nhwc.astype(np.float32) - np.asarray(MEAN[0], np.float32)) / np.asarray(STD[0], np.float32)
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x.transpose(0, 3, 1, 2)})[0], np.float32)


def smooth_image(height: int, width: int, seed: int) -> npt.NDArray[np.uint8]:
    """A uint8 RGB image with structure at several scales (calibration and test images alike)."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(np.cumsum(rng.normal(size=(height, width, 3)), axis=0), axis=1)
    noise = rng.normal(scale=12.0, size=(height, width, 3))
    image: npt.NDArray[np.uint8] = np.clip(128 + 60 * walk / (np.abs(walk).max() + 1e-6) + noise, 0, 255).astype(
        np.uint8
    )
    return image


def images_for(shape: list[int], seed: int) -> np.ndarray:
    n, _, h, w = shape
    return np.stack([smooth_image(h, w, seed * 10 + i) for i in range(n)])


def build(source: Path, float_dtype: str = "float32", dataset: Path | None = None) -> RKNN:
    rknn = RKNN(raise_errors=True)
    rknn.config(mean_values=MEAN, std_values=STD, float_dtype=float_dtype, dynamic_input=SETS)
    rknn.load_onnx(str(source))
    rknn.build(do_quantization=dataset is not None, dataset=str(dataset) if dataset else None)
    return rknn


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_each_set_equals_onnxruntime_and_others_are_refused(source: Path) -> None:
    with build(source) as rknn:
        assert rknn.package is not None
        header = rknn.package.header
        assert [[list(s.dims) for s in shape_set.inputs] for shape_set in header.shape_sets] == SETS
        assert list(header.inputs[0].tensor.shape) == [1, 3, -1, -1]  # the dims the sets change stay dynamic
        rknn.init_runtime()
        for index, (shape,) in enumerate(SETS):
            image = images_for(shape, seed=index)
            got = rknn.inference([image])
            want = reference(source, image)
            assert got is not None and got[0].shape == want.shape == (1, 4, shape[2] // 2, shape[3] // 2)
            np.testing.assert_allclose(np.asarray(got[0], np.float32), want, rtol=1e-5, atol=1e-5)
            nchw = rknn.inference([image.transpose(0, 3, 1, 2)], data_format="nchw")
            assert nchw is not None
            np.testing.assert_allclose(np.asarray(nchw[0], np.float32), want, rtol=1e-5, atol=1e-5)
        with pytest.raises(InputError, match="not one of the model's dynamic_input sets") as refused:
            rknn.inference([images_for([1, 3, 20, 20], seed=9)])
        for ((n, c, h, w),) in SETS:  # the allowed sets, as the user passes them (NHWC) and as given to config
            assert f"[{n}, {h}, {w}, {c}]" in str(refused.value) and f"[{n}, {c}, {h}, {w}]" in str(refused.value)
        with pytest.raises(InputError, match="dynamic_input sets"):  # pass-through feeds are held to the sets too
            rknn.inference([np.zeros((1, 3, 20, 20), np.float32)], inputs_pass_through=[1])


def test_float16_build_runs_every_set(source: Path) -> None:
    with build(source, float_dtype="float16") as rknn:
        assert rknn.package is not None
        payload = onnx.load_from_string(rknn.package.payload)
        assert any(t.data_type == TensorProto.FLOAT16 for t in payload.graph.initializer)
        rknn.init_runtime()
        for index, (shape,) in enumerate(SETS):
            image = images_for(shape, seed=20 + index)
            got = rknn.inference([image])
            want = reference(source, image)
            assert got is not None
            span = float(np.ptp(want))
            assert float(np.abs(got[0] - want).max()) <= 5e-3 * max(1.0, span)


def _ranges(package: ModelPackage) -> dict[str, tuple[float, float]]:
    table = table_from_qdq(onnx.load_from_string(package.payload))
    out = {}
    for name, p in table.items():
        if p.dtype == "int8" and not p.per_channel and p.qmin == -128:  # activations
            scale, zero = float(p.scale.reshape(-1)[0]), int(p.zero_point.reshape(-1)[0])
            out[name] = (scale * (p.qmin - zero), scale * (p.qmax - zero))
    return out


def test_int8_calibrates_across_sets(
    source: Path, image_dataset: Path, caplog: pytest.LogCaptureFixture, record_property: object
) -> None:
    with caplog.at_level(logging.INFO, logger="rkfarm"), build(source, dataset=image_dataset) as rknn:
        assert rknn.package is not None
        summary = rknn.package.header.quantization
        assert summary.quantized and summary.calibration_samples == 6
        assert len(rknn.package.header.shape_sets) == 3
        dynamic = _ranges(rknn.package)
        rknn.init_runtime()
        cosines = []
        for index, (shape,) in enumerate(SETS):
            image = images_for(shape, seed=40 + index)
            got = rknn.inference([image])
            assert got is not None
            cosines.append(cosine(got[0], reference(source, image)))
    calibrated = [r.getMessage() for r in caplog.records if "calibrating on 6 sample(s)" in r.getMessage()]
    assert len(calibrated) == 3, calibrated  # every set saw every image, resized to its size
    print("int8 vs float cosine per set:", [round(c, 5) for c in cosines])
    assert callable(record_property)
    record_property("int8_cosine_per_set", cosines)
    assert min(cosines) > 0.99, cosines
    # the merged statistics are every set's: each range is the hull of the ranges of builds calibrated at one
    # set only (min/max calibration), to within the rounding of the zero point
    singles = []
    for (shape,) in SETS:
        with RKNN(raise_errors=True) as one:
            one.config(mean_values=MEAN, std_values=STD, float_dtype="float32")
            one.load_onnx(str(source), input_size_list=[shape])
            one.build(do_quantization=True, dataset=str(image_dataset))
            assert one.package is not None
            singles.append(_ranges(one.package))
    assert dynamic and all(set(single) == set(dynamic) for single in singles)
    for name, (lo, hi) in dynamic.items():
        hull = (min(s[name][0] for s in singles), max(s[name][1] for s in singles))
        step = (hi - lo) / 255
        assert abs(lo - hull[0]) <= step and abs(hi - hull[1]) <= step, (name, (lo, hi), hull)
    assert any(  # and the sets differ: no single set's statistics would have given them
        max(abs(s[name][0] - lo), abs(s[name][1] - hi)) > (hi - lo) / 255
        for name, (lo, hi) in dynamic.items()
        for s in singles
    )


def test_npy_samples_go_to_the_set_of_their_shape(source: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    lines = []
    for i, (_, c, h, w) in enumerate([SETS[0][0], SETS[2][0], SETS[0][0]]):
        np.save(tmp_path / f"s{i}.npy", rng.integers(0, 256, (1, c, h, w)).astype(np.float32))
        lines.append(f"s{i}.npy")
    (tmp_path / "dataset.txt").write_text("\n".join(lines) + "\n")
    with build(source, dataset=tmp_path / "dataset.txt") as rknn:
        assert rknn.package is not None
        assert rknn.package.header.quantization.calibration_samples == 3
    np.save(tmp_path / "odd.npy", np.zeros((1, 3, 10, 10), np.float32))
    (tmp_path / "bad.txt").write_text("s0.npy\nodd.npy\n")
    with pytest.raises(DatasetError, match=r"line 2: its \.npy arrays fit none of the dynamic_input shape sets"):
        build(source, dataset=tmp_path / "bad.txt")


def test_eval_perf_reports_every_set(source: Path) -> None:
    with build(source) as rknn:
        rknn.init_runtime()
        report = rknn.eval_perf(is_print=False, runs=5, warmup=1)
        assert report is not None
        assert [p.shapes for p in report.per_shape] == SETS
        assert report.main_shape == 1  # the most elements: the vendor's MaxShape
        assert report.total_us == report.per_shape[1].stats.median_us
        assert all(p.stats.runs == 5 and p.stats.median_us > 0 for p in report.per_shape)
        text = str(report)
        assert "Total Inference Time Per Frame(us)" in text and "Per dynamic_input Shape Set" in text
        assert "[1, 3, 24, 32]" in text and "[1, 3, 8, 12]" in text
        assert [p["shapes"] for p in report.to_dict()["per_shape"]] == SETS
        # the largest set's zeros are the last inputs: a later plain timing is the MaxShape's
        again = rknn.eval_perf(is_print=False, runs=3, warmup=0)
        assert again is not None and again.main_shape == 1


def test_memory_is_planned_at_the_largest_set(source: Path) -> None:
    with build(source) as rknn:
        assert rknn.package is not None
        dynamic_bytes = rknn.package.header.activation_bytes
    with RKNN(raise_errors=True) as one:
        one.config(mean_values=MEAN, std_values=STD, float_dtype="float32")
        one.load_onnx(str(source), input_size_list=SETS[1])
        one.build(do_quantization=False)
        assert one.package is not None
        assert dynamic_bytes == one.package.header.activation_bytes > 0


def test_export_and_load_rknn_keep_the_sets(source: Path, tmp_path: Path) -> None:
    with build(source) as rknn:
        rknn.export_rknn(str(tmp_path / "dyn.rkfm"))
    with RKNN(raise_errors=True) as loaded:
        loaded.load_rknn(str(tmp_path / "dyn.rkfm"))
        assert loaded.package is not None
        assert [[list(s.dims) for s in ss.inputs] for ss in loaded.package.header.shape_sets] == SETS
        loaded.init_runtime()
        image = images_for(SETS[2][0], seed=60)
        got = loaded.inference([image])
        assert got is not None
        np.testing.assert_allclose(np.asarray(got[0], np.float32), reference(source, image), rtol=1e-5, atol=1e-5)
        with pytest.raises(InputError, match="dynamic_input sets"):
            loaded.inference([images_for([1, 3, 16, 24], seed=61)])


def test_the_agent_backend_refuses_alike(source: Path) -> None:
    """What an agent runs: the onnxruntime backend's own adapter (sessions.py takes it from make_adapter)."""
    with build(source) as rknn:
        assert rknn.package is not None
        header, payload = rknn.package.header, rknn.package.payload
    model = OnnxRuntimeBackend(serving=True).load(header, payload, LoadOptions())
    adapter = model.make_adapter(header)
    image = images_for(SETS[0][0], seed=70)
    np.testing.assert_allclose(
        np.asarray(model.run(adapter([image]))[0], np.float32), reference(source, image), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(InputError, match="not one of the model's dynamic_input sets"):
        adapter([images_for([1, 3, 12, 12], seed=71)])
    model.close()
    altered = package_pb2.PackageHeader()
    altered.CopyFrom(header)
    altered.shape_sets[0].inputs[0].dims[1] = 4  # a set that changes the channels: not this payload's
    with pytest.raises(BackendError, match="shape set 0"):
        OnnxRuntimeBackend().load(altered, payload, LoadOptions())


@pytest.mark.parametrize(
    ("sets", "pattern"),
    [
        ([[[1, 3, 16, 16]], [[1, 3, 16, 16], [1, 4]]], r"dynamic_input\[1\] has 2 shape\(s\)"),
        ([[[1, 3, 16, 16]], [[1, 3, 16]]], r"dynamic_input\[1\]: input 0 has rank 3"),
        ([[[1, 3, 16, 16]], [[1, 3, 16, 16]]], "repeats"),
        ([[[1, 3, 16, 0]]], "positive ints"),
        ([[[1, 3, 16, 16.5]]], "positive ints"),
        ([[1, 3, 16, 16]], "one shape per model input"),
        ([], "non-empty list"),
    ],
)
def test_malformed_sets_fail_at_config(sets: object, pattern: str) -> None:
    with RKNN(raise_errors=True) as rknn, pytest.raises(ConfigError, match=pattern):
        rknn.config(dynamic_input=sets)


@pytest.mark.parametrize(
    ("sets", "pattern"),
    [
        ([[[1, 3, 16]], [[1, 3, 24]]], r"gives input 'x' the shape \[1, 3, 16\], of rank 3; the input is"),
        ([[[1, 3, 16, 16], [1, 2]]], r"gives 2 shape\(s\) per set but the model has 1 input"),
        ([[[1, 3, 16, 16]], [[1, 4, 16, 16]]], r"sets dim 1 of input 'x' to 4, but that dim is static \(3\)"),
        ([[[2, 3, 16, 16]]], r"sets dim 0 of input 'x' to 2, but that dim is static \(1\)"),
    ],
)
def test_sets_that_do_not_fit_the_model_fail_at_load(source: Path, sets: object, pattern: str) -> None:
    with RKNN(raise_errors=True) as rknn:
        rknn.config(dynamic_input=sets)
        with pytest.raises(ModelLoadError, match=pattern):
            rknn.load_onnx(str(source))


def test_static_model_dims_cannot_vary(tmp_path: Path) -> None:
    static = conv_net(tmp_path / "static.onnx", 16, 16)
    with RKNN(raise_errors=True) as rknn:
        rknn.config(dynamic_input=[[[1, 3, 16, 16]], [[1, 3, 24, 24]]])
        with pytest.raises(ModelLoadError, match=r"dim 2 of input 'x' to 24, but that dim is static \(16\)"):
            rknn.load_onnx(str(static))
    with RKNN(raise_errors=True) as rknn:  # config after load: the build checks the loaded (fixed) model
        rknn.load_onnx(str(static))
        rknn.config(dynamic_input=[[[1, 3, 16, 16]], [[1, 3, 24, 24]]])
        with pytest.raises(BuildError, match="dim 2 of input 'x' to 24"):
            rknn.build(do_quantization=False)


def test_a_set_the_graph_cannot_run_fails_the_build(tmp_path: Path) -> None:
    fixed_size = conv_net(tmp_path / "reshape.onnx", reshape=True)
    with RKNN(raise_errors=True) as rknn:
        rknn.config(float_dtype="float32", dynamic_input=[[[1, 3, 16, 16]], [[1, 3, 24, 24]]])
        rknn.load_onnx(str(fixed_size))
        with pytest.raises(BuildError, match=r"dynamic_input\[1\] \[\[1, 3, 24, 24\]\]: the model cannot run"):
            rknn.build(do_quantization=False)


def test_combinations_rkfarm_refuses(source: Path) -> None:
    with RKNN(raise_errors=True) as rknn:
        rknn.config(dynamic_input=SETS)
        with pytest.raises(NotSupportedError, match="input_size_list"):
            rknn.load_onnx(str(source), input_size_list=[[1, 3, 16, 16]])
        rknn.load_onnx(str(source))
        with pytest.raises(NotSupportedError, match="rknn_batch_size=2.*dynamic_input"):
            rknn.build(do_quantization=False, rknn_batch_size=2)


def test_accuracy_analysis_takes_a_sample_of_a_set(source: Path, image_dataset: Path, tmp_path: Path) -> None:
    Image.fromarray(smooth_image(16, 16, seed=80)).save(tmp_path / "sample.png")  # set 0's size
    with build(source, dataset=image_dataset) as rknn:
        rknn.accuracy_analysis([str(tmp_path / "sample.png")], output_dir=str(tmp_path / "snapshot"))
        result = rknn.analysis_result
        assert result is not None and (tmp_path / "snapshot" / "error_analysis.txt").is_file()


def test_an_agent_bounds_the_sets_it_would_allocate(source: Path) -> None:
    """eval_perf's zeros take the largest set: an agent refuses a header whose sets exceed one message."""
    from rkfarm_agent.sessions import check_input_sizes
    from rkfarm_proto.errors import PackageError

    with build(source) as rknn:
        assert rknn.package is not None
        header = rknn.package.header
    check_input_sizes(header, 1 << 20)
    huge = package_pb2.PackageHeader()
    huge.CopyFrom(header)
    huge.shape_sets[1].inputs[0].dims[2:] = [4096, 4096]
    with pytest.raises(PackageError, match="shape set 1"):
        check_input_sizes(huge, 1 << 20)
