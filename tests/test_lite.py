"""``RKNNLite`` (rkfarm_agent.lite): the vendor's board-side Lite2 API, running packages in-process on the agent's
own backends.

Packages are built here with the host from small ONNX models the test writes; what RKNNLite computes is
compared with the host simulator on the same input (and, for float32, with ONNX Runtime on the source model).
A vendor-style board script runs in a subprocess where the host package and the host-only libraries cannot be
imported, as on a board with only the agent installed. Vendor ``.rknn`` models run through the librknnrt test
double of test_rknnrt.py.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model
from quant_fixtures import write_dataset
from test_rknnrt import C, H, W, expected, fake_lib, fake_rknn

from rkfarm import RKNN
from rkfarm.keys import make_farm_key
from rkfarm_agent.errors import NoBackendError
from rkfarm_agent.lite import NotSupportedError, OptionError, RKNNLite, StateError
from rkfarm_proto.crypto import (
    DecryptionError,
    KeyUnavailableError,
    encrypt_package,
    load_or_create_identity,
    raw_public,
)
from rkfarm_proto.errors import InputError, PackageError
from rkfarm_proto.package import read_package, write_package

__all__ = ["fake_lib"]  # the librknnrt test double's fixture, shared with test_rknnrt

SIZE = (12, 16)  # H, W of the models built here
MEAN, STD = [100.0, 120.0, 140.0], [50.0, 60.0, 70.0]
LOG = "rkfarm_agent.lite"
AGENT_ENV = ("PLATFORM", "FARM_KEY_FILE", "STORE_DIR", "MAX_CRYPT_LEVEL")


@pytest.fixture(autouse=True)
def _no_agent_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says which platform and keys it means; none leaks in from the environment."""
    for name in AGENT_ENV:
        monkeypatch.delenv(f"RKFARM_AGENT_{name}", raising=False)
    monkeypatch.delenv("RKFARM_RAISE_ERRORS", raising=False)


def conv_model(path: Path) -> Path:
    """x [1,3,H,W] -> Conv 3x3 (8) -> Relu -> Conv 1x1 (4) -> y; and GlobalAveragePool(y) -> pooled [1,4,1,1]."""
    rng = np.random.default_rng(11)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.4, (4, 8, 1, 1)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"]),
        helper.make_node("GlobalAveragePool", ["y"], ["pooled"]),
    ]
    g = helper.make_graph(
        nodes, "lite_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, *SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, *SIZE]),
         helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, 4, 1, 1])], inits,
    )  # fmt: skip
    onnx.save(make_model(g, 17), str(path))
    return path


def images(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(count)]


def build(onnx_path: Path, out: Path, kind: str, target: str | None = "rk3588") -> Path:
    """A package of ``kind`` float32 / float16 / int8, exported by the host as a vendor script would."""
    with RKNN(raise_errors=True) as rknn:
        float_dtype = "float32" if kind == "float32" else "float16"
        rknn.config(mean_values=[MEAN], std_values=[STD], float_dtype=float_dtype, target_platform=target)
        rknn.load_onnx(str(onnx_path))
        if kind == "int8":
            rknn.build(do_quantization=True, dataset=str(write_dataset(out.parent / "cal", images(8, 5))))
        else:
            rknn.build(do_quantization=False)
        rknn.export_rknn(str(out))
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return conv_model(tmp_path_factory.mktemp("src") / "conv.onnx")


@pytest.fixture(scope="module")
def packages(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """float32, float16 and int8 packages; named .rknn, as vendor scripts name them."""
    return {
        kind: build(source, tmp_path_factory.mktemp(kind) / "conv.rknn", kind)
        for kind in ("float32", "float16", "int8")
    }


def simulated(package: Path, image: np.ndarray, data_format: str | None = None) -> list[np.ndarray]:
    """The host simulator's outputs for the package on ``image``."""
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(package))
        rknn.init_runtime()
        out = rknn.inference(inputs=[image], data_format=data_format)
    assert out is not None
    return out


def assert_close(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        span = max(1.0, float(np.max(w) - np.min(w)))
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-4 * span)


def infer(lite: RKNNLite, *args: Any, **kwargs: Any) -> list[np.ndarray]:
    """RKNNLite.inference's outputs, which must be there."""
    out = lite.inference(*args, **kwargs)
    assert out is not None, lite.last_error
    return [np.asarray(o) for o in out]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-30))


@pytest.fixture()
def lite() -> Iterator[RKNNLite]:
    r = RKNNLite(raise_errors=True)
    yield r
    r.release()


# -- rkfarm packages, in-process ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["float32", "float16", "int8"])
def test_packages_compute_what_the_simulator_computes(
    kind: str, packages: dict[str, Path], source: Path, lite: RKNNLite
) -> None:
    image = images(1, 42)[0][np.newaxis]  # NHWC uint8
    nchw = image.transpose(0, 3, 1, 2).copy()
    assert lite.load_rknn(str(packages[kind])) == 0
    assert lite.init_runtime(core_mask=RKNNLite.NPU_CORE_0_1_2) == 0
    got = infer(lite, inputs=[image])
    got_nchw = infer(lite, inputs=[nchw], data_format="nchw")
    got_hwc = infer(lite, inputs=image[0])  # one HWC array, no list: a batch of one, as the vendor takes it
    want = simulated(packages[kind], image)
    assert_close(got, want)
    assert_close(got_nchw, simulated(packages[kind], nchw, "nchw"))
    assert_close(got_hwc, want)
    assert [o.shape for o in got] == [(1, 4, *SIZE), (1, 4, 1, 1)]
    # and the numbers are the source model's, on the input preprocessed by hand
    x = (image[0].astype(np.float32) - MEAN) / STD
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    reference = [np.asarray(r) for r in session.run(None, {"x": x.transpose(2, 0, 1)[np.newaxis].astype(np.float32)})]
    if kind == "float32":
        assert_close(got, reference)
    else:  # float16 rounding, int8 quantization: near, not equal
        for g, r in zip(got, reference):
            assert cosine(g, r) > (0.9999 if kind == "float16" else 0.99), (kind, cosine(g, r))


def test_versions_platforms_and_release(packages: dict[str, Path], lite: RKNNLite) -> None:
    import onnxruntime

    lite.load_rknn(str(packages["float32"]))
    lite.init_runtime()
    version = lite.get_sdk_version()
    assert version is not None
    api, drv = version.splitlines()
    assert (
        api.startswith("API: rkfarm-agent ")
        and drv == f"DRV: onnxruntime {onnxruntime.__version__} (backend onnxruntime)"
    )
    targets = lite.list_support_target_platform(str(packages["float32"]))
    assert targets is not None and targets["filled_target_platform"] == ["rk3588"]
    assert "RK3588" in targets["support_target_platform"] and "RK3568" in targets["support_target_platform"]
    everything = lite.list_support_target_platform()
    assert everything is not None and len(everything["support_target_platform"]) >= 10
    lite.release()
    with pytest.raises(StateError, match="needs a runtime"):
        lite.inference([images(1, 0)[0]])
    with pytest.raises(StateError, match="needs a model"):
        lite.init_runtime()  # release() frees the model too


# -- an agent-only install ----------------------------------------------------------------------------------------
BOARD_SCRIPT = """\
import sys

import numpy as np
from rknnlite.api import RKNNLite

RKNN_MODEL = sys.argv[1]
IMG_PATH = sys.argv[2]
OUT_PATH = sys.argv[3]

if __name__ == '__main__':
    rknn_lite = RKNNLite()

    print('--> Load RKNN model')
    ret = rknn_lite.load_rknn(RKNN_MODEL)
    if ret != 0:
        print('Load RKNN model failed')
        exit(ret)
    print('done')

    img = np.load(IMG_PATH)

    print('--> Init runtime environment')
    ret = rknn_lite.init_runtime(core_mask=RKNNLite.NPU_CORE_0)
    if ret != 0:
        print('Init runtime environment failed')
        exit(ret)
    print('done')

    print('--> Running model')
    outputs = rknn_lite.inference(inputs=[img])
    if outputs is None:
        print('Inference failed')
        exit(1)
    for i, out in enumerate(outputs):
        np.save(OUT_PATH + '.' + str(i) + '.npy', out)
    print('done')

    rknn_lite.release()
"""

# Runs a script with the host package and the host-only libraries unimportable, as on a board where only the
# agent (rkfarm's base dependencies) is installed; afterwards, nothing of the host may have been imported.
AGENT_ONLY = """\
import importlib.abc, runpy, sys

HOST_ONLY = {"rkfarm", "onnx", "onnxslim", "PIL", "yaml", "tqdm", "cv2", "torch", "tensorflow"}

class NotOnThisBoard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HOST_ONLY:
            raise ModuleNotFoundError(f"No module named {name!r} (agent-only install)")
        return None

sys.meta_path.insert(0, NotOnThisBoard())
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in HOST_ONLY)
    if leaked:
        raise SystemExit(f"host modules imported: {leaked}")
"""


def run_agent_only(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", AGENT_ONLY, str(script), *args], capture_output=True, text=True, timeout=120
    )


def test_a_vendor_lite2_board_script_runs_on_the_agent_alone(packages: dict[str, Path], tmp_path: Path) -> None:
    assert "from rknnlite.api import RKNNLite" in BOARD_SCRIPT
    script = tmp_path / "board.py"
    script.write_text(
        BOARD_SCRIPT.replace("from rknnlite.api import RKNNLite", "from rkfarm_agent.lite import RKNNLite")
    )
    image = images(1, 9)[0]  # HWC, as cv2.imread gives it
    np.save(tmp_path / "img.npy", image)
    out = tmp_path / "out"
    proc = run_agent_only(script, str(packages["int8"]), str(tmp_path / "img.npy"), str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("done") == 3
    got = [np.load(f"{out}.{i}.npy") for i in range(2)]
    assert_close(got, simulated(packages["int8"], image))

    # the guard is real: the same run that imports the host package fails
    probe = tmp_path / "probe.py"
    probe.write_text("import rkfarm\n")
    refused = run_agent_only(probe)
    assert refused.returncode != 0 and "agent-only install" in refused.stderr


# -- vendor .rknn models through librknnrt (its test double) ------------------------------------------------------
def test_a_vendor_rknn_runs_through_librknnrt(fake_lib: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = fake_rknn(tmp_path / "yolo.rknn")
    image = np.random.default_rng(3).integers(0, 255, (1, H, W, C), dtype=np.uint8)

    monkeypatch.setenv("RKFARM_RKNNRT_LIB", str(tmp_path / "absent.so"))  # no librknnrt on this machine
    with RKNNLite(raise_errors=True) as lite:
        lite.load_rknn(str(model))
        with pytest.raises(NoBackendError, match="needs the rknnrt backend"):
            lite.init_runtime()

    monkeypatch.setenv("RKFARM_RKNNRT_LIB", str(fake_lib))
    with RKNNLite(raise_errors=True) as lite:
        assert lite.load_rknn(str(model)) == 0
        assert lite.init_runtime(core_mask=RKNNLite.NPU_CORE_0_1) == 0
        out = infer(lite, inputs=[image])
        assert out[0].shape == (1, C)
        np.testing.assert_allclose(out[0], expected(image), rtol=1e-6)
        nchw = image.transpose(0, 3, 1, 2).astype(np.float32)
        np.testing.assert_allclose(infer(lite, [nchw], data_format=["nchw"])[0], expected(image), rtol=1e-6)
        np.testing.assert_allclose(
            infer(lite, [image], inputs_pass_through=[1])[0], expected(image, normalise=False), rtol=1e-6
        )
        with pytest.raises(InputError, match=r"input 'images': expected \[1, 6, 8, 3\]"):
            lite.inference([np.zeros((1, H, W, 4), np.uint8)])
        version = lite.get_sdk_version()
        assert version is not None and "fake-librknnrt 0.0 (rkfarm test double) / driver none" in version
        assert "(backend rknnrt)" in version
        with pytest.raises(NotSupportedError, match="closed format"):
            lite.list_support_target_platform(str(model))


# -- return codes and errors --------------------------------------------------------------------------------------
def test_failures_return_the_vendor_codes_and_log_why(
    packages: dict[str, Path], source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=LOG)
    lite = RKNNLite()
    image = images(1, 1)[0]

    def reason() -> str:
        text = caplog.records[-1].getMessage()
        caplog.clear()
        return text

    assert lite.inference([image]) is None and "call load_rknn() and init_runtime() first" in reason()
    assert lite.init_runtime() == -1 and "needs a model: call load_rknn() first" in reason()
    assert lite.get_sdk_version() is None and "needs a runtime" in reason()
    missing = tmp_path / "missing.rknn"
    assert lite.load_rknn(str(missing)) == -1 and reason() == f"load_rknn: {missing}: no such file"
    junk = tmp_path / "notes.rknn"
    junk.write_text("not a model at all\n")
    assert lite.load_rknn(str(junk)) == -1 and "not an rkfarm model package" in reason()
    assert lite.load_rknn(str(source)) == -1 and "this is an ONNX model" in reason()
    assert lite.load_rknn("") == -1 and "no model path" in reason()
    assert isinstance(lite.last_error, PackageError)
    truncated = tmp_path / "cut.rknn"
    truncated.write_bytes(packages["float32"].read_bytes()[:-10])
    assert lite.load_rknn(str(truncated)) == -1 and "truncated" in reason()

    assert lite.load_rknn(str(packages["float32"])) == 0 and lite.last_error is None
    assert lite.init_runtime(core_mask=0x5) == -1 and "core_mask 5 is not one of the RKNNLite.NPU_CORE_*" in reason()
    assert lite.init_runtime(target="rk3588") == -1 and "runs the model on this machine" in reason()
    assert lite.init_runtime(device_id="0123456789") == -1 and "device_id" in reason()
    assert lite.init_runtime(async_mode=True) == -1 and "async_mode" in reason()
    assert lite.inference([image]) is None  # a failed init_runtime leaves no runtime
    caplog.clear()
    assert lite.init_runtime() == 0
    wrong = image[:, :8]
    assert lite.inference([wrong]) is None
    assert reason() == (
        "inference: input 'x': expected shape [1, 12, 16, 3] (NHWC, the default data_format) or [1, 3, 12, 16] "
        "with data_format='nchw', got [1, 12, 8, 3]"
    )
    assert isinstance(lite.last_error, InputError)
    assert lite.inference([image], data_format="nhcw") is None and "data_format must be 'nhwc' or 'nchw'" in reason()
    assert lite.inference([image, image]) is None and "takes 1 input(s)" in reason()
    assert (
        lite.inference([image], data_type="float32") is None
        and "data_type 'float32' but the array is uint8" in reason()
    )
    assert lite.inference([image], data_type="uint8") is not None  # the array's own type: nothing to do
    assert lite.inference([image], get_frame_id=True) is None and "get_frame_id" in reason()
    missing_model = str(tmp_path / "gone.rknn")
    assert lite.list_support_target_platform(missing_model) is None and "no such file" in reason()
    lite.release()


def test_raise_errors_raises_the_reason(packages: dict[str, Path], tmp_path: Path) -> None:
    with RKNNLite(raise_errors=True) as lite:
        with pytest.raises(PackageError, match="no such file"):
            lite.load_rknn(str(tmp_path / "missing.rknn"))
        with pytest.raises(StateError):
            lite.inference([np.zeros((*SIZE, 3), np.uint8)])
        lite.load_rknn(str(packages["float32"]))
        with pytest.raises(OptionError, match="core_mask"):
            lite.init_runtime(core_mask=True)  # a bool is not a mask
        lite.init_runtime()
        with pytest.raises(InputError, match="expected shape"):
            lite.inference([np.zeros((4, 4, 3), np.uint8)])


def test_core_masks_are_bounded_by_the_platform(source: Path, packages: dict[str, Path], tmp_path: Path) -> None:
    rk3568 = build(source, tmp_path / "rk3568.rkfm", "float32", target="rk3568")
    with RKNNLite(raise_errors=True) as lite:  # a PC: the model's own platform bounds the mask
        lite.load_rknn(str(rk3568))
        with pytest.raises(
            OptionError,
            match=r"NPU_CORE_1 names NPU core 1, but rk3568 \(the platform the model was built for\) has 1 NPU core: ",
        ):
            lite.init_runtime(core_mask=RKNNLite.NPU_CORE_1)
        for mask in (RKNNLite.NPU_CORE_AUTO, RKNNLite.NPU_CORE_0, RKNNLite.NPU_CORE_ALL):
            assert lite.init_runtime(core_mask=mask) == 0
    with RKNNLite(raise_errors=True, platform="rk3576") as lite:  # a board: its own core count
        lite.load_rknn(str(packages["float32"]))  # built for rk3588: runs, with a warning
        with pytest.raises(
            OptionError,
            match=r"NPU cores 0, 1 and 2, but rk3576 \(this board\) has 2 NPU cores: use NPU_CORE_AUTO, NPU_CORE_0, ",
        ):
            lite.init_runtime(core_mask=RKNNLite.NPU_CORE_0_1_2)
        assert lite.init_runtime(core_mask=RKNNLite.NPU_CORE_0_1) == 0
        assert lite.init_runtime(target="rk3576") == 0  # naming this board as the target is fine
        with pytest.raises(NotSupportedError, match="which is rk3576"):
            lite.init_runtime(target="rk3588")
        with pytest.raises(OptionError, match="unknown target"):
            lite.init_runtime(target="rk9999")
    with pytest.raises(OptionError, match="unknown platform"):
        RKNNLite(platform="rk9999")


# -- encrypted packages -------------------------------------------------------------------------------------------
def test_encrypted_packages_open_with_the_agents_keys(
    packages: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    plain = packages["float32"]
    key = make_farm_key(tmp_path / "farm.key")
    sealed = {}
    for level in (1, 2):
        sealed[level] = tmp_path / f"conv.l{level}.rknn"
        with RKNN(raise_errors=True) as rknn:
            assert rknn.export_encrypted_rknn_model(str(plain), str(sealed[level]), level, key_file=str(key)) == 0
    image = images(1, 8)[0]
    want = simulated(plain, image)

    caplog.set_level(logging.ERROR, logger=LOG)
    lite = RKNNLite()
    assert lite.load_rknn(str(sealed[1])) == 0  # the header is readable without the key
    assert lite.init_runtime() == -1
    assert "the model is encrypted for farm:" in caplog.records[-1].getMessage()
    assert isinstance(lite.last_error, KeyUnavailableError)
    with RKNNLite(raise_errors=True) as strict:
        strict.load_rknn(str(sealed[1]))
        with pytest.raises(KeyUnavailableError, match="provision the farm key"):
            strict.init_runtime()

    with RKNNLite(raise_errors=True, farm_key_file=str(key)) as keyed:
        keyed.load_rknn(str(sealed[1]))
        keyed.init_runtime()
        assert_close(infer(keyed, [image]), want)
    monkeypatch.setenv("RKFARM_AGENT_FARM_KEY_FILE", f"{tmp_path / 'old.key'},{key}")  # as `rkfarm-agent serve`
    make_farm_key(tmp_path / "old.key")
    with RKNNLite(raise_errors=True) as from_env:
        from_env.load_rknn(str(sealed[2]))
        from_env.init_runtime()
        assert_close(infer(from_env, [image]), want)
    with RKNNLite(raise_errors=True, max_crypt_level=1) as bounded:  # --max-crypt-level 1
        bounded.load_rknn(str(sealed[2]))
        with pytest.raises(DecryptionError, match="allows at most"):
            bounded.init_runtime()
    with pytest.raises(OptionError, match="max_crypt_level"):
        RKNNLite(max_crypt_level=4)

    # sealed to this board's agent identity (kept in its store folder)
    store = tmp_path / "store"
    store.mkdir()
    identity = load_or_create_identity(store / "identity.key")
    boxed = encrypt_package(read_package(plain), 1, None, [raw_public(identity)])
    write_package(tmp_path / "boxed.rknn", boxed.header, boxed.payload)
    monkeypatch.delenv("RKFARM_AGENT_FARM_KEY_FILE")
    with RKNNLite(raise_errors=True, store_dir=store) as board:
        board.load_rknn(str(tmp_path / "boxed.rknn"))
        board.init_runtime()
        assert_close(infer(board, [image]), want)
    with RKNNLite(raise_errors=True, store_dir=tmp_path / "another-store") as stranger:
        stranger.load_rknn(str(tmp_path / "boxed.rknn"))
        with pytest.raises(KeyUnavailableError, match="encrypted for agent:"):
            stranger.init_runtime()


def test_verbose_file_gets_the_log(tmp_path: Path) -> None:
    from rkfarm_agent.lite import api

    log_file = tmp_path / "lite.log"
    root = logging.getLogger("rkfarm_agent")
    level = root.level
    try:
        lite = RKNNLite(verbose_file=str(log_file))
        assert lite.load_rknn(str(tmp_path / "missing.rknn")) == -1
        RKNNLite(verbose_file=str(tmp_path / "no-such-folder" / "lite.log"))  # ignored, as by the vendor
    finally:
        handler = api._handlers.pop(str(log_file))
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)
    text = log_file.read_text()
    assert "missing.rknn: no such file" in text
    assert "no-such-folder" in text and "the log is not written to a file" in text
    assert not (tmp_path / "no-such-folder").exists()
