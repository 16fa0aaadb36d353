"""Pre-quantized models (QDQ ONNX, quantized TorchScript from QAT): build keeps their own int8 quantization."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model

from conftest import cosine
from rkfarm import RKNN, graph
from rkfarm.build import build_package
from rkfarm.config import RknnConfig
from rkfarm.describe import describe_file, format_info
from rkfarm.errors import BuildError
from rkfarm.frontends.onnx import load_onnx
from rkfarm.quant import quantize
from rkfarm_proto.package import read_package

SHAPE = [1, 3, 16, 16]
QAT_SHAPE = [1, 3, 32, 32]
# The QDQ test model: 5 activation QuantizeLinear; 5 activation + 3 weight + 3 bias DequantizeLinear.
QUANTIZE_NODES, DEQUANTIZE_NODES = 5, 11


def qdq_model() -> onnx.ModelProto:
    """Conv-ReLU, Conv-ReLU (stride 2), GlobalAveragePool, Gemm as standard QDQ ONNX: int8 activations with
    zero points, int8 weights (per channel, per tensor for the Gemm), int32 biases — as a QAT export or an
    offline quantizer writes it."""
    rng = np.random.default_rng(0)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, value: npt.NDArray[np.generic]) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def qdq(x: str, name: str, scale: float, zero: int) -> str:
        s = const(f"{name}_scale", np.array(scale, np.float32))
        z = const(f"{name}_zero", np.array(zero, np.int8))
        nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [f"{name}_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", s, z], [f"{name}_dq"]))
        return f"{name}_dq"

    def weights(name: str, shape: list[int], in_scale: float, per_channel: bool) -> tuple[str, str]:
        w = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape).astype(np.float32)
        b = rng.normal(0.0, 0.1, shape[0]).astype(np.float32)
        flat = np.abs(w).reshape(shape[0], -1).max(axis=1)
        ws = (flat if per_channel else np.full(shape[0], flat.max())).astype(np.float32) / 127
        wq = np.clip(np.round(w / ws.reshape(-1, *[1] * (len(shape) - 1))), -127, 127).astype(np.int8)
        bs = (ws * np.float32(in_scale)).astype(np.float32)
        axis = {"axis": 0} if per_channel else {}
        scale = ws if per_channel else ws[:1].reshape(())
        wzero = np.zeros(shape[0], np.int8) if per_channel else np.array(0, np.int8)
        nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [const(f"{name}_wq", wq), const(f"{name}_ws", scale), const(f"{name}_wz", wzero)],
                [f"{name}_w"],
                **axis,
            )
        )
        bias_scale = bs if per_channel else bs[:1].reshape(())
        bias_zero = np.zeros(shape[0], np.int32) if per_channel else np.array(0, np.int32)
        bq = np.round(b / bs).astype(np.int32)
        nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [const(f"{name}_bq", bq), const(f"{name}_bs", bias_scale), const(f"{name}_bz", bias_zero)],
                [f"{name}_b"],
                **axis,
            )
        )
        return f"{name}_w", f"{name}_b"

    x = qdq("x", "in", 1 / 255, -128)
    w, b = weights("conv1", [8, 3, 3, 3], 1 / 255, per_channel=True)
    nodes.append(helper.make_node("Conv", [x, w, b], ["c1"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    x = qdq("r1", "a1", 0.01, -128)
    w, b = weights("conv2", [16, 8, 3, 3], 0.01, per_channel=True)
    nodes.append(helper.make_node("Conv", [x, w, b], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]))
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"]))
    x = qdq("r2", "a2", 0.01, -128)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    x = qdq("gap", "a3", 0.005, -128)
    nodes.append(helper.make_node("Flatten", [x], ["flat"]))
    w, b = weights("fc", [10, 16], 0.005, per_channel=False)
    nodes.append(helper.make_node("Gemm", ["flat", w, b], ["logits"], transB=1))
    y = qdq("logits", "out", 0.01, 0)
    nodes.append(helper.make_node("Identity", [y], ["y"]))
    g = helper.make_graph(
        nodes,
        "qdq_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = make_model(g, 17)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def weights_only_model() -> onnx.ModelProto:
    """The QDQ test model without its activation QuantizeLinear/DequantizeLinear: int8 weights, float compute."""
    model = qdq_model()
    g = model.graph
    quantized = {n.output[0]: n.input[0] for n in g.node if n.op_type == "QuantizeLinear"}
    bypass = {n.output[0]: quantized[n.input[0]] for n in g.node if n.input[0] in quantized}
    kept = [n for n in g.node if n.op_type != "QuantizeLinear" and n.output[0] not in bypass]
    for node in kept:
        node.input[:] = [bypass.get(i, i) for i in node.input]
    del g.node[:]
    g.node.extend(kept)
    graph.eliminate_dead_nodes(model)  # and the activations' scales and zero points
    onnx.checker.check_model(model)
    return model


def inputs(count: int, shape: list[int] = SHAPE) -> list[npt.NDArray[np.float32]]:
    rng = np.random.default_rng(1)
    return [rng.random(shape, dtype=np.float32) for _ in range(count)]


def qdq_counts(model: onnx.ModelProto) -> tuple[int, int]:
    ops = [n.op_type for n in model.graph.node]
    return ops.count("QuantizeLinear"), ops.count("DequantizeLinear")


def scale_types(model: onnx.ModelProto) -> set[int]:
    """Element types of every QuantizeLinear / DequantizeLinear scale (initializer or Constant node)."""
    types = {t.name: t.data_type for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return {types[n.input[1]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}


@pytest.fixture()
def qdq_path(tmp_path: Path) -> Path:
    path = tmp_path / "qdq_net.onnx"
    onnx.save(qdq_model(), str(path))
    return path


def build(source: Path, out: Path, **config: object) -> Path:
    with RKNN(raise_errors=True) as rknn:
        rknn.config(target_platform="rk3588", **config)
        rknn.load_onnx(str(source))
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(out))
    return out


def run_package(package: Path, xs: list[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(package))
        rknn.init_runtime()
        outs = []
        for x in xs:
            got = rknn.inference([x], data_format="nchw")
            assert got is not None
            outs.append(got[0])
    return outs


def test_qdq_onnx_keeps_its_quantization(qdq_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The default build (float16) runs and computes exactly what ONNX Runtime computes on the source model."""
    with caplog.at_level(logging.INFO, logger="rkfarm"):
        package = build(qdq_path, tmp_path / "qdq.rkfm")
    ref = ort.InferenceSession(str(qdq_path), providers=["CPUExecutionProvider"])
    xs = inputs(4)
    for x, got in zip(xs, run_package(package, xs)):
        want = ref.run(None, {"x": x})[0]
        assert np.abs(want).max() > 0.1, "the test model's output is not degenerate"
        np.testing.assert_array_equal(got, want)
    kept = [r.getMessage() for r in caplog.records if "own quantization" in r.getMessage()]
    assert len(kept) == 1 and f"{QUANTIZE_NODES} QuantizeLinear / {DEQUANTIZE_NODES} DequantizeLinear" in kept[0]

    header = read_package(package).header
    q = header.quantization
    assert (q.quantized, q.dtype, q.algorithm, q.method) == (True, "w8a8", "pre-quantized", "channel")
    assert (q.calibration_samples, q.quantized_tensors, q.weights_only) == (0, QUANTIZE_NODES, False)
    payload = onnx.load_from_string(read_package(package).payload)
    assert qdq_counts(payload) == (QUANTIZE_NODES, DEQUANTIZE_NODES)
    assert scale_types(payload) == {TensorProto.FLOAT}
    assert "int8 (w8a8, the model's own quantization: per-channel" in format_info(describe_file(package))


@pytest.mark.parametrize("level", [0, 1, 2, 3])
@pytest.mark.parametrize("float_dtype", ["float16", "float32"])
def test_every_level_and_dtype_same_numbers(qdq_path: Path, tmp_path: Path, level: int, float_dtype: str) -> None:
    """onnxslim at every optimization_level keeps the Q/DQ arithmetic; float_dtype does not touch it."""
    package = build(qdq_path, tmp_path / "qdq.rkfm", optimization_level=level, float_dtype=float_dtype)
    payload = onnx.load_from_string(read_package(package).payload)
    assert scale_types(payload) == {TensorProto.FLOAT}
    ref = ort.InferenceSession(str(qdq_path), providers=["CPUExecutionProvider"])
    xs = inputs(2)
    for x, got in zip(xs, run_package(package, xs)):
        np.testing.assert_array_equal(got, ref.run(None, {"x": x})[0])


def test_do_quantization_refused(qdq_path: Path, tmp_path: Path) -> None:
    """Like the vendor ("If a quantized model has been import, please set do_quantization = False")."""
    dataset = tmp_path / "dataset.txt"
    for i, x in enumerate(inputs(2)):
        np.save(tmp_path / f"s{i}.npy", x.transpose(0, 2, 3, 1))
    dataset.write_text("s0.npy\ns1.npy\n")
    loaded = load_onnx(str(qdq_path))
    with pytest.raises(BuildError, match=r"already quantized .*do_quantization=False"):
        build_package(loaded, RknnConfig(target_platform="rk3588"), True, str(dataset), quantizer=quantize)
    with RKNN() as rknn:
        rknn.config(target_platform="rk3588")
        assert rknn.load_onnx(str(qdq_path)) == 0
        assert rknn.build(do_quantization=True, dataset=str(dataset)) == -1


def test_quantize_weight_keeps_the_models_weights(
    qdq_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """quantize_weight has nothing to add to int8 weights: the vendor builds the same model; so does rkfarm."""
    plain = read_package(build(qdq_path, tmp_path / "plain.rkfm")).payload
    with caplog.at_level(logging.WARNING, logger="rkfarm"):
        package = read_package(build(qdq_path, tmp_path / "qw.rkfm", quantize_weight=True))
    assert any("quantize_weight" in r.getMessage() for r in caplog.records)
    assert package.header.quantization.quantized and not package.header.quantization.weights_only
    assert onnx.load_from_string(package.payload).graph.node == onnx.load_from_string(plain).graph.node


@pytest.mark.parametrize("float_dtype", ["float16", "float32"])
def test_weights_only_model_builds_as_float(tmp_path: Path, caplog: pytest.LogCaptureFixture, float_dtype: str) -> None:
    """Only weights dequantized: the vendor builds a float16 model from the dequantized weights; so does rkfarm."""
    source = tmp_path / "weights_only.onnx"
    onnx.save(weights_only_model(), str(source))
    with caplog.at_level(logging.INFO, logger="rkfarm"):
        package = build(source, tmp_path / "w.rkfm", float_dtype=float_dtype)
    assert any("only dequantize weights" in r.getMessage() for r in caplog.records)
    pkg = read_package(package)
    assert not pkg.header.quantization.quantized
    payload = onnx.load_from_string(pkg.payload)
    assert qdq_counts(payload) == (0, 0)
    want_type = TensorProto.FLOAT16 if float_dtype == "float16" else TensorProto.FLOAT
    assert {t.data_type for t in payload.graph.initializer if t.dims} == {want_type}
    ref = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    xs = inputs(2)
    for x, got in zip(xs, run_package(package, xs)):
        want = ref.run(None, {"x": x})[0]
        if float_dtype == "float32":
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # the same weights; measured 2.4e-7 apart
        else:
            assert cosine(got, want) >= 0.9999


def test_to_float16_refuses_quantized_model() -> None:
    with pytest.raises(BuildError, match="QuantizeLinear"):
        graph.to_float16(qdq_model())


# -- quantized TorchScript (the vendor's pytorch/resnet18_qat flow) -----------------------------------------------


def make_qat_torchscript(path: Path) -> tuple[Any, float]:
    """A small QAT model: fused Conv+BN+ReLU twice, pooling, Linear; a few steps on random data; converted to
    int8 modules, traced and saved. Returns the traced module (torch's own int8 reference) and the scale of
    its output."""
    torch = pytest.importorskip("torch", reason="quantized TorchScript needs torch (pip install torch==2.13.0)")
    from torch import nn
    from torch.ao import quantization as tq

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
            self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
            self.relu2, self.pool, self.fc = nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Linear(16, 10)

        def forward(self, x: object) -> object:
            x = self.relu1(self.bn1(self.conv1(self.quant(x))))
            x = self.relu2(self.bn2(self.conv2(x)))
            return self.dequant(self.fc(self.pool(x).flatten(1)))

    torch.manual_seed(0)
    torch.backends.quantized.engine = "qnnpack"
    net = tq.fuse_modules_qat(Net().train(), [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"]])
    net.qconfig = tq.get_default_qat_qconfig("qnnpack")
    tq.prepare_qat(net, inplace=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for _ in range(5):
        loss = net(torch.rand(4, *QAT_SHAPE[1:])).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    quantized = tq.convert(net.eval())
    traced = torch.jit.trace(quantized, torch.rand(*QAT_SHAPE))
    traced.save(str(path))
    return traced, float(quantized.fc.scale)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")  # torch.ao.quantization's deprecation and tracer warnings
def test_qat_torchscript_matches_torch(tmp_path: Path) -> None:
    """The vendor's pytorch/resnet18_qat flow: load_pytorch, build(do_quantization=False), simulate."""
    traced, step = make_qat_torchscript(tmp_path / "qat.pt")
    import torch

    out = tmp_path / "qat.rkfm"
    with RKNN(raise_errors=True) as rknn:
        rknn.config(target_platform="rk3588")
        rknn.load_pytorch(str(tmp_path / "qat.pt"), input_size_list=[QAT_SHAPE])
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(out))
    xs = inputs(4, QAT_SHAPE)
    with torch.no_grad():
        wants = [traced(torch.from_numpy(x)).numpy() for x in xs]
    # torch's int8 kernels and ONNX Runtime's may round a value one output step apart (measured: none apart).
    for got, want in zip(run_package(out, xs), wants):
        assert cosine(got, want) >= 0.9999
        assert np.abs(got - want).max() <= step * 1.001

    package = read_package(out)
    assert package.header.quantization.quantized and package.header.source_framework == "pytorch"
    payload = onnx.load_from_string(package.payload)
    quantize, dequantize = qdq_counts(payload)
    assert quantize >= 4 and dequantize >= quantize + 6  # activations, plus weights and biases of 2 Conv + Gemm
    assert scale_types(payload) == {TensorProto.FLOAT}
