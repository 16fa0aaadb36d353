"""Every frontend's graph goes through the same pipeline (issue 12, item 6): float32 and float16 builds, int8 with
each algorithm, hybrid quantization, accuracy analysis, and a run on a real agent equal to the simulator's.

Each framework gets the same small network (conv 3x3 + ReLU, max-pool, conv 1x1), written in that framework's own
file format by this test. The per-framework tests (test_frontend_*.py) compare each frontend with its reference
runtime; this one checks that nothing after loading depends on where the graph came from.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from agent_fixtures import AgentProcess
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model
from quant_fixtures import cosine, write_dataset

from rkfarm import RKNN

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:torch")]

SIZE = 32
MEAN, STD = [127.5, 127.5, 127.5], [127.5, 127.5, 127.5]


@dataclass(frozen=True)
class Source:
    framework: str
    load: Callable[[RKNN], int]


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
        "b1": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "w2": (rng.standard_normal((6, 8, 1, 1)) * 0.3).astype(np.float32),
        "b2": (rng.standard_normal(6) * 0.1).astype(np.float32),
    }


def _onnx_source(folder: Path) -> Source:
    w = _weights(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["y"], kernel_shape=[1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, SIZE // 2, SIZE // 2])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )  # fmt: skip
    path = folder / "tiny.onnx"
    onnx.save(make_model(graph, 17), str(path))
    return Source("onnx", lambda r: r.load_onnx(str(path)))


def _pytorch_source(folder: Path) -> Source:
    torch = pytest.importorskip("torch", reason="the PyTorch frontend needs torch")
    w = _weights(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 6, 1)
    ).eval()
    with torch.no_grad():
        for layer, wk, bk in ((net[0], "w1", "b1"), (net[3], "w2", "b2")):
            layer.weight.copy_(torch.from_numpy(w[wk]))
            layer.bias.copy_(torch.from_numpy(w[bk]))
    path = folder / "tiny.pt"
    torch.jit.trace(net, torch.zeros(1, 3, SIZE, SIZE)).save(str(path))
    return Source("pytorch", lambda r: r.load_pytorch(str(path), input_size_list=[[1, 3, SIZE, SIZE]]))


def _caffe_source(folder: Path) -> Source:
    pytest.importorskip("rkfarm.frontends.caffe", reason="the Caffe frontend is not in this checkout")
    path = folder / "tiny.prototxt"
    path.write_text(
        f'name: "tiny"\ninput: "data"\ninput_shape {{ dim: 1 dim: 3 dim: {SIZE} dim: {SIZE} }}\n'
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"\n'
        "  convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }\n"
        'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
        'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"\n'
        "  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
        'layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"\n'
        "  convolution_param { num_output: 6 kernel_size: 1 } }\n"
    )
    return Source("caffe", lambda r: r.load_caffe(str(path), blobs=None))  # the vendor's random-weights mode


def _darknet_source(folder: Path) -> Source:
    pytest.importorskip("rkfarm.frontends.darknet", reason="the Darknet frontend is not in this checkout")
    cfg = folder / "tiny.cfg"
    cfg.write_text(
        f"[net]\nwidth={SIZE}\nheight={SIZE}\nchannels=3\n\n"
        "[convolutional]\nfilters=8\nsize=3\nstride=1\npad=1\nactivation=relu\n\n"
        "[maxpool]\nsize=2\nstride=2\n\n"
        "[convolutional]\nfilters=6\nsize=1\nstride=1\npad=1\nactivation=linear\n"
    )
    w = _weights(3)
    weights = folder / "tiny.weights"
    # header: major, minor, revision (int32), images seen (int64 from version 0.2); then biases, weights per layer
    body = [w["b1"], w["w1"], w["b2"], w["w2"]]
    weights.write_bytes(struct.pack("<iiiq", 0, 2, 0, 0) + b"".join(a.astype("<f4").tobytes() for a in body))
    return Source("darknet", lambda r: r.load_darknet(str(cfg), str(weights)))


def _keras_tiny(seed: int) -> Any:
    tf = pytest.importorskip("tensorflow", reason="the TFLite/TensorFlow frontends need tensorflow-cpu")
    pytest.importorskip("tf2onnx", reason="the TFLite/TensorFlow frontends need tf2onnx")
    w = _weights(seed)
    x = tf.keras.Input((SIZE, SIZE, 3), batch_size=1, name="x")
    c1 = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")
    c2 = tf.keras.layers.Conv2D(6, 1)
    y = c2(tf.keras.layers.MaxPooling2D(2)(c1(x)))
    model = tf.keras.Model(x, y)
    c1.set_weights([w["w1"].transpose(2, 3, 1, 0), w["b1"]])  # OIHW -> HWIO
    c2.set_weights([w["w2"].transpose(2, 3, 1, 0), w["b2"]])
    return tf, model


def _tflite_source(folder: Path) -> Source:
    tf, model = _keras_tiny(4)
    path = folder / "tiny.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return Source("tflite", lambda r: r.load_tflite(str(path)))


def _tensorflow_source(folder: Path) -> Source:
    tf, model = _keras_tiny(5)
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(model).get_concrete_function(tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, "x"))
    frozen = convert_variables_to_constants_v2(fn)
    path = folder / "tiny.pb"
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    out = frozen.outputs[0].name.split(":")[0]
    return Source(
        "tensorflow",
        lambda r: r.load_tensorflow(str(path), inputs=["x"], input_size_list=[[1, SIZE, SIZE, 3]], outputs=[out]),
    )


MAKERS = {
    "onnx": _onnx_source, "pytorch": _pytorch_source, "caffe": _caffe_source, "darknet": _darknet_source,
    "tflite": _tflite_source, "tensorflow": _tensorflow_source,
}  # fmt: skip


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """Smooth random images: 12 for calibration, 4 others for evaluation."""
    rng = np.random.default_rng(7)

    def image() -> np.ndarray:
        coarse = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
        smooth = np.kron(coarse, np.ones((SIZE // 4, SIZE // 4, 1), np.float32))
        return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)

    calibration = [image() for _ in range(12)]
    evaluation = [image() for _ in range(4)]
    return write_dataset(tmp_path_factory.mktemp("cal"), calibration), evaluation


def _configured(source: Source, **config: Any) -> RKNN:
    rknn = RKNN(raise_errors=True)
    rknn.config(mean_values=[MEAN], std_values=[STD], target_platform="rk3588", **config)
    assert source.load(rknn) == 0
    return rknn


def _outputs(rknn: RKNN, evaluation: list[np.ndarray]) -> list[np.ndarray]:
    rknn.init_runtime()
    return [rknn.inference(inputs=[img[np.newaxis]], data_format=["nhwc"])[0] for img in evaluation]  # type: ignore[index]


@pytest.mark.parametrize("framework", list(MAKERS))
def test_every_frontend_passes_the_whole_pipeline(
    framework: str, images: tuple[Path, list[np.ndarray]], agent: AgentProcess, tmp_path: Path
) -> None:
    dataset, evaluation = images
    source = MAKERS[framework](tmp_path)

    with _configured(source, float_dtype="float32") as rknn:
        assert rknn.build(do_quantization=False) == 0
        reference = _outputs(rknn, evaluation)
    assert all(r.shape in ((1, 6, SIZE // 2, SIZE // 2), (1, SIZE // 2, SIZE // 2, 6)) for r in reference)
    assert float(np.std(reference[0])) > 0.01  # a real signal, not a constant

    with _configured(source) as rknn:  # float16, the vendor's default float type
        assert rknn.build(do_quantization=False) == 0
        half = _outputs(rknn, evaluation)
    assert min(cosine(r, h) for r, h in zip(reference, half)) > 0.9999

    for algorithm in ("normal", "mmse", "kl_divergence"):
        with _configured(source, quantized_algorithm=algorithm) as rknn:
            assert rknn.build(do_quantization=True, dataset=str(dataset)) == 0
            got = _outputs(rknn, evaluation)
            if algorithm == "normal":
                sample = tmp_path / "sample.npy"
                np.save(sample, evaluation[0][np.newaxis])
                assert rknn.accuracy_analysis(inputs=[str(sample)], output_dir=tmp_path / "snapshot") == 0
                result = rknn.analysis_result
                assert result is not None and len(result.layers) >= 3
                assert (tmp_path / "snapshot" / "error_analysis.txt").is_file()
                package = tmp_path / f"{framework}.rkfm"
                assert rknn.export_rknn(str(package)) == 0
                local = got
        worst = min(cosine(r, g) for r, g in zip(reference, got))
        assert worst > 0.98, f"{framework} int8 {algorithm}: cosine {worst:.4f}"

    step1 = tmp_path / "hybrid"
    with _configured(source) as rknn:
        assert rknn.hybrid_quantization_step1(dataset=str(dataset), output_dir=step1) == 0
    model, data, cfg = (next(step1.glob(f"*{suffix}")) for suffix in (".model", ".data", ".quantization.cfg"))
    with RKNN(raise_errors=True) as rknn:
        assert rknn.hybrid_quantization_step2(str(model), str(data), str(cfg)) == 0
        hybrid = _outputs(rknn, evaluation)
    assert min(cosine(r, h) for r, h in zip(reference, hybrid)) > 0.98

    with RKNN(raise_errors=True) as rknn:  # the int8 package, on a real agent: what the simulator computed
        assert rknn.load_rknn(str(package)) == 0
        assert rknn.init_runtime(target="rk3588", device_id=agent.address) == 0
        remote = [rknn.inference(inputs=[img[np.newaxis]], data_format=["nhwc"])[0] for img in evaluation]
    for want, have in zip(local, remote):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)
