"""The Darknet frontend: .cfg + .weights to ONNX, checked against a torch re-implementation of darknet.

``darknet_nets`` writes each test model (cfg text, weights bytes) and its torch reference; rkfarm's ONNX runs
in onnxruntime on the same input and every raw head must match within 1e-4 of its range. Small nets cover
every layer kind and option; yolov3-tiny, yolov4-tiny and yolov3 (416x416) are the published layer layouts.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from quant_fixtures import scenes, write_dataset

from rkfarm import RKNN
from rkfarm.errors import ModelLoadError, NotSupportedError, RkfarmError
from rkfarm.frontends import detect

torch = pytest.importorskip("torch", reason="the darknet tests' reference is written in torch")
ort = pytest.importorskip("onnxruntime")

import darknet_nets as dn  # noqa: E402  (needs torch)

from rkfarm.frontends.darknet import load_darknet  # noqa: E402


def run_onnx(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, {"data": x})]


def assert_matches(got: list[np.ndarray], want: list[np.ndarray], what: str) -> list[float]:
    """Each raw head within 1e-4 * max(1, range) of the reference; returns the max abs diffs."""
    assert len(got) == len(want), what
    diffs = []
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"{what} output {k}"
        diff = float(np.abs(g.astype(np.float64) - w).max())
        tol = 1e-4 * max(1.0, float(w.max() - w.min()))
        assert diff <= tol, f"{what} output {k}: max abs diff {diff:.3g} > {tol:.3g}"
        diffs.append(diff)
    return diffs


def image_input(net: dn.Net, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, net.channels, net.height, net.width), dtype=np.float32)


# -- small nets: every layer and option --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "messy", "header"),
    [
        ("zoo", True, {"major": 0, "minor": 2, "revision": 5}),  # seen as int64
        ("classifier", False, {"major": 0, "minor": 1, "revision": 0}),  # seen as int32
        ("gap", False, {"major": 1, "minor": 0, "revision": 0}),  # 1*10 + 0 >= 2: int64
    ],
)
def test_small_nets_match_torch(tmp_path: Path, name: str, messy: bool, header: dict[str, int]) -> None:
    net = dn.NETS[name]()
    cfg, weights, ref = dn.write(tmp_path, net, seed=3, messy=messy, **header)
    loaded = load_darknet(cfg, weights)
    x = image_input(net)
    assert_matches(run_onnx(loaded.model, x), ref(x), name)


def test_graph_is_standard_onnx_with_raw_heads(tmp_path: Path) -> None:
    net = dn.zoo()
    cfg, weights, _ = dn.write(tmp_path, net, seed=1)
    loaded = load_darknet(str(cfg), str(weights))
    model = loaded.model
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert loaded.framework == "darknet" and loaded.source_name == "zoo.cfg"
    (inp,) = model.graph.input
    assert inp.name == "data" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, 26, 30]
    shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    # the tensors the yolo, region and yolo layers read, in that order, undecoded
    assert shapes == {"conv_19": [1, 16, 12, 15], "conv_22": [1, 14, 9, 11], "conv_26": [1, 16, 5, 6]}
    assert list(shapes) == ["conv_19", "conv_22", "conv_26"]
    assert not {"BatchNormalization", "Mish"} & {n.op_type for n in model.graph.node}
    again = load_darknet(cfg, weights)
    assert again.source_sha256 == loaded.source_sha256
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    assert load_darknet(cfg, weights).source_sha256 != loaded.source_sha256
    assert detect(cfg).name == "darknet"


def test_batch_norm_is_alexeyabs_sqrt_of_var_plus_epsilon(tmp_path: Path) -> None:
    """(x - mean) / sqrt(var + 1e-5), not pjreddie's sqrt(var) + 1e-6: with tiny variances the two differ a lot."""
    net = dn.Net("tinyvar", 8, 8, 2, [dn.conv(4, 3, act="linear")])
    ref = dn.Reference(net, seed=0)
    ref.params[0]["rolling_variance"] = torch.tensor([1e-8, 4e-6, 1e-4, 0.25], dtype=torch.float64)
    cfg = tmp_path / "tinyvar.cfg"
    cfg.write_text(dn.render_cfg(net))
    weights = tmp_path / "tinyvar.weights"
    weights.write_bytes(ref.weights_bytes())
    x = image_input(net)
    want = ref(x)
    assert_matches(run_onnx(load_darknet(cfg, weights).model, x), want, "tinyvar")
    # the other convention is far off, so the check above can tell them apart
    p = ref.params[0]
    conv = torch.nn.functional.conv2d(torch.from_numpy(x).double(), p["weights"], None, 1, 1)
    other = (conv - p["rolling_mean"].view(1, -1, 1, 1)) / (torch.sqrt(p["rolling_variance"].view(1, -1, 1, 1)) + 1e-6)
    other = other * p["scales"].view(1, -1, 1, 1) + p["biases"].view(1, -1, 1, 1)
    assert float(np.abs(other.numpy() - want[0]).max()) > 1e-2 * float(want[0].max() - want[0].min())


# -- the published architectures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def yolov3_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dn.Reference]:
    cfg, weights, ref = dn.write(tmp_path_factory.mktemp("yolov3-tiny"), dn.yolov3_tiny(), seed=11)
    return cfg, weights, ref


@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov4-tiny"])
def test_tiny_yolos_match_torch(
    name: str, tmp_path: Path, yolov3_tiny: tuple[Path, Path, dn.Reference], capsys: pytest.CaptureFixture[str]
) -> None:
    net = dn.NETS[name]()
    cfg, weights, ref = yolov3_tiny if name == "yolov3-tiny" else dn.write(tmp_path, net, seed=12)
    loaded = load_darknet(cfg, weights)
    assert [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in loaded.model.graph.output] == [
        [1, 255, 13, 13], [1, 255, 26, 26],
    ]  # fmt: skip
    x = image_input(net, seed=4)
    diffs = assert_matches(run_onnx(loaded.model, x), ref(x), name)
    with capsys.disabled():
        print(f"\n{name}: max abs diff per head vs torch {[f'{d:.2e}' for d in diffs]}")


@pytest.mark.slow
def test_yolov3_416_matches_torch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = dn.yolov3()
    cfg, weights, ref = dn.write(tmp_path, net, seed=13)
    started = time.perf_counter()
    loaded = load_darknet(cfg, weights)
    seconds = time.perf_counter() - started
    shapes = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in loaded.model.graph.output]
    assert shapes == [[1, 255, 13, 13], [1, 255, 26, 26], [1, 255, 52, 52]]
    x = image_input(net, seed=5)
    diffs = assert_matches(run_onnx(loaded.model, x), ref(x), "yolov3")
    with capsys.disabled():
        print(f"\nyolov3 416 ({weights.stat().st_size / 1e6:.0f} MB of weights): load_darknet {seconds:.2f} s; "
              f"max abs diff per head vs torch {[f'{d:.2e}' for d in diffs]}")  # fmt: skip


VENDOR_SCRIPT = """\
    import sys

    import numpy as np
    from PIL import Image

    from rkfarm.api import RKNN

    CFG, WEIGHTS, DATASET, IMAGE, RKNN_PATH, OUT = sys.argv[1:7]

    rknn = RKNN(verbose=True)
    print('--> Config model')
    ret = rknn.config(mean_values=[0, 0, 0], std_values=[255, 255, 255], target_platform='rk3588')
    assert ret == 0, 'config failed'
    print('--> Loading model')
    ret = rknn.load_darknet(model=CFG, weight=WEIGHTS)
    assert ret == 0, 'load_darknet failed'
    print('--> Building model')
    ret = rknn.build(do_quantization=True, dataset=DATASET)
    assert ret == 0, 'build failed'
    ret = rknn.export_rknn(RKNN_PATH)
    assert ret == 0, 'export_rknn failed'
    print('--> Init runtime environment')
    ret = rknn.init_runtime()
    assert ret == 0, 'init_runtime failed'
    img = np.asarray(Image.open(IMAGE).convert('RGB'))
    outputs = rknn.inference(inputs=[img])
    np.savez(OUT, *outputs)
    rknn.release()
    print('done')
"""


@pytest.mark.slow
def test_vendor_style_script_int8(
    tmp_path: Path, yolov3_tiny: tuple[Path, Path, dn.Reference], capsys: pytest.CaptureFixture[str]
) -> None:
    """The vendor's yolov3 example flow with the rkfarm import: int8 in the simulator against torch's float."""
    cfg, weights, ref = yolov3_tiny
    dataset = write_dataset(tmp_path / "cal", scenes(8, seed=21, size=416))
    (image,) = scenes(1, seed=22, size=416)
    image_path = tmp_path / "test.png"
    from PIL import Image

    Image.fromarray(image).save(image_path)
    script = tmp_path / "yolov3_tiny.py"
    script.write_text(textwrap.dedent(VENDOR_SCRIPT))
    out = tmp_path / "outputs.npz"
    proc = subprocess.run(
        [sys.executable, str(script), str(cfg), str(weights), str(dataset), str(image_path),
         str(tmp_path / "yolov3-tiny.rknn"), str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done" in proc.stdout
    assert (tmp_path / "yolov3-tiny.rknn").read_bytes().startswith(b"\x89RKF")
    with np.load(out) as saved:
        got = [saved[k] for k in sorted(saved.files, key=lambda k: int(k.split("_")[1]))]
    x = (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    want = ref(x)
    cosines = []
    for g, w in zip(got, want):
        g64, w64 = g.astype(np.float64).ravel(), w.ravel()
        assert g64.size == w64.size
        cosines.append(float(g64 @ w64 / (np.linalg.norm(g64) * np.linalg.norm(w64))))
    with capsys.disabled():
        print(f"\nyolov3-tiny int8 (8 calibration images) cosine vs torch float per head: "
              f"{[f'{c:.4f}' for c in cosines]}")  # fmt: skip
    assert len(cosines) == 2 and min(cosines) > 0.98


@pytest.mark.slow
def test_cli_builds_yolov3_tiny(tmp_path: Path, yolov3_tiny: tuple[Path, Path, dn.Reference]) -> None:
    cfg, weights, _ = yolov3_tiny
    out = tmp_path / "out.rkfm"
    proc = subprocess.run(
        [sys.executable, "-m", "rkfarm.cli", "build", str(cfg), "--weights", str(weights), "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes().startswith(b"\x89RKF")
    missing = subprocess.run(
        [sys.executable, "-m", "rkfarm.cli", "build", str(cfg), "-o", str(out)], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert missing.returncode != 0 and "needs --weights" in missing.stderr


# -- malformed inputs: one-line errors naming the file and what is wrong ----------------------------------
def _one_line(exc: pytest.ExceptionInfo[Any]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_weights_too_short_names_file_layer_and_bytes(
    yolov3_tiny: tuple[Path, Path, dn.Reference], tmp_path: Path
) -> None:
    cfg, weights, _ = yolov3_tiny
    data = weights.read_bytes()
    short = tmp_path / "short.weights"
    short.write_bytes(data[:-1000])
    with pytest.raises(ModelLoadError) as exc:
        load_darknet(cfg, short)
    message = _one_line(exc)
    line = max(i for i, text in enumerate(cfg.read_text().splitlines()) if text == "[convolutional]") + 1
    assert str(short) in message and "too short for yolov3-tiny.cfg" in message
    assert f"layer 22 [convolutional] (line {line})" in message
    need = 4 * (255 + 255 * 256)
    assert f"needs {need} bytes" in message and f"{need - 1000} are left" in message
    header_only = tmp_path / "header.weights"
    header_only.write_bytes(data[:20])
    with pytest.raises(ModelLoadError, match=r"layer 0 \[convolutional\] \(line \d+\) needs 1984 bytes at offset 20"):
        load_darknet(cfg, header_only)
    tiny = tmp_path / "tiny.weights"
    tiny.write_bytes(data[:10])
    with pytest.raises(ModelLoadError, match=r"tiny\.weights: 10 bytes is too short for a darknet \.weights header"):
        load_darknet(cfg, tiny)


def test_weights_too_long_or_of_another_cfg(yolov3_tiny: tuple[Path, Path, dn.Reference], tmp_path: Path) -> None:
    cfg, weights, _ = yolov3_tiny
    long = tmp_path / "long.weights"
    long.write_bytes(weights.read_bytes() + b"\0" * 8)
    with pytest.raises(ModelLoadError) as exc:
        load_darknet(cfg, long)
    message = _one_line(exc)
    assert str(long) in message and "8 bytes left over after layer 22 [convolutional]" in message
    assert "belong to another .cfg" in message
    other_cfg, other_weights, _ = dn.write(tmp_path, dn.yolov4_tiny(), seed=2)
    with pytest.raises(ModelLoadError, match=r"yolov4-tiny\.weights: .*yolov3-tiny\.cfg"):
        load_darknet(cfg, other_weights)
    with pytest.raises(ModelLoadError, match=r"yolov3-tiny\.weights: .*yolov4-tiny\.cfg"):
        load_darknet(other_cfg, weights)
    rknn = RKNN()
    assert rknn.load_darknet(str(cfg), str(long)) == -1
    assert "8 bytes left over" in str(rknn.last_error)


BASE = """\
[net]
width=8
height=8
channels=3

[convolutional]
filters=6
size=3
pad=1
activation=leaky

[yolo]
mask=0
classes=1
num=1
"""


def _base_weights(tmp_path: Path) -> Path:
    """Weights for BASE's one convolution (6 biases, 6x3x3x3 weights)."""
    path = tmp_path / "base.weights"
    path.write_bytes(np.array([0, 2, 0, 0, 0], np.int32).tobytes() + np.zeros(6 + 162, np.float32).tobytes())
    return path


def test_base_cfg_loads(tmp_path: Path) -> None:
    cfg = tmp_path / "base.cfg"
    cfg.write_text(BASE.replace("classes=1", "classes=1  # 6 channels: 1 anchor x (1 class + 5)"))
    assert load_darknet(cfg, _base_weights(tmp_path)).model.graph.output[0].name == "conv_0"


@pytest.mark.parametrize(
    ("edit", "error", "pattern"),
    [
        (("[yolo]", "[foo]"), ModelLoadError, r"line 12: unknown section \[foo\]"),
        (("[yolo]", "[lstm]"), NotSupportedError, r"line 12: darknet layer \[lstm\] is not supported"),
        (("size=3", "size 3"), ModelLoadError, r"line 8: expected key=value or \[section\], got 'size 3'"),
        (("[yolo]", "[yolo"), ModelLoadError, r"line 12: a section header is \[name\]"),
        (("activation=leaky", "activation=elu"), NotSupportedError, r"line 10: \[convolutional\] activation=elu"),
        (("activation=leaky", "activation=Leaky"), NotSupportedError, r"line 10: .*activation=Leaky"),
        (("size=3", "size=3.5"), ModelLoadError, r"line 8: \[convolutional\] size=3\.5 is not an integer"),
        (("size=3", "size=3\nsize=5"), ModelLoadError, r"line 9: \[convolutional\] sets size= a second time"),
        (("size=3", "size=3\nfrobnicate=1"), NotSupportedError, r"line 9: \[convolutional\] frobnicate= is not a key"),
        (("size=3", "size=3\ndilation=2"), NotSupportedError, r"line 9: \[convolutional\] dilation=2"),
        (("size=3", "size=3\nstride_x=2"), NotSupportedError, r"line 9: .*stride_x= different from stride="),
        (("size=3", "size=3\ndontload=1"), NotSupportedError, r"line 9: .*dontload=1"),
        (("width=8\n", ""), ModelLoadError, r"line 1: \[net\] needs width="),
        (("[net]", "[convolutional]"), ModelLoadError, r"line 1: the first section must be \[net\]"),
        (("[net]\n", "filters=2\n[net]\n"), ModelLoadError, r"line 1: filters= comes before the first \[section\]"),
        (("classes=1", "classes=80"), ModelLoadError, r"line 12: \[yolo\] reads 6 channels but 1 anchors"),
        (("[yolo]", "[route]\nlayers=-2\n[yolo]"), ModelLoadError, r"line 13: \[route\] layers=-2 is layer -1"),
        (("[yolo]", "[route]\nlayers=1\n[yolo]"), ModelLoadError, r"layers=1 is layer 1; layer 1 can only read"),
        (("[yolo]", "[shortcut]\nfrom=-3\n[yolo]"), ModelLoadError, r"line 13: \[shortcut\] from=-3 is layer -2"),
        (("mask=0\nclasses=1\nnum=1\n", "mask=0\nclasses=1\n\n[conv]\nfilters=2\n"), NotSupportedError,
         r"layer 2 \[conv\] reads the output of layer 1 \[yolo\]"),
        (("[yolo]", "[maxpool]\nsize=2\nstride=2\nmaxpool_depth=1\n[yolo]"), NotSupportedError,
         r"line 15: \[maxpool\] maxpool_depth=1"),
        (("[yolo]", "[softmax]\ntree=data/9k.tree\n[yolo]"), NotSupportedError, r"line 13: \[softmax\] tree="),
        (("[yolo]", "[upsample]\nstride=-2\n[yolo]"), NotSupportedError, r"\[upsample\] stride=-2"),
        (("[yolo]", "[cost]\n[yolo]"), NotSupportedError, r"line 13: layer 2 \[yolo\] reads .*the training loss"),
    ],
)  # fmt: skip
def test_malformed_cfg(tmp_path: Path, edit: tuple[str, str], error: type[Exception], pattern: str) -> None:
    cfg = tmp_path / "bad.cfg"
    assert edit[0] in BASE
    cfg.write_text(BASE.replace(edit[0], edit[1], 1))
    with pytest.raises(error) as exc:
        load_darknet(cfg, _base_weights(tmp_path))
    message = _one_line(exc)
    assert message.startswith(f"{cfg}: "), message
    assert exc.match(pattern)


def test_shortcut_and_route_shape_mismatches_are_refused(tmp_path: Path) -> None:
    head = "[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=4\nsize=3\npad=1\n"
    cases = {
        "[convolutional]\nfilters=6\nsize=1\n[shortcut]\nfrom=-2\n": r"line 13: \[shortcut\] adds layer 0 \(4x8x8\) to",
        "[maxpool]\nsize=2\nstride=2\n[route]\nlayers=-1,-2\n": r"line 12: \[route\] layer 0 is 4x8x8 but layer 1",
        "[route]\nlayers=-1\ngroups=3\n": r"line 11: \[route\] groups=3 does not divide the 4 channels",
    }
    for tail, pattern in cases.items():
        cfg = tmp_path / "mismatch.cfg"
        cfg.write_text(head + tail)
        with pytest.raises(RkfarmError, match=pattern):
            load_darknet(cfg, _base_weights(tmp_path))


def test_bad_files(tmp_path: Path, yolov3_tiny: tuple[Path, Path, dn.Reference]) -> None:
    cfg, weights, _ = yolov3_tiny
    with pytest.raises(ModelLoadError, match=r"absent\.weights: no such file"):
        load_darknet(cfg, tmp_path / "absent.weights")
    with pytest.raises(ModelLoadError, match=r"yolov3-tiny\.weights: not a darknet \.cfg text file"):
        load_darknet(weights, weights)  # the two files swapped
    transposed = tmp_path / "old.weights"
    transposed.write_bytes(np.array([1001, 0, 0, 0], np.int32).tobytes())
    with pytest.raises(NotSupportedError, match=r"old\.weights: version 1001\.0\.0 marks an old transposed"):
        load_darknet(cfg, transposed)
    nonsense = tmp_path / "text.weights"
    nonsense.write_bytes(np.array([-5, 0, 0, 0, 0], np.int32).tobytes())
    with pytest.raises(ModelLoadError, match=r"text\.weights: not a darknet \.weights file"):
        load_darknet(cfg, nonsense)
    nan = tmp_path / "nan.weights"
    data = bytearray(weights.read_bytes())
    data[24:28] = np.array([np.nan], np.float32).tobytes()
    nan.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"nan\.weights: layer 0 \[convolutional\] .*biases holds NaN"):
        load_darknet(cfg, nan)
    negative = tmp_path / "negative.weights"
    data = bytearray(weights.read_bytes())
    data[20 + 4 * 48 : 20 + 4 * 49] = np.array([-1.0], np.float32).tobytes()  # layer 0: the first variance
    negative.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"negative\.weights: layer 0 .*rolling_variance is negative"):
        load_darknet(cfg, negative)
    empty = tmp_path / "empty.cfg"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ModelLoadError, match=r"empty\.cfg: no \[net\] section"):
        load_darknet(empty, weights)
