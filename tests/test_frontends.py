"""The frontend registry, detection by extension and content, the PyTorch frontend, and `rkfarm build` on sources.

PyTorch models are built by the test (a full-size ResNet-18, a two-input net), saved as TorchScript and
compared with torch itself on the same input.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from quant_fixtures import write_dataset

from rkfarm import RKNN
from rkfarm.cli import main
from rkfarm.errors import ModelLoadError, RkfarmError
from rkfarm.frontends import FRONTENDS, detect, sniff

torch = pytest.importorskip("torch", reason="the PyTorch frontend needs torch (make test installs torch==2.13.0)")
from torch_nets import resnet18  # noqa: E402  (imports torch: only once the skip above passed)

nn = torch.nn
# torch.jit.trace/save make the TorchScript files the vendor loads; torch 2.9+ calls them deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch")


# -- registry and detection -------------------------------------------------------------------------------
def test_every_frontend_is_the_rknn_method_with_the_vendors_signature() -> None:
    for name, fe in FRONTENDS.items():
        method = getattr(RKNN, f"load_{name}")
        wanted = [p for p in inspect.signature(method).parameters if p != "self"]
        assert [p for p in inspect.signature(fe.loader()).parameters] == wanted, name


def _onnx_bytes() -> bytes:
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )  # fmt: skip
    return helper.make_model(g).SerializeToString()


@pytest.mark.parametrize(
    ("name", "content", "framework"),
    [
        ("m.onnx", _onnx_bytes(), "onnx"),
        ("m.pb", _onnx_bytes(), "onnx"),  # an ONNX file with TensorFlow's extension: its bytes decide
        ("m.pb", b"\x0a\x0bPlaceholder", "tensorflow"),
        ("m.pb", b"\x0a\x09\x0a\x01x\x12\x04name:input:0", "tensorflow"),  # Caffe's words in a binary GraphDef
        ("saved_model.pb", b"\x08\x01\x12\x00", "tensorflow"),  # a SavedModel: its loader says to freeze it
        ("m.pt", b"PK\x03\x04rest", "pytorch"),
        ("m.tflite", b"\x1c\x00\x00\x00TFL3", "tflite"),
        ("model", b"\x1c\x00\x00\x00TFL3", "tflite"),  # no extension at all
        ("yolo.cfg", b"[net]\nwidth=416\n", "darknet"),
        ("deploy.txt", b'name: "net"\nlayer {\n  name: "data"\n', "caffe"),
        ("deploy.prototxt", b'input: "data"\n', "caffe"),
    ],
)
def test_detect_by_extension_and_content(tmp_path: Path, name: str, content: bytes, framework: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert detect(path).name == framework


def test_detect_refuses_what_it_cannot_tell(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(ModelLoadError, match=r"notes\.txt: cannot tell which framework"):
        detect(path)
    with pytest.raises(ModelLoadError, match="no such file"):
        detect(tmp_path / "missing.pb")
    assert sniff(b"") is None


# -- PyTorch -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet18_pt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    torch.manual_seed(0)
    net = resnet18(seed=1)
    path = tmp_path_factory.mktemp("torch") / "resnet18.pt"
    traced = torch.jit.trace(net, torch.rand(1, 3, 224, 224))
    traced.save(str(path))
    return path, traced


def _max_rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / (want.max() - want.min()))


@pytest.mark.slow
def test_resnet18_torchscript_matches_torch(resnet18_pt: tuple[Path, Any], tmp_path: Path) -> None:
    path, traced = resnet18_pt
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        want = traced(torch.from_numpy(x)).numpy()
    with RKNN(raise_errors=True) as rknn:
        rknn.config(float_dtype="float32")
        assert rknn.load_pytorch(str(path), input_size_list=[[1, 3, 224, 224]]) == 0
        rknn.build(do_quantization=False)
        rknn.init_runtime()
        (got,) = rknn.inference(inputs=[x], data_format="nchw")
    assert got.shape == (1, 1000)
    assert _max_rel(got, want) <= 1e-4


@pytest.mark.slow
def test_vendor_style_pytorch_script(resnet18_pt: tuple[Path, Any], tmp_path: Path) -> None:
    """The vendor's pytorch/resnet18 example flow with only the import changed; int8 against torch's float."""
    path, traced = resnet18_pt
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(4)]
    dataset = write_dataset(tmp_path / "cal", images)
    img = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    mean, std = [123.675, 116.28, 103.53], [58.395, 58.395, 58.395]
    x = ((img.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    with torch.no_grad():
        want = traced(torch.from_numpy(x)).numpy()

    rknn = RKNN()
    assert rknn.config(mean_values=[mean], std_values=[std], target_platform="rk3588") == 0
    assert rknn.load_pytorch(model=str(path), input_size_list=[[1, 3, 224, 224]]) == 0
    assert rknn.build(do_quantization=True, dataset=str(dataset)) == 0
    assert rknn.export_rknn(str(tmp_path / "resnet18.rknn")) == 0
    assert rknn.init_runtime() == 0
    outputs = rknn.inference(inputs=[img])
    rknn.release()
    got = outputs[0].ravel()
    cos = float(np.dot(got, want.ravel()) / (np.linalg.norm(got) * np.linalg.norm(want)))
    print(f"resnet18 int8 (4 calibration images) cosine vs torch float: {cos:.4f}")
    assert cos > 0.95


class TwoInputs(nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(10, 8)

    def forward(self, image: Any, vector: Any) -> Any:
        pooled = self.conv(image).mean(dim=(2, 3))
        return torch.sigmoid(pooled + self.fc(vector))


def test_two_input_torchscript_and_its_errors(tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = TwoInputs().eval()
    path = tmp_path / "two.pt"
    traced = torch.jit.trace(net, (torch.rand(1, 3, 12, 12), torch.rand(1, 10)))
    traced.save(str(path))
    image = np.random.default_rng(1).random((1, 3, 12, 12), dtype=np.float32)
    vector = np.random.default_rng(2).random((1, 10), dtype=np.float32)
    with torch.no_grad():
        want = traced(torch.from_numpy(image), torch.from_numpy(vector)).numpy()
    with RKNN(raise_errors=True) as rknn:
        rknn.config(float_dtype="float32")
        rknn.load_pytorch(str(path), input_size_list=[[1, 3, 12, 12], [1, 10]])
        rknn.build(do_quantization=False)
        rknn.init_runtime()
        (got,) = rknn.inference(inputs=[image, vector], data_format=["nchw", None])
    assert _max_rel(got, want) <= 1e-4

    with RKNN(raise_errors=True) as rknn, pytest.raises(ModelLoadError, match=r"1 shape\(s\) but the model takes 2"):
        rknn.load_pytorch(str(path), input_size_list=[[1, 3, 12, 12]])
    state = tmp_path / "weights.pth"
    torch.save(net.state_dict(), str(state))
    with RKNN(raise_errors=True) as rknn, pytest.raises(ModelLoadError, match=r"weights\.pth: not a TorchScript"):
        rknn.load_pytorch(str(state), input_size_list=[[1, 3, 12, 12], [1, 10]])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    rknn = RKNN()
    assert rknn.load_pytorch(str(junk), input_size_list=[[1, 3, 12, 12]]) == -1
    assert "junk.pt: not a TorchScript archive" in str(rknn.last_error)


# -- a quantized (QAT/PTQ) TorchScript model keeps its quantization --------------------------------------------
class _Quantizable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Conv2d(8, 4, 3)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: Any) -> Any:
        return self.dequant(self.head(self.relu(self.conv(self.quant(x)))))


def test_quantized_torchscript_keeps_its_quantization(tmp_path: Path) -> None:
    tq = torch.ao.quantization
    torch.manual_seed(4)
    net = _Quantizable().eval()
    net.qconfig = tq.get_default_qconfig("fbgemm")
    tq.fuse_modules(net, [["conv", "relu"]], inplace=True)
    tq.prepare(net, inplace=True)
    for _ in range(8):
        net(torch.rand(1, 3, 16, 16))
    tq.convert(net, inplace=True)
    x = torch.rand(1, 3, 16, 16)
    traced = torch.jit.trace(net, x)
    path = tmp_path / "int8.pt"
    traced.save(str(path))
    want = traced(x).numpy()
    out_scale = float(net.head.scale)
    with RKNN(raise_errors=True) as rknn:
        rknn.load_pytorch(str(path), input_size_list=[[1, 3, 16, 16]])
        ops = [n.op_type for n in rknn._loaded.model.graph.node] if rknn._loaded else []
        rknn.build(do_quantization=False)
        rknn.init_runtime()
        (got,) = rknn.inference(inputs=[x.numpy()], data_format="nchw")
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 3, ops
    # torch's fbgemm kernels requantize in integer arithmetic, ONNX Runtime in float: a step apart at most twice
    assert np.abs(got - want).max() <= 2 * out_scale + 1e-6, (np.abs(got - want).max(), out_scale)
    images = [np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(2)]
    with RKNN(raise_errors=True) as rknn:
        rknn.load_pytorch(str(path), input_size_list=[[1, 3, 16, 16]])
        with pytest.raises(RkfarmError, match="already quantized"):
            rknn.build(do_quantization=True, dataset=str(write_dataset(tmp_path / "cal", images)))


# -- the CLI -------------------------------------------------------------------------------------------------
def test_cli_builds_torchscript_and_refuses_options_that_do_not_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    path = tmp_path / "small.pt"
    torch.jit.trace(net, torch.rand(1, 3, 8, 8)).save(str(path))
    out = tmp_path / "small.rkfm"
    assert main(["build", str(path), "--input-size", "1,3,8,8", "-o", str(out)]) == 0
    assert out.stat().st_size > 0
    capsys.readouterr()

    assert main(["build", str(path)]) != 0
    assert "a TorchScript model needs --input-size" in capsys.readouterr().err
    assert main(["build", str(path), "--input-size", "1,3,8,8", "--blobs", str(path)]) != 0
    err = capsys.readouterr().err
    assert "--blobs does not apply to a TorchScript model" in err and "Traceback" not in err
    onnx_path = tmp_path / "m.onnx"
    onnx.save(onnx.load_from_string(_onnx_bytes()), str(onnx_path))
    assert main(["build", str(onnx_path), "--weights", str(path)]) != 0
    assert "--weights does not apply to an ONNX model" in capsys.readouterr().err
