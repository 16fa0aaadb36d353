"""build(rknn_batch_size=N) (the vendor's functions/batch_size): N samples per run, each as a batch-1 run gives.

The reference is ONNX Runtime on the source model, one sample at a time, with the normalisation done in numpy.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model
from PIL import Image

from rkfarm import RKNN
from rkfarm.errors import BuildError
from rkfarm_proto.errors import InputError

MEAN = [[127.5, 127.5, 127.5]]
STD = [[64.0, 64.0, 64.0]]
SIZE = 16


def classifier(path: Path) -> Path:
    """Conv-ReLU-MaxPool, then the exporter's flatten ``x.reshape(1, -1)`` (batch spelled out) and Gemm."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array((rng.standard_normal((6, 3, 3, 3)) / 5).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal(6) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
        numpy_helper.from_array((rng.standard_normal((6 * 8 * 8, 10)) / 20).astype(np.float32), "fc"),
        numpy_helper.from_array((rng.standard_normal(10) * 0.1).astype(np.float32), "fcb"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p1", "flat"], ["f1"]),
        helper.make_node("Gemm", ["f1", "fc", "fcb"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cls",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = make_model(graph, 17)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def tiny(path: Path, nodes: list[onnx.NodeProto], in_shape: list[int], out_shape: list[int]) -> Path:
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
    )
    model = make_model(graph, 17)
    onnx.save(model, path)
    return path


def images(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    walk = np.cumsum(np.cumsum(rng.normal(size=(count, SIZE, SIZE, 3)), axis=1), axis=2)
    walk /= np.abs(walk).max(axis=(1, 2, 3), keepdims=True) + 1e-6
    return np.clip(128 + 90 * walk + rng.normal(scale=10, size=walk.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("batch")
    classifier(folder / "cls.onnx")
    for i, image in enumerate(images(8, seed=2)):
        Image.fromarray(image).save(folder / f"cal{i}.png")
    (folder / "dataset.txt").write_text("".join(f"cal{i}.png\n" for i in range(8)))
    return folder


def reference(source: Path, batch_nhwc: np.ndarray) -> np.ndarray:
    """ONNX Runtime on the batch-1 source model, sample by sample."""
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    rows = []
    for image in batch_nhwc:
        x = (image.astype(np.float32) - np.asarray(MEAN[0], np.float32)) / np.asarray(STD[0], np.float32)
        rows.append(session.run(None, {"x": x.transpose(2, 0, 1)[np.newaxis]})[0])
    return np.concatenate(rows)


def run(work: Path, batch: int | None, quantize: bool, samples: np.ndarray) -> tuple[np.ndarray, RKNN]:
    rknn = RKNN(raise_errors=True)
    rknn.config(mean_values=MEAN, std_values=STD, float_dtype="float32")
    rknn.load_onnx(str(work / "cls.onnx"))
    rknn.build(do_quantization=quantize, dataset=str(work / "dataset.txt"), rknn_batch_size=batch)
    rknn.init_runtime()
    if batch is None:
        outs = [rknn.inference([image]) for image in samples]
        return np.concatenate([o[0] for o in outs if o is not None]), rknn
    out = rknn.inference([samples])
    assert out is not None
    return out[0], rknn


@pytest.mark.parametrize("quantize", [False, True], ids=["float32", "int8"])
def test_batch_of_four_equals_four_single_runs(work: Path, quantize: bool) -> None:
    samples = images(4, seed=7)
    single, one = run(work, None, quantize, samples)
    batched, four = run(work, 4, quantize, samples)
    with one, four:
        assert four.package is not None and one.package is not None
        header = four.package.header
        assert list(header.inputs[0].tensor.shape) == [4, 3, SIZE, SIZE]
        assert [list(o.shape) for o in header.outputs] == [[4, 10]]
        assert header.rknn_batch_size == 4 and one.package.header.rknn_batch_size == 0
    assert batched.shape == (4, 10) and single.shape == (4, 10)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)  # row i is sample i, not a neighbour's
    assert len({int(np.argmax(row)) for row in single}) > 1 or float(np.ptp(single, axis=0).max()) > 1e-3
    want = reference(work / "cls.onnx", samples)
    if quantize:
        cos = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(batched, want)]
        assert min(cos) > 0.99, cos
    else:
        np.testing.assert_allclose(batched, want, rtol=1e-5, atol=1e-6)


def test_eval_perf_reports_per_batch_and_per_sample(work: Path, tmp_path: Path) -> None:
    _, rknn = run(work, 4, False, images(4, seed=8))
    with rknn:
        report = rknn.eval_perf(is_print=False, runs=10, warmup=2)
        assert report is not None and report.batch_size == 4
        assert report.per_sample_us == pytest.approx(report.total_us / 4)
        assert report.samples_per_s == pytest.approx(4e6 / report.total_us)
        line = re.search(r"Batch 4 \(rknn_batch_size\): ([\d.]+) ms per batch, ([\d.]+) ms per sample, "
                         r"([\d.]+) samples/s", str(report))  # fmt: skip
        assert line is not None, str(report)
        assert float(line.group(1)) == pytest.approx(report.total_us / 1000, abs=1e-3)
        assert report.to_dict()["batch_size"] == 4
        rknn.export_rknn(str(tmp_path / "b4.rkfm"))
    with RKNN(raise_errors=True) as loaded:  # the batch travels in the package
        loaded.load_rknn(str(tmp_path / "b4.rkfm"))
        loaded.init_runtime()
        again = loaded.eval_perf(is_print=False, runs=3, warmup=0)
        assert again is not None and again.batch_size == 4 and "ms per sample" in str(again)


def test_single_samples_are_refused_by_a_batched_model(work: Path) -> None:
    _, rknn = run(work, 4, False, images(4, seed=9))
    with rknn:
        one = images(1, seed=9)
        with pytest.raises(InputError, match="a batch of 4 samples per run.*stack 4 samples along dim 0"):
            rknn.inference([one])
        with pytest.raises(InputError, match="stack 4 samples"):
            rknn.inference([one[0]])  # an HWC image is a batch of one
        with pytest.raises(InputError, match="stack 4 samples"):
            rknn.inference([images(2, seed=9)])


@pytest.mark.parametrize("value", [0, -2, 2.5, True, "4"])
def test_bad_batch_values_are_refused(work: Path, value: object) -> None:
    with RKNN(raise_errors=True) as rknn:
        rknn.load_onnx(str(work / "cls.onnx"))
        with pytest.raises(BuildError, match="rknn_batch_size must be a positive int"):
            rknn.build(do_quantization=False, rknn_batch_size=value)  # type: ignore[arg-type]


def test_models_that_cannot_batch_are_refused(tmp_path: Path) -> None:
    cases = {
        # inputs of batch 2: the vendor batches batch-1 models only
        "batch2": (tiny(tmp_path / "b2.onnx", [helper.make_node("Relu", ["x"], ["y"])], [2, 4], [2, 4]),
                   r"needs inputs with batch 1; input 'x' is \[2, 4\]"),
        # a reduction over dim 0: the output keeps batch 1
        "reduce": (tiny(tmp_path / "sum.onnx", [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1)],
                        [1, 4], [1, 1]),
                   r"output 'y' is \[1, 1\] when the inputs have batch 3; its dim 0 does not follow the batch"),
        # shapes follow the batch but values mix the samples: softmax over dim 0
        "mix": (tiny(tmp_path / "mix.onnx", [helper.make_node("Softmax", ["x"], ["y"], axis=0)], [1, 4], [1, 4]),
                "mixes the samples of a batch"),
    }  # fmt: skip
    for name, (path, pattern) in cases.items():
        with RKNN(raise_errors=True) as rknn:
            rknn.config(float_dtype="float32", optimization_level=0)
            rknn.load_onnx(str(path))
            with pytest.raises(BuildError, match=pattern):
                rknn.build(do_quantization=False, rknn_batch_size=3)
            rknn.build(do_quantization=False)  # the model itself builds at its own batch
            assert rknn.package is not None, name
