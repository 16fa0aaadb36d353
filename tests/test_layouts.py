"""NHWC models (TensorFlow, TFLite): the package says NHWC, and every path takes arrays as the model has them.

The model here is ONNX with an NHWC input, marked as the TF frontends mark theirs (ONNX dimension
denotations); the same input runs through onnxruntime directly as the reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model
from quant_fixtures import write_dataset

from rkfarm import RKNN, graph
from rkfarm.runtime import InputAdapter
from rkfarm_proto.errors import InputError
from rkfarm_proto.package import read_package
from rkfarm_proto.v1 import common_pb2, package_pb2

H, W, C = 16, 20, 3


def nhwc_model(path: Path) -> Path:
    """x [1,H,W,C] -> Transpose to NCHW -> Conv 3x3 -> Relu -> GlobalAveragePool -> y [1,4,1,1]."""
    rng = np.random.default_rng(3)
    weight = numpy_helper.from_array(rng.normal(0, 0.3, (4, C, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b")
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x_nchw", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, H, W, C])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])], [weight, bias],
    )  # fmt: skip
    model = make_model(g, 17)
    graph.mark_nhwc(model)
    onnx.save(model, str(path))
    return path


def reference(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: np.ndarray = sess.run(None, {"x": x.astype(np.float32)})[0]
    return out


def test_the_mark_is_standard_onnx_and_survives_shape_fixing(tmp_path: Path) -> None:
    model = onnx.load(str(nhwc_model(tmp_path / "m.onnx")))
    onnx.checker.check_model(model, full_check=True)
    value = model.graph.input[0]
    assert graph.is_nhwc(value)
    graph.set_dims(value, [1, H, W, C])
    assert graph.is_nhwc(value)
    graph.set_dims(value, [H, W, C])  # another rank: the denotation no longer says anything
    assert not graph.is_nhwc(value)


def test_adapter_takes_nhwc_as_is_and_transposes_nchw() -> None:
    spec = package_pb2.InputSpec(
        tensor=common_pb2.TensorSpec(
            name="x", dtype=common_pb2.DATA_TYPE_FLOAT32, shape=[1, H, W, C], layout=common_pb2.LAYOUT_NHWC
        ),
        mean_values=[10.0, 20.0, 30.0],
        std_values=[2.0, 4.0, 8.0],
    )
    adapter = InputAdapter([spec])
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (H, W, C), dtype=np.uint8)
    want = (img.astype(np.float32) - [10, 20, 30]) / [2, 4, 8]
    (got,) = adapter([img])  # HWC: a batch of one, channels last as the model takes it
    np.testing.assert_allclose(got[0], want, rtol=1e-6)
    (got_nchw,) = adapter([img.transpose(2, 0, 1)[None]], data_format="nchw")
    np.testing.assert_array_equal(got_nchw, got)
    with pytest.raises(InputError, match=r"expected shape \[1, 16, 20, 3\] \(NHWC"):
        adapter([img.transpose(2, 0, 1)[None]])  # NCHW without saying so


@pytest.mark.parametrize("float_dtype", ["float32", "float16"])
def test_float_build_keeps_nhwc_and_matches_onnxruntime(tmp_path: Path, float_dtype: str) -> None:
    src = nhwc_model(tmp_path / "m.onnx")
    img = np.random.default_rng(1).integers(0, 256, (H, W, C), dtype=np.uint8)
    want = reference(src, (img[None].astype(np.float32) - 128) / 64)
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[128, 128, 128], std_values=[64, 64, 64], float_dtype=float_dtype)
        rknn.load_onnx(str(src))
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(tmp_path / "m.rkfm"))
        rknn.init_runtime()
        (got,) = rknn.inference(inputs=[img])
        (got_nchw,) = rknn.inference(inputs=[img.transpose(2, 0, 1)[None]], data_format=["nchw"])
    spec = read_package(tmp_path / "m.rkfm").header.inputs[0]
    assert spec.tensor.layout == common_pb2.LAYOUT_NHWC and list(spec.tensor.shape) == [1, H, W, C]
    tol = 1e-5 if float_dtype == "float32" else 2e-3
    np.testing.assert_allclose(got, want, atol=tol * float(np.abs(want).max()))
    np.testing.assert_array_equal(got_nchw, got)


def test_int8_calibration_reads_images_as_nhwc(tmp_path: Path) -> None:
    src = nhwc_model(tmp_path / "m.onnx")
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (H, W, C), dtype=np.uint8) for _ in range(6)]
    dataset = write_dataset(tmp_path / "cal", images)
    test = rng.integers(0, 256, (H, W, C), dtype=np.uint8)
    want = reference(src, test[None].astype(np.float32) / 255).ravel()
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[0, 0, 0], std_values=[255, 255, 255])
        rknn.load_onnx(str(src))
        rknn.build(do_quantization=True, dataset=str(dataset))
        rknn.init_runtime()
        (got,) = rknn.inference(inputs=[test])
        assert rknn.accuracy_analysis(inputs=[str(tmp_path / "cal" / "0000.png")], output_dir=str(tmp_path / "a")) == 0
    cos = float(np.dot(got.ravel(), want) / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cos > 0.99, cos
