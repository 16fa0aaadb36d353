"""Every entry point fails in one line with a non-zero exit: bad paths for each subcommand, unwritable outputs,
a board-only install, the demo without its model package, the agent's bad options (issue 16, items 4 and 6)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model

from rkfarm import RKNN
from rkfarm.errors import ConfigError


def tiny_onnx(path: Path, dynamic_hw: bool = True) -> Path:
    """A 3->4 channel 3x3 convolution and a ReLU; H and W dynamic unless told otherwise."""
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    hw: list[str | int] = ["h", "w"] if dynamic_hw else [8, 8]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, *hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, *hw])],
        [weight],
    )
    model = make_model(graph, 17, producer_name="test")
    model.ir_version = 8  # what every ONNX Runtime rkfarm installs with loads (Python 3.10's too)
    onnx.save(model, path)
    return path


def cli(*args: str, env: dict[str, str] | None = None, module: str = "rkfarm.cli") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300, env=env)


def one_line_failure(out: subprocess.CompletedProcess[str], *words: str) -> None:
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("errors")
    out = root / "tiny.rkfm"
    done = cli("build", str(tiny_onnx(root / "tiny.onnx")), "--input-size", "1,3,8,8", "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_each_subcommand_with_a_bad_path(tmp_path: Path, package: Path) -> None:
    missing = tmp_path / "absent"
    cases = [
        ("build", str(missing.with_suffix(".onnx"))),
        ("run", str(missing.with_suffix(".rkfm")), str(tmp_path / "x.npy")),
        ("info", str(missing.with_suffix(".rkfm"))),
        ("perf", str(missing.with_suffix(".rkfm"))),
        ("mem", str(missing.with_suffix(".rkfm"))),
        ("analyze", str(missing.with_suffix(".onnx")), "--dataset", str(tmp_path / "ds.txt")),
        ("hybrid", "step1", str(missing.with_suffix(".onnx")), "--dataset", str(tmp_path / "ds.txt")),
        ("hybrid", "step2", str(missing.with_suffix(".model")), str(missing.with_suffix(".data")), str(missing)),
        ("encrypt", str(missing.with_suffix(".rkfm"))),
        ("codegen", str(missing.with_suffix(".rkfm")), "-o", str(tmp_path / "demo")),
        ("run", str(package), str(missing.with_suffix(".npy")), "-o", str(tmp_path / "out")),
    ]
    for args in cases:
        out = cli(*args)
        one_line_failure(out, str(tmp_path))
        assert "no such file" in out.stderr.lower() or "does not exist" in out.stderr, (args, out.stderr)


def test_unwritable_outputs(tmp_path: Path, package: Path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    nowhere = tmp_path / "no" / "such" / "folder"
    one_line_failure(cli("build", str(model), "--input-size", "1,3,8,8", "-o", str(nowhere / "m.rkfm")), "-o")
    assert not nowhere.exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 3), np.float32))
    ran = cli("run", str(package), str(tmp_path / "x.npy"), "-o", str(blocker / "out"))
    one_line_failure(ran, "-o", "not a folder")
    env = {**os.environ, "RKFARM_FARM_KEY_FILE": str(blocker / "farm.key")}
    one_line_failure(cli("keygen", env=env), str(blocker))
    one_line_failure(cli("keygen", "--out", "/proc/rkfarm-test/farm.key"), "/proc/rkfarm-test")  # parents are made


def test_errors_speak_flags(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    out = cli("build", str(model), "-o", str(tmp_path / "m.rkfm"))
    one_line_failure(out, "--input-size")
    assert "input_size_list" not in out.stderr and "load_onnx" not in out.stderr
    out = cli("build", str(model), "--input-size", "1,3,8,8", "--quantize", "-o", str(tmp_path / "m.rkfm"))
    one_line_failure(out, "--quantize needs --dataset")
    assert "dataset=" not in out.stderr and "do_quantization" not in out.stderr
    dataset = tmp_path / "ds.txt"
    dataset.write_text("x.npy\n")
    out = cli("build", str(model), "--input-size", "1,3,8,8", "--dataset", str(dataset), "-o", str(tmp_path / "m.rkfm"))
    one_line_failure(out, "--dataset", "--quantize")  # refused, not silently ignored
    assert not (tmp_path / "m.rkfm").exists()
    from rkfarm.cli._errors import in_flags

    assert in_flags("use init_runtime(target='rk3588', device_id=...) with a board agent") == (
        "use --device ID with a rk3588 board agent"
    )
    assert in_flags("fix it with config(float_dtype='float32')") == "fix it with --float-dtype float32"


def test_damaged_source_files_of_every_framework(tmp_path: Path) -> None:
    """A damaged or mistaken source file of each framework `rkfarm build` reads: one line naming the file, exit 1,
    no package written (the frontends' messages are checked in their own tests; here: that none escapes as a
    traceback through the CLI)."""
    rng = np.random.default_rng(0)
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text('name: "n"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
                        'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
                        '  convolution_param { num_output: 4 kernel_size: 3 } }\n')  # fmt: skip
    caffemodel = tmp_path / "net.caffemodel"
    caffemodel.write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    unbalanced = tmp_path / "unbalanced.prototxt"
    unbalanced.write_text('input: "data"\nlayer { name: "c" type: "ReLU"\n')
    cfg = tmp_path / "yolo.cfg"
    cfg.write_text("[net]\nwidth=8\nheight=8\nchannels=3\n\n[convolutional]\nfilters=4\nsize=3\nstride=1\n"
                   "pad=1\nactivation=leaky\n")  # fmt: skip
    weights = tmp_path / "yolo.weights"
    weights.write_bytes(b"\x00" * 10)  # shorter than the header
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"\x1c\x00\x00\x00TFL3" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
    torchscript = tmp_path / "m.pt"
    torchscript.write_bytes(b"PK\x03\x04" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
    saved_model = tmp_path / "saved_model.pb"
    saved_model.write_bytes(b"\x08\x01\x12\x00")  # a SavedModel: schema version 1, an empty meta graph
    cases = [  # source, its options, the damaged file the message names
        (prototxt, ["--blobs", str(caffemodel)], caffemodel),
        (unbalanced, [], unbalanced),
        (cfg, ["--weights", str(weights)], weights),
        (tflite, [], tflite),
        (torchscript, ["--input-size", "1,3,8,8"], torchscript),
        (saved_model, ["--inputs", "x", "--outputs", "y", "--input-size", "1,4"], saved_model),
    ]
    for source, options, damaged in cases:
        out_file = tmp_path / (source.stem + ".rkfm")
        out = cli("build", str(source), *options, "-o", str(out_file))
        if source is torchscript and importlib.util.find_spec("torch") is None:
            one_line_failure(out, "needs PyTorch")  # no torch on this Python (3.13 here): the loader says so first
        else:
            one_line_failure(out, damaged.name)
        assert not out_file.exists(), source


def test_board_only_install(tmp_path: Path, package: Path) -> None:
    """Without the host extras (no onnx), host commands say what to install; running a package still works."""
    code = "import sys; sys.modules['onnx'] = None\nfrom rkfarm.cli import main\nsys.exit(main(sys.argv[1:]))"

    def board(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)

    one_line_failure(board("build", str(tmp_path / "m.onnx")), "pip install 'rkfarm[host]'")
    assert board("--help").returncode == 0
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 3), np.float32))
    ran = board("run", str(package), str(tmp_path / "x.npy"), "-o", str(tmp_path / "out"))
    assert ran.returncode == 0, ran.stderr
    api = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['onnx'] = None\nfrom rkfarm import RKNN"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert api.returncode == 1 and "pip install 'rkfarm[host]'" in api.stderr


def test_demo_without_its_model_package() -> None:
    code = (
        "import sys; sys.modules['rapidocr_onnxruntime'] = None\n"
        "from rkfarm.demo import main\nsys.exit(main(['--no-agent', '--count', '2']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    one_line_failure(out, "rapidocr-onnxruntime", "pip install")


def test_config_positional_mistakes_are_config_errors() -> None:
    rknn = RKNN(raise_errors=True)
    with pytest.raises(ConfigError, match="quantized_dtype=\\[1\\].*pass them by name"):
        rknn.config([[127.5] * 3], [[127.5] * 3], [1])  # the third positional parameter is quantized_dtype
    with pytest.raises(ConfigError, match="auto_hybrid_cos_thresh"):
        rknn.config(auto_hybrid_cos_thresh="high")
    quiet = RKNN()
    assert quiet.config([[127.5] * 3], [[127.5] * 3], {"a": 1}) == -1
    assert isinstance(quiet.last_error, ConfigError)


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    """`rkfarm-agent serve` on loopback, never advertised: every case here must fail before it serves."""
    base = ["serve", "--host", "127.0.0.1", "--no-advertise", "--grace", "0"]
    return cli(*base, *args, module="rkfarm_agent.cli")


def test_agent_bad_options(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    out = agent("--port", "0", "--store-dir", store, "--farm-key-file", str(tmp_path / "missing.key"))
    assert out.returncode == 1 and "missing.key" in out.stderr and "Traceback" not in out.stderr
    out = agent("--port", "0", "--store-dir", "/proc/nope")
    assert out.returncode == 1 and "/proc/nope" in out.stderr and "Traceback" not in out.stderr
    assert "[Errno" not in out.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = agent("--port", str(port), "--store-dir", store)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "another agent" in lines[0], out.stderr
