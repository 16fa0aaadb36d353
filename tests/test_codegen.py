"""codegen(): the demo projects, built and run.

The C++ demo (a vendor .rknn) is built with the machine's cmake and g++ against the librknnrt TEST DOUBLE
(`tests/data/fake_rknnrt.c`, a trivial model: per-channel means of the normalised image) and its outputs are
compared with what rkfarm's rknnrt backend computes through the same double, and with numpy. The Python demo
(an ONNX payload) runs `rkfarm_agent.lite.RKNNLite` in a subprocess; its outputs are compared with the simulator's
and with ONNX Runtime on the original model.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from rkfarm import RKNN
from rkfarm.cli import main as cli_main
from rkfarm.codegen import MANIFEST, CodegenError
from rkfarm.codegen.cpp_sources import RKNN_API_H, TENSOR_TYPES
from rkfarm.errors import InputError
from rkfarm.keys import make_farm_key
from rkfarm_agent.backends.rknnrt import RknnrtBackend, capi
from rkfarm_proto.records import LoadOptions
from rkfarm_proto.v1 import package_pb2

DATA = Path(__file__).parent / "data"
H, W, C, MEAN, STD = 5, 7, 4, 100.0, 50.0  # the fake .rknn: input images [1, H, W, C] uint8 NHWC
HAVE_LITE = importlib.util.find_spec("rkfarm_agent.lite") is not None
NO_LITE = "rkfarm_agent.lite (RKNNLite) does not exist yet: the generated demo.py cannot run"


# -- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the librknnrt test double")
    out = tmp_path_factory.mktemp("rknnrt") / "libfake_rknnrt.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(out), str(DATA / "fake_rknnrt.c")], check=True)
    return out


def fake_rknn(path: Path) -> Path:
    body = b"FAKE" + struct.pack("<IIIff", H, W, C, MEAN, STD)
    path.write_bytes(b"RKNN" + b"\0" * 4 + struct.pack("<QQ", 6, len(body)) + body)
    return path


def wrapped_package(tmp_path: Path) -> Path:
    """A vendor .rknn wrapped in an rkfarm package by rkfarm's own API: load_rknn, then export_rknn."""
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(fake_rknn(tmp_path / "fake_model.rknn")))
        rknn.export_rknn(str(tmp_path / "fake_model.rkfm"))
    return tmp_path / "fake_model.rkfm"


def channel_means(image_nhwc: np.ndarray) -> np.ndarray:
    """The double's model written out with numpy: per-channel mean of (x - mean) / std."""
    x = (image_nhwc.astype(np.float64) - MEAN) / STD
    return np.asarray(x.reshape(-1, C).mean(axis=0).reshape(1, C), dtype=np.float64)


def small_onnx(path: Path) -> Path:
    """Conv 3->4 (3x3, pad 1) + Relu -> "features", then GlobalAveragePool + Flatten -> "pooled"."""
    rng = np.random.default_rng(3)
    weight = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["images", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["features"]),
        helper.make_node("GlobalAveragePool", ["features"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["pooled"]),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 6, 9])],
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4, 6, 9]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, 4]),
        ],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The small ONNX model and its float32 package (mean 127.5, std 64)."""
    folder = tmp_path_factory.mktemp("onnx")
    source = small_onnx(folder / "small.onnx")
    package = folder / "small.rkfm"
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[[127.5] * 3], std_values=[[64.0] * 3], float_dtype="float32", target_platform="rk3588")
        rknn.load_onnx(str(source))
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(package))
    return source, package


def tolerance(reference: np.ndarray) -> float:
    return 1e-4 * max(1.0, float(np.ptp(reference)))


# -- the header and rkfarm's ctypes declarations agree ------------------------------------------------------
def test_demo_header_agrees_with_the_rknnrt_backend() -> None:
    enums = {name: int(value) for name, value in re.findall(r"(RKNN_\w+) = (\d+)", RKNN_API_H)}
    assert {f"RKNN_TENSOR_{name.upper()}": code for name, code in TENSOR_TYPES.items()} == {
        k: v for k, v in enums.items() if k.startswith("RKNN_TENSOR_") and k[12:].lower() in TENSOR_TYPES
    }
    assert {code: np.dtype(name) for name, code in TENSOR_TYPES.items()} == capi.TYPES
    assert enums["RKNN_QUERY_IN_OUT_NUM"] == capi.QUERY_IN_OUT_NUM
    assert enums["RKNN_QUERY_INPUT_ATTR"] == capi.QUERY_INPUT_ATTR
    assert enums["RKNN_QUERY_OUTPUT_ATTR"] == capi.QUERY_OUTPUT_ATTR
    assert enums["RKNN_QUERY_SDK_VERSION"] == capi.QUERY_SDK_VERSION
    assert (enums["RKNN_TENSOR_NCHW"], enums["RKNN_TENSOR_NHWC"]) == (capi.FMT_NCHW, capi.FMT_NHWC)
    assert enums["RKNN_TENSOR_UNDEFINED"] == capi.FMT_UNDEFINED
    # main.cc static_asserts these sizes; they must be the ones the backend's ctypes structs have
    assert ctypes.sizeof(capi.TensorAttr) == 376 and ctypes.sizeof(capi.SdkVersion) == 512
    assert ctypes.sizeof(capi.InOutNum) == 8


# -- the C++ demo, built and run against the double --------------------------------------------------------
@pytest.mark.slow
def test_cpp_demo_builds_runs_and_matches_the_rknnrt_backend(
    fake_lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("cmake") is None or shutil.which("g++") is None:
        pytest.skip("cmake and g++ are needed to build the C++ demo")
    package = wrapped_package(tmp_path)
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (1, H, W, C), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    demo = tmp_path / "demo"
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(package))
        assert rknn.codegen(str(demo), inputs=[str(tmp_path / "image.npy")]) == 0
    assert (demo / "model" / "fake_model.rknn").read_bytes() == (tmp_path / "fake_model.rknn").read_bytes()
    assert not list(demo.rglob("*.rkfm"))  # the raw .rknn, not the package

    build = tmp_path / "build"
    env = {k: v for k, v in os.environ.items() if k not in ("LIBRKNNRT", "RKNN_API_PATH")}
    subprocess.run(
        ["cmake", "-S", str(demo), "-B", str(build), f"-DLIBRKNNRT={fake_lib}",
         f"-DCMAKE_INSTALL_PREFIX={tmp_path / 'installed'}"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    made = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True, env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "warning" not in made.stdout + made.stderr

    # what rkfarm's rknnrt backend computes through the same double, on the same inputs
    monkeypatch.setenv("RKFARM_RKNNRT_LIB", str(fake_lib))
    header = package_pb2.PackageHeader(payload_kind=package_pb2.PAYLOAD_KIND_RKNN)
    model = RknnrtBackend().load(header, (tmp_path / "fake_model.rknn").read_bytes(), LoadOptions())
    try:
        adapter = model.make_adapter(header)
        backend_nhwc = model.run(adapter([image]))[0]
        nchw = rng.random((1, C, H, W), dtype=np.float32) * 255
        backend_nchw = model.run(adapter([nchw], "nchw"))[0]
    finally:
        model.close()
    np.testing.assert_allclose(np.asarray(backend_nhwc, np.float64), channel_means(image), atol=1e-5)

    run = subprocess.run([str(build / "rknn_demo"), "--loops", "3"], cwd=demo, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "input 0: inputs/input_0.npy, uint8 [1, 5, 7, 4] NHWC" in run.stdout
    timed = re.findall(r"^run \d/3: rknn_inputs_set .* ms, rknn_run .* ms, rknn_outputs_get .* ms", run.stdout, re.M)
    assert len(timed) == 3
    assert "average of 3 run(s)" in run.stdout
    written = np.load(demo / "outputs" / "output_0_channel_means.npy")
    assert written.dtype == np.float32 and written.shape == (1, C)
    np.testing.assert_array_equal(written, backend_nhwc)

    # float32 NCHW input (saved as .npy format 2.0), and --expect against the backend's output
    with (tmp_path / "nchw.npy").open("wb") as fh:
        np.lib.format.write_array(fh, nchw, version=(2, 0))
    (tmp_path / "ref").mkdir()
    np.save(tmp_path / "ref" / "output_0_channel_means.npy", backend_nchw)
    run = subprocess.run(
        [str(build / "rknn_demo"), "--input", str(tmp_path / "nchw.npy"), "--nchw", "--loops", "1",
         "--output-dir", str(tmp_path / "out2"), "--expect", str(tmp_path / "ref")],
        cwd=demo, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out2" / "output_0_channel_means.npy"), backend_nchw)
    assert "cosine 1.000000, max abs difference 0" in run.stdout

    # a wrong-sized input is refused with the sizes named
    np.save(tmp_path / "small.npy", np.zeros((1, 2, 2, C), np.uint8))
    run = subprocess.run([str(build / "rknn_demo"), "--input", str(tmp_path / "small.npy")], cwd=demo,
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 1 and "holds 16 values [1, 2, 2, 4]; input 'images' takes 140" in run.stderr

    # the install folder is self-contained: the demo runs from there
    subprocess.run(["cmake", "--install", str(build)], check=True, capture_output=True, env=env)
    installed = tmp_path / "installed"
    assert (installed / "lib" / fake_lib.name).is_file() and (installed / "inputs" / "input_0.npy").is_file()
    run = subprocess.run(["./rknn_demo", "--loops", "1"], cwd=installed, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    np.testing.assert_array_equal(np.load(installed / "outputs" / "output_0_channel_means.npy"), backend_nhwc)


def test_image_input_is_decoded_into_the_cpp_demo(tmp_path: Path) -> None:
    image = np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(fake_rknn(tmp_path / "cam.rknn")))
        assert rknn.codegen(str(tmp_path / "demo"), inputs=[str(tmp_path / "photo.png")]) == 0
    fed = np.load(tmp_path / "demo" / "inputs" / "input_0.npy")
    np.testing.assert_array_equal(fed, image[np.newaxis])
    assert '"inputs/input_0.npy", nullptr' in (tmp_path / "demo" / "include" / "demo_config.h").read_text()
    assert "photo.png" in (tmp_path / "demo" / "README.md").read_text()


# -- the Python demo of an ONNX-payload package ------------------------------------------------------------
def test_python_demo_for_an_onnx_package(onnx_model: tuple[Path, Path], tmp_path: Path) -> None:
    source, package = onnx_model
    image = np.random.default_rng(4).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "line.png")
    demo = tmp_path / "demo"
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(package))
        assert rknn.codegen(str(demo), inputs=[str(tmp_path / "line.png")]) == 0
        rknn.init_runtime()
        outputs = rknn.inference([image[np.newaxis]])
    assert outputs is not None
    simulated = [np.asarray(out, dtype=np.float32) for out in outputs]
    files = sorted(str(p.relative_to(demo)) for p in demo.rglob("*") if p.is_file())
    assert files == [
        MANIFEST, "README.md", "demo.py", "expected/output_0_features.npy", "expected/output_1_pooled.npy",
        "inputs/input_0.npy", "model/small.rkfm",
    ]  # fmt: skip
    assert (demo / "model" / "small.rkfm").read_bytes() == package.read_bytes()
    np.testing.assert_array_equal(np.load(demo / "inputs" / "input_0.npy"), image[np.newaxis])

    # independent reference: ONNX Runtime on the original model, preprocessing written out by hand
    x = ((image.astype(np.float32) - 127.5) / 64.0).transpose(2, 0, 1)[np.newaxis]
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    for i, name in enumerate(["features", "pooled"]):
        expected = np.load(demo / "expected" / f"output_{i}_{name}.npy")
        np.testing.assert_allclose(expected, simulated[i], atol=tolerance(reference[i]), rtol=0)
        np.testing.assert_allclose(expected, reference[i], atol=tolerance(reference[i]), rtol=0)

    if not HAVE_LITE:
        pytest.skip(NO_LITE)
    run = run_demo(demo, "--loops", "2", "--expect", "expected")
    assert len(re.findall(r"^run \d/2: .* ms$", run.stdout, re.M)) == 2 and "average of 2 run(s)" in run.stdout
    for i, name in enumerate(["features", "pooled"]):
        got = np.load(demo / "outputs" / f"output_{i}_{name}.npy")
        np.testing.assert_allclose(got, simulated[i], atol=tolerance(reference[i]), rtol=0)
    assert run.stdout.count("cosine 1.000000") == 2


def test_python_demo_without_inputs_generates_them(onnx_model: tuple[Path, Path], tmp_path: Path) -> None:
    _, package = onnx_model
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(package))
        assert rknn.codegen(str(tmp_path / "demo")) == 0
    fed = np.load(tmp_path / "demo" / "inputs" / "input_0.npy")
    assert fed.dtype == np.uint8 and fed.shape == (1, 6, 9, 3)  # an NHWC image for the NCHW image input
    assert "generated (seeded pseudo-random)" in (tmp_path / "demo" / "README.md").read_text()


# -- refusals ------------------------------------------------------------------------------------------------
def test_a_non_empty_folder_needs_overwrite(tmp_path: Path) -> None:
    model = fake_rknn(tmp_path / "m.rknn")
    np.save(tmp_path / "x.npy", np.zeros((1, H, W, C), np.uint8))
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "notes.txt").write_text("mine")
    rknn = RKNN()
    try:
        assert rknn.load_rknn(str(model)) == 0
        assert rknn.codegen(str(demo), inputs=[str(tmp_path / "x.npy")]) == -1
        assert "exists and is not empty; pass overwrite=True" in str(rknn.last_error)
        assert sorted(p.name for p in demo.iterdir()) == ["notes.txt"]
        assert rknn.codegen(str(demo), inputs=[str(tmp_path / "x.npy")], overwrite=True) == 0
        assert (demo / "inputs" / "input_0.npy").is_file() and (demo / "notes.txt").read_text() == "mine"
        # regenerating without inputs removes the earlier generation's input, keeps the user's file
        assert rknn.codegen(str(demo), overwrite=True) == 0
        assert not (demo / "inputs").exists() and (demo / "notes.txt").is_file()
        assert "{nullptr}" in (demo / "include" / "demo_config.h").read_text()
        (tmp_path / "file").write_text("x")
        assert rknn.codegen(str(tmp_path / "file"), overwrite=True) == -1
        assert "is not a folder" in str(rknn.last_error)
    finally:
        rknn.release()


def test_bad_inputs_are_refused(onnx_model: tuple[Path, Path], tmp_path: Path) -> None:
    rknn = RKNN(raise_errors=True)
    try:
        rknn.load_rknn(str(fake_rknn(tmp_path / "m.rknn")))
        with pytest.raises(InputError, match=r"codegen: input .*nope\.npy: no such file"):
            rknn.codegen(str(tmp_path / "demo"), inputs=[str(tmp_path / "nope.npy")])
        assert not (tmp_path / "demo").exists()  # nothing written before the inputs are checked
        np.save(tmp_path / "f64.npy", np.zeros((1, H, W, C)))
        with pytest.raises(InputError, match="dtype float64 is not a librknnrt input type"):
            rknn.codegen(str(tmp_path / "demo"), inputs=[str(tmp_path / "f64.npy")])
        (tmp_path / "x.txt").write_text("1 2 3")
        with pytest.raises(InputError, match="unsupported file type .txt"):
            rknn.codegen(str(tmp_path / "demo"), inputs=[str(tmp_path / "x.txt")])

        rknn.load_rknn(str(onnx_model[1]))
        np.save(tmp_path / "x.npy", np.zeros((1, 6, 9, 3), np.uint8))
        with pytest.raises(InputError, match=r"the model takes 1 input\(s\) \(images\); 2 file\(s\) given"):
            rknn.codegen(str(tmp_path / "demo"), inputs=[str(tmp_path / "x.npy")] * 2)
        np.save(tmp_path / "wrong.npy", np.zeros((1, 5, 5, 3), np.uint8))
        with pytest.raises(InputError, match=r"codegen: input 'images': expected shape \[1, 6, 9, 3\]"):
            rknn.codegen(str(tmp_path / "demo"), inputs=[str(tmp_path / "wrong.npy")])
    finally:
        rknn.release()
    assert RKNN().codegen(str(tmp_path / "demo")) == -1  # no model loaded


def run_demo(demo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(demo / "demo.py"), *args]
    run = subprocess.run(command, cwd=demo, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_encrypted_vendor_package_gets_the_python_demo(
    fake_lib: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = make_farm_key(tmp_path / "farm.key")
    package = wrapped_package(tmp_path)
    image = np.random.default_rng(8).integers(0, 256, (1, H, W, C), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    demo = tmp_path / "demo"
    with RKNN(raise_errors=True) as rknn:
        rknn.export_encrypted_rknn_model(str(package), str(tmp_path / "sealed.rkfm"), key_file=str(key))
        rknn.load_rknn(str(tmp_path / "sealed.rkfm"))
        with pytest.raises(CodegenError, match="only librknnrt on the board can tell: give one input file"):
            rknn.codegen(str(demo))
        assert not demo.exists()
        logger = logging.getLogger("rkfarm.codegen")  # directly: the CLI may have stopped "rkfarm" propagating
        logger.addHandler(caplog.handler)
        try:
            rknn.codegen(str(demo), inputs=[str(tmp_path / "image.npy")])
        finally:
            logger.removeHandler(caplog.handler)
    assert "instead of the C++ demo (which needs the plaintext .rknn) this is the Python demo" in caplog.text
    assert (demo / "demo.py").is_file() and not (demo / "CMakeLists.txt").exists()
    assert (demo / "model" / "fake_model.rkfm").read_bytes() == (tmp_path / "sealed.rkfm").read_bytes()
    secret = (tmp_path / "fake_model.rknn").read_bytes()[24:]  # the model body, after the vendor's prefix
    assert not [p for p in demo.rglob("*") if p.is_file() and secret in p.read_bytes()]  # no plaintext model
    assert not (demo / "expected").exists()
    if not HAVE_LITE:
        pytest.skip(NO_LITE)
    env = {**os.environ, "RKFARM_AGENT_FARM_KEY_FILE": str(key), "RKFARM_RKNNRT_LIB": str(fake_lib)}
    run_demo(demo, "--loops", "2", env=env)
    np.testing.assert_allclose(np.load(demo / "outputs" / "output_0.npy"), channel_means(image), atol=1e-5)


def test_encrypted_onnx_package_gets_the_python_demo(onnx_model: tuple[Path, Path], tmp_path: Path) -> None:
    _, package = onnx_model
    key = make_farm_key(tmp_path / "farm.key")
    image = np.random.default_rng(9).integers(0, 256, (1, 6, 9, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    demo = tmp_path / "demo"
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(package))
        rknn.init_runtime()
        plain = rknn.inference([image])
        rknn.export_encrypted_rknn_model(str(package), str(tmp_path / "sealed.rkfm"), 2, key_file=str(key))
        rknn.load_rknn(str(tmp_path / "sealed.rkfm"))
        assert rknn.codegen(str(demo), inputs=[str(tmp_path / "image.npy")]) == 0
    assert plain is not None
    assert (demo / "model" / "small.rkfm").read_bytes() == (tmp_path / "sealed.rkfm").read_bytes()
    assert not (demo / "expected").exists() and "copied still encrypted" in (demo / "README.md").read_text()
    if not HAVE_LITE:
        pytest.skip(NO_LITE)
    run_demo(demo, "--loops", "1", env={**os.environ, "RKFARM_AGENT_FARM_KEY_FILE": str(key)})
    for i, name in enumerate(["features", "pooled"]):
        want = np.asarray(plain[i], dtype=np.float32)
        np.testing.assert_allclose(np.load(demo / "outputs" / f"output_{i}_{name}.npy"), want, atol=tolerance(want))


# -- export_rknn(cpp_gen_cfg=True) and the CLI ---------------------------------------------------------------
def test_export_rknn_with_cpp_gen_cfg_writes_the_demo_beside_the_model(
    onnx_model: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "export"
    out.mkdir()
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(fake_rknn(tmp_path / "det.rknn")))
        assert rknn.export_rknn(str(out / "det.rkfm"), cpp_gen_cfg=True) == 0
        demo = out / "rknn_deploy_demo"
        assert (demo / "CMakeLists.txt").is_file() and (demo / "src" / "main.cc").is_file()
        assert (demo / "model" / "det.rknn").read_bytes() == (tmp_path / "det.rknn").read_bytes()
        assert rknn.export(str(out / "det.rkfm"), cpp_gen_cfg=True) == 0  # an earlier demo is replaced
    foreign = tmp_path / "foreign"
    (foreign / "rknn_deploy_demo").mkdir(parents=True)
    (foreign / "rknn_deploy_demo" / "mine.txt").write_text("x")
    rknn = RKNN()
    try:
        rknn.load_rknn(str(onnx_model[1]))
        assert rknn.export_rknn(str(foreign / "m.rkfm"), cpp_gen_cfg=True) == -1
        assert "is not an earlier rkfarm demo" in str(rknn.last_error)
        assert rknn.export_rknn(str(out / "small.rkfm"), cpp_gen_cfg=True) == 0  # replaces the C++ demo
        assert (demo / "demo.py").is_file() and not (demo / "CMakeLists.txt").exists()
        assert (demo / "model" / "small.rkfm").read_bytes() == (out / "small.rkfm").read_bytes()
    finally:
        rknn.release()


def test_cli_codegen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = fake_rknn(tmp_path / "m.rknn")
    np.save(tmp_path / "x.npy", np.zeros((1, H, W, C), np.uint8))
    demo = tmp_path / "demo"
    assert cli_main(["codegen", str(model), "-o", str(demo), "--input", str(tmp_path / "x.npy")]) == 0
    assert "wrote the demo of" in capsys.readouterr().out and (demo / "inputs" / "input_0.npy").is_file()
    assert cli_main(["codegen", str(model), "-o", str(demo)]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert cli_main(["codegen", str(model), "-o", str(demo), "--overwrite"]) == 0
