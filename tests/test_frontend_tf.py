"""The TFLite and TensorFlow frontends: models built here with TensorFlow/Keras (``tf_models``), converted by
rkfarm and compared with the LiteRT interpreter (.tflite) or TensorFlow itself (.pb) on the same input.

Float: max abs diff <= 1e-4 * max(1, output range). int8: cosine against the reference's own int8 (or float)
output. TensorFlow's import costs seconds: every model is a module-scoped fixture, built once.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from quant_fixtures import cosine, write_dataset

from rkfarm import RKNN, graph
from rkfarm.errors import ConfigError, ModelLoadError, NotSupportedError, RkfarmError

tf = pytest.importorskip("tensorflow", reason="the TensorFlow frontends need tensorflow (pip install 'rkfarm[tflite]')")
pytest.importorskip("tf2onnx", reason="the TensorFlow frontends need tf2onnx (pip install 'rkfarm[tflite]')")
pytest.importorskip("ai_edge_litert", reason="the TFLite reference is the LiteRT interpreter (ai-edge-litert)")

import tf_models as tfm  # noqa: E402  (imports TensorFlow: only once the skips above passed)

Array = np.ndarray[Any, Any]
NORM = 127.5


def _max_err(got: Array, want: Array) -> float:
    """Max abs difference in units of the output range (at least 1), the float criterion."""
    want = np.asarray(want, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / max(1.0, float(np.ptp(want))))


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def _images(count: int, size: int, seed: int, channels: int = 3) -> list[Array]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(count):  # smooth gradients plus noise: more image-like than uniform noise
        a, b = rng.uniform(0, 255, channels), rng.uniform(0, 255, channels)
        t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
        img = a + (b - a) * t + rng.normal(0, 20, (size, size, channels))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _infer(rknn: RKNN, inputs: list[Array], data_format: str | list[str | None] | None = None) -> list[Array]:
    outputs = rknn.inference(inputs=inputs, data_format=data_format)
    assert outputs is not None, rknn.last_error
    return outputs


def _constants(model: onnx.ModelProto) -> dict[str, Array]:
    found = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def _consumer(model: onnx.ModelProto, name: str, through: Sequence[str] = ()) -> onnx.NodeProto:
    """The first node reading ``name``, looking past the ops in ``through``."""
    node = next(n for n in model.graph.node if name in n.input)
    while node.op_type in through:
        node = next(n for n in model.graph.node if node.output[0] in n.input)
    return node


def _only(outputs: dict[str, Array]) -> Array:
    (value,) = outputs.values()
    return value


# -- models -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tf")


@pytest.fixture(scope="module")
def convnet() -> Any:
    return tfm.convnet()


@pytest.fixture(scope="module")
def float_tflite(files: Path, convnet: Any) -> Path:
    return tfm.save_tflite(convnet, files / "convnet.tflite")


@pytest.fixture(scope="module")
def convnet_pb(files: Path, convnet: Any) -> tuple[Path, list[str], list[str]]:
    return tfm.keras_pb(convnet, files / "convnet.pb")


@pytest.fixture(scope="module")
def int8_tflites(files: Path, convnet: Any) -> dict[str, Path]:
    return {io: tfm.save_tflite(convnet, files / f"convnet_int8_{io}.tflite", int8=io) for io in ("uint8", "int8")}


@pytest.fixture(scope="module")
def mobilenet(files: Path) -> tuple[Path, Path, list[str], list[str]]:
    model = tfm.mobilenet_v2(160)
    tflite = tfm.save_tflite(model, files / "mobilenet_v2.tflite")
    pb, ins, outs = tfm.keras_pb(model, files / "mobilenet_v2.pb")
    return tflite, pb, ins, outs


# -- lazy import, malformed files ------------------------------------------------------------------------------
def test_not_a_flatbuffer_is_refused_without_importing_tensorflow(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"this is not a flatbuffer at all, just text\n")
    onnx_file = tmp_path / "model.tflite"
    onnx_file.write_bytes(b"\x08\x07\x12\x04test")  # starts like an ONNX ModelProto
    flatbuffer = tmp_path / "real.tflite"
    flatbuffer.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    pb = tmp_path / "graph.pb"
    pb.write_bytes(b"\x0a\x0bPlaceholder")
    script = (
        "import sys\n"
        "from rkfarm.errors import ModelLoadError, NotSupportedError\n"
        "from rkfarm.frontends.tflite import load_tflite\n"
        "from rkfarm.frontends.tensorflow import load_tensorflow\n"
        "for path in sys.argv[1:3]:\n"
        "    try:\n"
        "        load_tflite(path)\n"
        "    except ModelLoadError as exc:\n"
        "        print(exc)\n"
        "print('tensorflow imported' if 'tensorflow' in sys.modules else 'tensorflow not imported')\n"
        "sys.modules['tensorflow'] = sys.modules['tf2onnx'] = None  # as if not installed\n"
        "for load in (lambda: load_tflite(sys.argv[3]), lambda: load_tensorflow(sys.argv[4], ['x'], [[1]], ['y'])):\n"
        "    try:\n"
        "        load()\n"
        "    except NotSupportedError as exc:\n"
        "        print(exc)\n"
    )
    paths = [str(p) for p in (junk, onnx_file, flatbuffer, pb)]
    out = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:3] == [
        f"{junk}: not a TensorFlow Lite flatbuffer (no TFL3 identifier at bytes 4-8)",
        f"{onnx_file}: not a TensorFlow Lite flatbuffer (no TFL3 identifier at bytes 4-8) "
        "(it looks like an ONNX model: load it with load_onnx())",
        "tensorflow not imported",
    ], out.stdout
    assert lines[3].startswith("load_tflite() needs TensorFlow and tf2onnx: pip install 'rkfarm[tflite]'"), lines
    assert lines[4].startswith("load_tensorflow() needs TensorFlow and tf2onnx: pip install 'rkfarm[tensorflow]'")
    assert len(lines) == 5, lines


def test_damaged_files_are_one_line_errors_naming_the_file(tmp_path: Path, float_tflite: Path) -> None:
    data = float_tflite.read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"cut\.tflite: .*truncated or damaged") as info:
        RKNN(raise_errors=True).load_tflite(str(cut))
    _one_line(info.value)

    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    with pytest.raises(ModelLoadError, match=r"garbage\.pb: not a (frozen )?TensorFlow GraphDef") as info:
        RKNN(raise_errors=True).load_tensorflow(str(garbage), ["x"], [[1, 4]], ["y"])
    _one_line(info.value)

    empty = tmp_path / "empty.pb"
    empty.write_bytes(b"")
    rknn = RKNN()
    assert rknn.load_tensorflow(str(empty), ["x"], [[1, 4]], ["y"]) == -1
    assert "empty.pb: the file is empty" in _one_line(rknn.last_error or Exception())
    saved_model = tmp_path / "saved_model.pb"
    saved_model.write_bytes(b"\x08\x01\x12\x00")  # SavedModel: schema version, an empty meta graph
    with pytest.raises(ModelLoadError, match=r"saved_model\.pb: not a frozen TensorFlow GraphDef: it is a SavedModel"):
        RKNN(raise_errors=True).load_tensorflow(str(saved_model), ["x"], [[1, 4]], ["y"])
    onnx_file = tmp_path / "model.pb"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    )), str(onnx_file))  # fmt: skip
    with pytest.raises(ModelLoadError, match=r"model\.pb: not a frozen TensorFlow GraphDef: it is an ONNX model"):
        RKNN(raise_errors=True).load_tensorflow(str(onnx_file), ["x"], [[1, 4]], ["y"])


def test_missing_names_and_bad_shapes_in_a_pb(convnet_pb: tuple[Path, list[str], list[str]]) -> None:
    pb, ins, outs = convnet_pb
    rknn = RKNN(raise_errors=True)
    with pytest.raises(ModelLoadError) as info:
        rknn.load_tensorflow(str(pb), ins, [[1, 32, 32, 3]], ["Identiti"])
    assert _one_line(info.value) == f"{pb}: output 'Identiti' is not a node of the graph (close: Identity)"
    with pytest.raises(ModelLoadError, match=r"convnet\.pb: input 'image' is not a node"):
        rknn.load_tensorflow(str(pb), ["image"], [[1, 32, 32, 3]], outs)
    with pytest.raises(ModelLoadError, match=r"convnet\.pb: input_size_list needs one shape per input"):
        rknn.load_tensorflow(str(pb), ins, [], outs)
    with pytest.raises(ModelLoadError, match=r"does not fit input 'input_0' of rank 4"):
        rknn.load_tensorflow(str(pb), ins, [[32, 3]], outs)
    with pytest.raises(ModelLoadError, match=r"'Identity:3': node 'Identity' has 1 output"):
        rknn.load_tensorflow(str(pb), ins, [[1, 32, 32, 3]], ["Identity:3"])


def test_an_op_without_onnx_conversion_is_refused(tmp_path: Path) -> None:
    graph_def, outs = tfm.freeze(lambda x: tf.math.lgamma(x) + 1.0, [tf.TensorSpec([1, 4], tf.float32, name="x")])
    pb = tfm.save_pb(graph_def, tmp_path / "lgamma.pb")
    with pytest.raises(NotSupportedError, match=r"lgamma\.pb: no standard ONNX conversion for op\(s\) Lgamma") as e:
        RKNN(raise_errors=True).load_tensorflow(str(pb), ["x"], [[1, 4]], outs)
    _one_line(e.value)

    def narrow(x: Any) -> Any:  # narrow_range on an activation: no Q/DQ form, refused rather than approximated
        return tf.quantization.fake_quant_with_min_max_args(tf.nn.relu(x), 0.0, 6.0, narrow_range=True)

    graph_def, outs = tfm.freeze(narrow, [tf.TensorSpec([1, 4], tf.float32, name="x")])
    pb = tfm.save_pb(graph_def, tmp_path / "narrow.pb")
    with pytest.raises(NotSupportedError, match=r"narrow\.pb: .*FakeQuantWithMinMaxArgs.*narrow_range") as e:
        RKNN(raise_errors=True).load_tensorflow(str(pb), ["x"], [[1, 4]], outs)
    _one_line(e.value)


# -- TFLite float: NHWC in, NHWC arrays, mean/std --------------------------------------------------------------
def test_float_tflite_takes_nhwc_arrays_and_matches_litert(float_tflite: Path) -> None:
    img = _images(1, 32, seed=1)[0]
    want = _only(tfm.litert_run(float_tflite, [((img.astype(np.float32) - NORM) / NORM)[None]]))
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[[NORM] * 3], std_values=[[NORM] * 3], float_dtype="float32")
        assert rknn.load_tflite(str(float_tflite)) == 0
        assert rknn._loaded is not None
        model = rknn._loaded.model
        (value,) = graph.real_inputs(model)
        assert graph.dims_of(value) == [1, 32, 32, 3] and graph.is_nhwc(value)
        assert value.name == tfm.litert_io(float_tflite)[0][0]["name"]  # the flatbuffer's own tensor name
        assert {o.domain for o in model.opset_import} == {""} and model.opset_import[0].version == 17
        rknn.build(do_quantization=False)
        rknn.init_runtime()
        (nhwc,) = _infer(rknn, [img[None]])
        (hwc,) = _infer(rknn, [img])  # a 3-D HWC array is a batch of one
        (nchw,) = _infer(rknn, [img.transpose(2, 0, 1)[None]], data_format="nchw")
    assert nhwc.shape == want.shape == (1, 10)
    assert _max_err(nhwc, want) <= 1e-4, _max_err(nhwc, want)
    np.testing.assert_array_equal(hwc, nhwc)
    np.testing.assert_array_equal(nchw, nhwc)


def test_input_is_nchw_means_the_model_input_is_nchw(files: Path) -> None:
    path = tfm.save_tflite(tfm.nchw_convnet(16), files / "nchw.tflite")
    img = _images(1, 16, seed=2)[0]
    mean, std = [100.0, 120.0, 140.0], [50.0, 60.0, 70.0]
    x = ((img.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    want = _only(tfm.litert_run(path, [x]))
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[mean], std_values=[std], float_dtype="float32")
        rknn.load_tflite(str(path), input_is_nchw=True)
        assert rknn._loaded is not None
        (value,) = graph.real_inputs(rknn._loaded.model)
        assert graph.dims_of(value) == [1, 3, 16, 16] and not graph.is_nhwc(value)
        rknn.build(do_quantization=False)
        rknn.init_runtime()
        (from_nhwc,) = _infer(rknn, [img[None]])  # NHWC arrays (the default) are transposed to it
        (from_nchw,) = _infer(rknn, [img.transpose(2, 0, 1)[None]], data_format="nchw")
    assert _max_err(from_nhwc, want) <= 1e-4
    np.testing.assert_array_equal(from_nchw, from_nhwc)
    pb, ins, outs = tfm.keras_pb(tfm.nchw_convnet(16), files / "nchw.pb")  # the same net as a frozen graph
    (want_pb,) = tfm.tf_run(pb, {ins[0]: x}, outs)
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[mean], std_values=[std], float_dtype="float32")
        rknn.load_tensorflow(str(pb), ins, [[1, 3, 16, 16]], outs, input_is_nchw=True)
        assert rknn._loaded is not None and not graph.nhwc_inputs(rknn._loaded.model)
        rknn.build(do_quantization=False)
        rknn.init_runtime()
        (from_pb,) = _infer(rknn, [img[None]])
    assert _max_err(from_pb, want_pb) <= 1e-4
    # Without input_is_nchw the [1, 3, 16, 16] input is NHWC: 16 channels, and 3 mean values do not fit it.
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[mean], std_values=[std])
        rknn.load_tflite(str(path))
        with pytest.raises(ConfigError, match="has 16 channels"):
            rknn.build(do_quantization=False)


# -- TFLite quantized -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("io", ["uint8", "int8"])
def test_full_int8_tflite_keeps_its_quantization(int8_tflites: dict[str, Path], io: str, tmp_path: Path) -> None:
    path = int8_tflites[io]
    (detail,), (out_detail,) = tfm.litert_io(path)
    scale, zero = detail["quantization"]
    out_scale, out_zero = out_detail["quantization"]
    images = _images(4, 32, seed=3)
    dtype = np.dtype(io)
    xs = [img if io == "uint8" else (img.astype(np.int16) - 128).astype(np.int8) for img in images]
    with RKNN(raise_errors=True) as rknn:
        rknn.load_tflite(str(path))
        assert rknn._loaded is not None
        model = rknn._loaded.model
        (value,) = graph.real_inputs(model)
        assert value.type.tensor_type.elem_type == onnx.helper.np_dtype_to_tensor_dtype(dtype)
        assert graph.is_nhwc(value)
        first = _consumer(model, value.name, through=("Transpose",))
        assert first.op_type == "DequantizeLinear"  # the flatbuffer's own input parameters, not re-calibrated
        consts = _constants(model)
        assert np.isclose(float(consts[first.input[1]]), scale) and int(consts[first.input[2]]) == zero
        rknn.build(do_quantization=False)
        rknn.init_runtime()
        got = [_infer(rknn, [x])[0] for x in xs]
    wants = [_only(tfm.litert_run(path, [x[None]])) for x in xs]
    for g, w in zip(got, wants):
        assert g.dtype == w.dtype == dtype
        steps = np.abs(g.astype(np.int32) - w.astype(np.int32)).max()
        cos = cosine((g.astype(np.float32) - out_zero) * out_scale, (w.astype(np.float32) - out_zero) * out_scale)
        print(f"{io} in/out int8 tflite vs LiteRT int8: cosine {cos:.6f}, max {steps} step(s)")
        assert cos > 0.99 and steps <= 2
    with RKNN(raise_errors=True) as rknn:
        rknn.load_tflite(str(path))
        with pytest.raises(RkfarmError, match="already quantized"):
            rknn.build(do_quantization=True, dataset=str(write_dataset(tmp_path / "cal", images)))
    with RKNN(raise_errors=True) as rknn:  # mean/std make no sense for an integer input: refused, not ignored
        rknn.config(mean_values=[[NORM] * 3], std_values=[[NORM] * 3])
        rknn.load_tflite(str(path))
        with pytest.raises(ConfigError, match="not a float input"):
            rknn.build(do_quantization=False)


def test_int8_build_of_a_float_tflite(float_tflite: Path, tmp_path: Path) -> None:
    images = _images(16, 32, seed=4)
    dataset = write_dataset(tmp_path / "cal", images)
    test = _images(4, 32, seed=5)
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[[NORM] * 3], std_values=[[NORM] * 3])
        rknn.load_tflite(str(float_tflite))
        rknn.build(do_quantization=True, dataset=str(dataset))
        rknn.init_runtime()
        got = [_infer(rknn, [img])[0] for img in test]
    for img, g in zip(test, got):
        want = _only(tfm.litert_run(float_tflite, [((img.astype(np.float32) - NORM) / NORM)[None]]))
        cos = cosine(g, want)
        print(f"int8 build of the float convnet vs LiteRT float: cosine {cos:.5f}")
        assert cos > 0.98


# -- several inputs: per-input mean/std, a grayscale input, mixed data_format, .npy datasets --------------------
def test_four_inputs_with_per_input_mean_std_and_mixed_layouts(files: Path, tmp_path: Path) -> None:
    path = tfm.save_tflite(tfm.four_inputs(), files / "four.tflite")
    in_details, _ = tfm.litert_io(path)
    order = [d["name"] for d in in_details]  # the flatbuffer's input order (the converter's, not Keras')
    norm = {
        "serving_default_in_a:0": ([120.0, 110.0, 100.0], [60.0, 55.0, 50.0]),
        "serving_default_in_b:0": ([128.0], [64.0]),  # the single-channel input
        "serving_default_in_c:0": ([10.0, 20.0, 30.0], [2.0, 3.0, 4.0]),
        "serving_default_in_d:0": ([0.5, -0.5], [0.25, 0.5]),
    }
    shapes = {d["name"]: tuple(int(s) for s in d["shape"]) for d in in_details}
    rng = np.random.default_rng(6)

    def sample() -> dict[str, Array]:
        out = {}
        for name in order:
            mean, std = norm[name]
            raw = rng.normal(mean, std, shapes[name]).astype(np.float32)
            out[name] = raw
        return out

    def normalized(raw: dict[str, Array]) -> list[Array]:
        return [((raw[n] - norm[n][0]) / norm[n][1]).astype(np.float32) for n in order]

    formats = ["nhwc", "nchw", "nchw", None]
    test = [sample() for _ in range(3)]
    cal_lines = []
    for i in range(12):
        files_on_line = []
        for j, arr in enumerate(sample().values()):
            np.save(tmp_path / f"s{i}_{j}.npy", arr)  # the model's layout (NHWC), as the vendor reads .npy
            files_on_line.append(f"s{i}_{j}.npy")
        cal_lines.append(" ".join(files_on_line))
    dataset = tmp_path / "dataset.txt"
    dataset.write_text("\n".join(cal_lines) + "\n")

    def feed(raw: dict[str, Array]) -> list[Array]:
        return [raw[n].transpose(0, 3, 1, 2) if f == "nchw" else raw[n] for n, f in zip(order, formats)]

    results = {}
    for quantize in (False, True):
        with RKNN(raise_errors=True) as rknn:
            rknn.config(
                mean_values=[norm[n][0] for n in order], std_values=[norm[n][1] for n in order], float_dtype="float32"
            )
            rknn.load_tflite(str(path))
            assert rknn._loaded is not None
            assert [i.name for i in graph.real_inputs(rknn._loaded.model)] == order
            assert graph.nhwc_inputs(rknn._loaded.model) == order
            rknn.build(do_quantization=quantize, dataset=str(dataset) if quantize else None)
            rknn.init_runtime()
            results[quantize] = [_infer(rknn, feed(raw), data_format=formats) for raw in test]
    out_names = [d["name"] for d in tfm.litert_io(path)[1]]
    for raw, floats, ints in zip(test, results[False], results[True]):
        want = tfm.litert_run(path, normalized(raw))
        for name, f, q in zip(out_names, floats, ints):
            w = want[tfm._bare(name)]
            assert f.shape == w.shape
            assert _max_err(f, w) <= 1e-4, (name, _max_err(f, w))
            cos = cosine(q, w)
            print(f"four inputs, output {name}: int8 cosine vs LiteRT float {cos:.5f}")
            assert cos > 0.98


# -- TensorFlow .pb -------------------------------------------------------------------------------------------
def test_frozen_pb_matches_tensorflow(convnet_pb: tuple[Path, list[str], list[str]]) -> None:
    pb, ins, outs = convnet_pb
    img = _images(1, 32, seed=7)[0]
    x = ((img.astype(np.float32) - NORM) / NORM)[None]
    (want,) = tfm.tf_run(pb, {ins[0]: x}, outs)
    results = []
    for inputs, sizes, outputs in (
        (ins, [[1, 32, 32, 3]], outs),
        ([f"{ins[0]}:0"], [[32, 32, 3]], [f"{outs[0]}:0"]),  # tensor names, and the vendor's batch-less shape
    ):
        with RKNN(raise_errors=True) as rknn:
            rknn.config(mean_values=[[NORM] * 3], std_values=[[NORM] * 3], float_dtype="float32")
            assert rknn.load_tensorflow(str(pb), inputs, sizes, outputs) == 0
            assert rknn._loaded is not None
            model = rknn._loaded.model
            assert [i.name for i in model.graph.input] == ins and [o.name for o in model.graph.output] == outs
            assert graph.nhwc_inputs(model) == ins
            rknn.build(do_quantization=False)
            rknn.init_runtime()
            results.append(_infer(rknn, [img])[0])
    for got in results:
        assert _max_err(got, want) <= 1e-4, _max_err(got, want)


def test_pb_cut_at_an_inner_node_drops_what_is_above(files: Path, convnet: Any) -> None:
    """The vendor's SSD example: inputs=['Preprocessor/sub'] drops the decoding and resizing above it; mean/std
    do the normalization the graph did."""
    pb, outs = tfm.preprocessing_pb(convnet, files / "with_preprocessing.pb", 32)
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(pb.read_bytes())
    upstream = next(n.input[0] for n in graph_def.node if n.name == "Preprocessor/mul")  # the resized image
    img = _images(1, 32, seed=8)[0]
    (want,) = tfm.tf_run(pb, {upstream: img[None].astype(np.float32)}, outs)  # TensorFlow normalizes itself
    (want_cut,) = tfm.tf_run(pb, {"Preprocessor/sub": ((img.astype(np.float32) - NORM) / NORM)[None]}, outs)
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[[NORM] * 3], std_values=[[NORM] * 3], float_dtype="float32")
        rknn.load_tensorflow(str(pb), inputs=["Preprocessor/sub"], input_size_list=[[32, 32, 3]], outputs=outs)
        assert rknn._loaded is not None
        model = rknn._loaded.model
        (value,) = graph.real_inputs(model)
        assert value.name == "Preprocessor/sub" and graph.dims_of(value) == [1, 32, 32, 3] and graph.is_nhwc(value)
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {"Resize", "Cast", "Sub"}, ops  # nothing of the preprocessing is left
        rknn.build(do_quantization=False)
        rknn.init_runtime()
        (got,) = _infer(rknn, [img])
    assert _max_err(got, want_cut) <= 1e-4
    assert _max_err(got, want) <= 1e-4
    rknn = RKNN(raise_errors=True)
    with pytest.raises(ModelLoadError, match=r"depend on placeholder\(s\) jpeg: list them in inputs"):
        rknn.load_tensorflow(str(pb), ["Preprocessor/mul"], [[1, 32, 32, 3]], [*outs, "DecodeJpeg"])


def test_fake_quant_qat_graph_keeps_its_ranges(files: Path) -> None:
    """FakeQuant ranges become Q/DQ with TensorFlow's (nudged) grids, weights included: the same numbers."""
    pb, outs = tfm.qat_pb(files / "qat.pb")
    rng = np.random.default_rng(9)
    xs = [rng.uniform(-1.2, 1.2, (1, 16, 16, 3)).astype(np.float32) for _ in range(8)]  # beyond [-1, 1] too
    with RKNN(raise_errors=True) as rknn:
        rknn.load_tensorflow(str(pb), ["x"], [[1, 16, 16, 3]], outs)
        assert rknn._loaded is not None
        model = rknn._loaded.model
        consts = _constants(model)
        quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
        weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in consts]
        rknn.build(do_quantization=False)
        rknn.init_runtime()
        got = np.concatenate([_infer(rknn, [x])[0] for x in xs])

    # activations: input [-1, 1], relu6 [0, 6], [-4, 4], output [-3, 3]; scale = range / 255 and the zero point
    # TensorFlow nudges to, as TensorFlow itself shows it (for [-1, 1] the raw 127.5 rounds down in float32: 127,
    # where tf2onnx alone takes 128)
    def nudged_zero(lo: float, hi: float) -> int:
        low = float(tf.quantization.fake_quant_with_min_max_vars(tf.constant([-1e6]), lo, hi).numpy()[0])
        return round(-low / ((hi - lo) / 255))

    act = {(round(float(consts[n.input[1]]) * 255, 4), int(consts[n.input[2]])) for n in quantize}
    ranges = [(-1.0, 1.0), (0.0, 6.0), (-4.0, 4.0), (-3.0, 3.0)]
    assert act == {(round(hi - lo, 4), nudged_zero(lo, hi)) for lo, hi in ranges}, act
    assert nudged_zero(-1.0, 1.0) == 127
    # weights: w1 per tensor on [-0.9, 0.9]; w2 per output channel, narrow range (254 steps), on axis 0 (OIHW)
    # (w3 feeds a MatMul of a float mean: it stays float, computed in float as TensorFlow does)
    per_tensor, per_axis = sorted((np.atleast_1d(consts[n.input[1]]) for n in weight_dq), key=len)
    np.testing.assert_allclose(per_tensor, [1.8 / 255], rtol=1e-6)
    np.testing.assert_allclose(per_axis, np.linspace(0.3, 0.7, 8) * 2 / 254, rtol=1e-6)
    (per_channel,) = [n for n in weight_dq if np.ndim(consts[n.input[1]]) == 1]
    assert onnx.helper.get_attribute_value(per_channel.attribute[0]) == 0
    want = np.concatenate([tfm.tf_run(pb, {"x": x}, outs)[0] for x in xs])
    steps = np.abs(got - want) / (6 / 255)
    print(f"FakeQuant graph vs TensorFlow: cosine {cosine(got, want):.6f}, {np.mean(steps < 0.01):.1%} exact")
    assert steps.max() <= 1.01 and np.mean(steps < 0.01) >= 0.95 and cosine(got, want) > 0.999


# -- MobileNetV2, the vendor's script, the CLI ----------------------------------------------------------------
@pytest.mark.slow
def test_mobilenet_v2_tflite_and_pb_match_their_references(
    mobilenet: tuple[Path, Path, list[str], list[str]],
) -> None:
    tflite, pb, ins, outs = mobilenet
    img = _images(1, 160, seed=10)[0]
    x = ((img.astype(np.float32) - NORM) / NORM)[None]
    want_lite = _only(tfm.litert_run(tflite, [x]))
    (want_tf,) = tfm.tf_run(pb, {ins[0]: x}, outs)
    assert [d["shape_signature"][0] for d in tfm.litert_io(tflite)[0]] == [-1]  # a dynamic batch: fixed to 1
    loaders: list[tuple[Callable[[RKNN], int], Array]] = [
        (lambda r: r.load_tflite(str(tflite)), want_lite),
        (lambda r: r.load_tensorflow(str(pb), ins, [[1, 160, 160, 3]], outs), want_tf),
    ]
    for load, want in loaders:
        with RKNN(raise_errors=True) as rknn:
            rknn.config(mean_values=[[NORM] * 3], std_values=[[NORM] * 3], float_dtype="float32")
            load(rknn)
            assert rknn._loaded is not None
            assert graph.dims_of(rknn._loaded.model.graph.input[0]) == [1, 160, 160, 3]
            rknn.build(do_quantization=False)
            rknn.init_runtime()
            (got,) = _infer(rknn, [img])
        print(f"MobileNetV2 float32 vs reference: max error {_max_err(got, want):.2e} of the output range")
        assert got.shape == (1, 100) and _max_err(got, want) <= 1e-4


@pytest.mark.slow
def test_vendor_style_tflite_script(mobilenet: tuple[Path, Path, list[str], list[str]], tmp_path: Path) -> None:
    """The vendor's tflite/mobilenet_v1 example flow, only the import changed; int8 against LiteRT's float."""
    tflite = mobilenet[0]
    dataset = write_dataset(tmp_path / "cal", _images(16, 160, seed=11))
    img = _images(1, 160, seed=12)[0]
    want = _only(tfm.litert_run(tflite, [((img.astype(np.float32) - NORM) / NORM)[None]]))

    rknn = RKNN(verbose=False)
    assert rknn.config(mean_values=[NORM, NORM, NORM], std_values=[NORM, NORM, NORM], target_platform="rk3588") == 0
    assert rknn.load_tflite(model=str(tflite)) == 0
    assert rknn.build(do_quantization=True, dataset=str(dataset)) == 0
    assert rknn.export_rknn(str(tmp_path / "mobilenet_v2.rknn")) == 0
    assert rknn.init_runtime() == 0
    outputs = rknn.inference(inputs=[img], data_format=["nhwc"])
    rknn.release()
    assert outputs is not None
    cos = cosine(outputs[0], want)
    print(f"MobileNetV2 int8 (16 calibration images) cosine vs LiteRT float: {cos:.4f}")
    assert cos > 0.95


@pytest.mark.slow
def test_vendor_style_pb_script_cut_at_preprocessor(files: Path, convnet: Any, tmp_path: Path) -> None:
    """The vendor's ssd_mobilenet_v1 example flow: a frozen .pb cut at Preprocessor/sub, flat mean/std doing the
    normalization that was cut off, int8 build, export, inference on NHWC images; only the import changed."""
    pb, outs = tfm.preprocessing_pb(convnet, tmp_path / "ssd_like.pb", 32)
    dataset = write_dataset(tmp_path / "cal", _images(16, 32, seed=21))
    img = _images(1, 32, seed=22)[0]
    (want,) = tfm.tf_run(pb, {"Preprocessor/sub": ((img.astype(np.float32) - NORM) / NORM)[None]}, outs)

    rknn = RKNN(verbose=False)
    assert rknn.config(mean_values=[NORM, NORM, NORM], std_values=[NORM, NORM, NORM], target_platform="rk3588") == 0
    assert rknn.load_tensorflow(tf_pb=str(pb), inputs=["Preprocessor/sub"], outputs=outs,
                                input_size_list=[[32, 32, 3]]) == 0  # fmt: skip
    assert rknn.build(do_quantization=True, dataset=str(dataset)) == 0
    assert rknn.export_rknn(str(tmp_path / "ssd_like.rknn")) == 0
    assert rknn.init_runtime() == 0
    outputs = rknn.inference(inputs=[img])
    assert rknn.package is not None and rknn.package.header.quantization.quantized
    rknn.release()
    assert outputs is not None
    cos = cosine(outputs[0], want)
    assert not np.allclose(outputs[0], want, rtol=0, atol=1e-7)  # int8: close, not the float result itself
    print(f"cut .pb int8 (16 calibration images) cosine vs TensorFlow float: {cos:.4f}")
    assert cos > 0.98


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rkfarm.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_builds_tflite_and_pb(
    float_tflite: Path, convnet_pb: tuple[Path, list[str], list[str]], tmp_path: Path
) -> None:
    pb, ins, outs = convnet_pb
    runs: Sequence[tuple[str, list[str]]] = (
        ("lite.rkfm", ["build", str(float_tflite), "--mean", "127.5,127.5,127.5", "--std", "127.5,127.5,127.5"]),
        ("pb.rkfm", ["build", str(pb), "--inputs", *ins, "--outputs", *outs, "--input-size", "1,32,32,3"]),
    )
    for name, args in runs:
        out = tmp_path / name
        done = _run_cli(*args, "-o", str(out))
        assert done.returncode == 0, done.stderr
        assert out.stat().st_size > 0
        assert "I0000" not in done.stderr and "oneDNN" not in done.stderr, done.stderr  # TensorFlow kept quiet
    done = _run_cli("build", str(pb), "--inputs", *ins, "--outputs", "nope", "--input-size", "1,32,32,3")
    assert done.returncode != 0
    assert "output 'nope' is not a node of the graph" in done.stderr and "Traceback" not in done.stderr
