"""TensorFlow and TFLite models for the frontend tests, built here with TensorFlow/Keras (nothing downloaded).

Every builder writes a file and returns its path. Import this module only after TensorFlow is known to be
importable (``pytest.importorskip``): it imports TensorFlow and Keras at the top.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

Array = npt.NDArray[Any]
layers = keras.layers


# -- Keras models ----------------------------------------------------------------------------------------------
def convnet(size: int = 32, channels: int = 3, seed: int = 0, logits: int = 10) -> keras.Model:
    """A small image net with the usual layers: conv+BN+ReLU6, depthwise, a residual add, pooling, concat, dense."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, channels), batch_size=1, name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inp)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    y = layers.DepthwiseConv2D(3, padding="same")(x)
    y = layers.Conv2D(16, 1, activation="relu")(y)
    x = layers.Add()([x, y])
    a = layers.MaxPooling2D(2)(x)
    b = layers.AveragePooling2D(2)(layers.Conv2D(8, 3, padding="same", activation="sigmoid")(x))
    x = layers.Concatenate()([a, b])
    x = layers.Conv2D(24, 3, padding="valid", activation="swish")(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(logits, name="logits")(x)
    model = keras.Model(inp, out, name="convnet")
    _randomize_batchnorm(model, seed)
    return model


def nchw_convnet(size: int = 16, seed: int = 1) -> keras.Model:
    """A net whose input is NCHW ([1, 3, H, W]): it transposes to NHWC itself (as models ported from PyTorch do)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((3, size, size), batch_size=1, name="chw")
    x = layers.Permute((2, 3, 1))(inp)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    out = layers.Dense(6)(x)
    return keras.Model(inp, out, name="nchw_convnet")


def four_inputs(seed: int = 2) -> keras.Model:
    """Four image inputs of different sizes and channels (one grayscale), two outputs."""
    keras.utils.set_random_seed(seed)
    a = keras.Input((16, 16, 3), batch_size=1, name="in_a")
    b = keras.Input((16, 16, 1), batch_size=1, name="in_b")
    c = keras.Input((8, 8, 3), batch_size=1, name="in_c")
    d = keras.Input((8, 8, 2), batch_size=1, name="in_d")
    fa = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(a)
    fb = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(b)
    fc = layers.Conv2D(8, 3, padding="same", activation="relu")(c)
    fd = layers.Conv2D(8, 1, activation="tanh")(d)
    x = layers.Concatenate()([layers.Add()([fa, fb]), fc, fd])
    x = layers.Conv2D(12, 3, padding="same", activation="relu")(x)
    map_out = layers.Conv2D(4, 1, name="map")(x)
    vec_out = layers.Dense(5, name="vec")(layers.GlobalAveragePooling2D()(x))
    return keras.Model([a, b, c, d], [map_out, vec_out], name="four_inputs")


def mobilenet_v2(size: int = 160, seed: int = 3) -> keras.Model:
    """Keras' MobileNetV2 (random weights, logits out)."""
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), weights=None, classes=100, classifier_activation=None
    )
    _randomize_batchnorm(model, seed)
    return model


def _randomize_batchnorm(model: keras.Model, seed: int) -> None:
    """Give BatchNorm layers trained-looking parameters (so folding them is tested) and the statistics of their
    inputs (so that a deep random net still answers differently to different images)."""
    rng = np.random.default_rng(seed)
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    for layer in norms:
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([
            rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
            rng.uniform(-0.2, 0.2, beta.shape).astype(np.float32),
            mean,
            var,
        ])  # fmt: skip
        layer.momentum = 0.0  # one training-mode pass: the moving statistics become this batch's
    batch = [rng.uniform(-1, 1, (i.shape[0] or 8, *i.shape[1:])).astype(np.float32) for i in model.inputs]
    model(batch if len(batch) > 1 else batch[0], training=True)
    for layer in norms:
        layer.momentum = 0.99


# -- files --------------------------------------------------------------------------------------------------
def representative(model: keras.Model, count: int = 16, seed: int = 5) -> Callable[[], Iterator[list[Array]]]:
    """Calibration samples for the TFLite converter: random images in [-1, 1] for every input."""
    shapes = [tuple(int(d) for d in i.shape[1:]) for i in model.inputs]

    def gen() -> Iterator[list[Array]]:
        rng = np.random.default_rng(seed)
        for _ in range(count):
            yield [rng.uniform(-1, 1, (1, *s)).astype(np.float32) for s in shapes]

    return gen


def save_tflite(model: keras.Model, path: Path, int8: str | None = None, samples: int = 16) -> Path:
    """A .tflite of ``model``: float, or full-integer int8 with ``int8`` the in/out type ('uint8', 'int8' or
    'float32': float in/out around the int8 body)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8 is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative(model, samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[int8]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    with warnings.catch_warnings():  # "statistics for quantized inputs were expected": the calibration gives them
        warnings.simplefilter("ignore", UserWarning)
        path.write_bytes(converter.convert())
    return path


def freeze(fn: Any, specs: Sequence[tf.TensorSpec]) -> tuple[tf.compat.v1.GraphDef, list[str]]:
    """The frozen GraphDef of a tf.function at ``specs``, and the names of its output nodes."""
    concrete = tf.function(fn).get_concrete_function(*specs)
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    return graph_def, [t.name.split(":")[0] for t in frozen.outputs]


def save_pb(graph_def: tf.compat.v1.GraphDef, path: Path) -> Path:
    path.write_bytes(graph_def.SerializeToString())
    return path


def keras_pb(model: keras.Model, path: Path, names: Sequence[str] | None = None) -> tuple[Path, list[str], list[str]]:
    """A frozen .pb of a Keras model; returns the file, its input names and its output node names."""
    names = list(names or [f"input_{i}" for i in range(len(model.inputs))])
    specs = [tf.TensorSpec(i.shape, tf.float32, name=n) for i, n in zip(model.inputs, names)]

    def fn(*xs: tf.Tensor) -> Any:
        return model(list(xs) if len(xs) > 1 else xs[0], training=False)

    graph_def, outputs = freeze(fn, specs)
    return save_pb(graph_def, path), names, outputs


def preprocessing_pb(model: keras.Model, path: Path, size: int) -> tuple[Path, list[str]]:
    """A .pb taking a JPEG string: decode, resize, then ``Preprocessor/sub`` = x/127.5 - 1 feeds ``model``.

    Like the vendor's SSD-MobileNet graph, the part above ``Preprocessor/sub`` is what a converter cannot take
    (string decoding): load it cut at that node."""

    def fn(jpeg: tf.Tensor) -> Any:
        image = tf.io.decode_jpeg(jpeg, channels=3)
        image = tf.image.resize(tf.cast(image, tf.float32)[tf.newaxis], (size, size))
        with tf.name_scope("Preprocessor"):
            scaled = tf.multiply(image, 1.0 / 127.5, name="mul")
            normalized = tf.subtract(scaled, 1.0, name="sub")
        return model(normalized, training=False)

    graph_def, outputs = freeze(fn, [tf.TensorSpec([], tf.string, name="jpeg")])
    return save_pb(graph_def, path), outputs


def qat_pb(path: Path, seed: int = 4) -> tuple[Path, list[str]]:
    """A QAT-style graph (8 bits): FakeQuantWithMinMaxVars on the input and the activations, and on the weights
    as the TF Model Optimization toolkit puts them: per tensor, and per channel with ``narrow_range``."""
    rng = np.random.default_rng(seed)
    w1 = tf.Variable(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))
    b1 = tf.Variable(rng.normal(0, 0.1, (8,)).astype(np.float32))
    w2 = tf.Variable(rng.normal(0, 0.2, (3, 3, 8, 8)).astype(np.float32))
    w3 = tf.Variable(rng.normal(0, 0.2, (8, 4)).astype(np.float32))
    w2_range = tf.Variable(np.linspace(0.3, 0.7, 8).astype(np.float32))
    ranges = {name: (tf.Variable(lo), tf.Variable(hi)) for name, lo, hi in (
        ("in", -1.0, 1.0), ("w1", -0.9, 0.9), ("a1", 0.0, 6.0), ("a2", -4.0, 4.0), ("w3", -0.6, 0.5),
        ("out", -3.0, 3.0),
    )}  # fmt: skip

    def fq(x: tf.Tensor, name: str, narrow: bool = False) -> tf.Tensor:
        lo, hi = ranges[name]
        return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, 8, narrow, name=f"fq_{name}")

    def fn(x: tf.Tensor) -> tf.Tensor:
        x = fq(x, "in")
        x = tf.nn.relu6(tf.nn.conv2d(x, fq(w1, "w1"), 1, "SAME") + b1)
        x = fq(x, "a1")
        w2q = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            w2, -w2_range, w2_range, num_bits=8, narrow_range=True, name="fq_w2"
        )
        x = fq(tf.nn.conv2d(x, w2q, 2, "SAME"), "a2")
        x = tf.reduce_mean(x, axis=[1, 2])
        return tf.identity(fq(tf.matmul(x, fq(w3, "w3", narrow=True)), "out"), name="scores")

    graph_def, outputs = freeze(fn, [tf.TensorSpec([1, 16, 16, 3], tf.float32, name="x")])
    return save_pb(graph_def, path), outputs


# -- references -----------------------------------------------------------------------------------------------
def litert_run(path: Path, feeds: dict[str, Array] | Sequence[Array]) -> dict[str, Array]:
    """Run a .tflite with the LiteRT interpreter; inputs by name (or in order), outputs by name."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()
    values = [feeds[_bare(d["name"])] for d in details] if isinstance(feeds, dict) else list(feeds)
    for detail, value in zip(details, values):
        interpreter.set_tensor(detail["index"], np.asarray(value, dtype=detail["dtype"]))
    interpreter.invoke()
    return {_bare(d["name"]): interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}


def litert_io(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return interpreter.get_input_details(), interpreter.get_output_details()


def tf_run(path: Path, feeds: dict[str, Array], outputs: Sequence[str]) -> list[Array]:
    """Run a frozen .pb with TensorFlow itself (a v1 Session: any tensor may be fed, as a cut does)."""
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    with tf.Graph().as_default() as g:
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            fetched = sess.run([f"{o}:0" for o in outputs], {f"{k}:0": v for k, v in feeds.items()})
    return [np.asarray(v) for v in fetched]


def _bare(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def jpeg_bytes(image: Array) -> bytes:
    return bytes(tf.io.encode_jpeg(tf.constant(image, tf.uint8), quality=95).numpy())
