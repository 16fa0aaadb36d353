"""The backend interface on its own: the base class checks feeds before a backend runs them; one ONNX Runtime
session factory serves the agent, the simulator and the host; backends report what they run on."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_models import make_model

from rkfarm_agent.backends import BACKENDS, backend_versions
from rkfarm_agent.backends.onnxruntime import OnnxRuntimeBackend, open_session
from rkfarm_agent.errors import BackendError
from rkfarm_proto.errors import InputError
from rkfarm_proto.records import LoadOptions
from rkfarm_proto.v1 import common_pb2, package_pb2


def two_input_model() -> tuple[package_pb2.PackageHeader, bytes]:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "add", [a, b], [y])
    model = make_model(graph, 17)
    model.ir_version = 8
    onnx.checker.check_model(model)
    header = package_pb2.PackageHeader(payload_kind=package_pb2.PAYLOAD_KIND_ONNX)
    for name in ("a", "b"):
        header.inputs.add().tensor.CopyFrom(
            common_pb2.TensorSpec(name=name, dtype=common_pb2.DATA_TYPE_FLOAT32, shape=[1, 4])
        )
    header.outputs.add().CopyFrom(common_pb2.TensorSpec(name="y", dtype=common_pb2.DATA_TYPE_FLOAT32, shape=[1, 4]))
    return header, model.SerializeToString()


def test_the_base_checks_the_feed_count_before_the_backend_runs() -> None:
    header, payload = two_input_model()
    model = OnnxRuntimeBackend().load(header, payload, LoadOptions())
    try:
        a, b = np.arange(4, dtype=np.float32)[None], np.ones((1, 4), np.float32)
        np.testing.assert_array_equal(model.run([a, b])[0], a + b)
        with pytest.raises(InputError, match=r"model takes 2 input\(s\), got 1 feed"):
            model.run([a])
        with pytest.raises(InputError, match=r"model takes 2 input\(s\), got 3 feed"):
            model.profile([a, b, b], runs=1)
        adapter = model.make_adapter(header)
        with pytest.raises(InputError, match="data_format has 3 entries for 2 input"):
            adapter([a, b], ["nchw", "nchw", "nchw"])
    finally:
        model.close()


def test_one_session_factory_refuses_bad_models_and_modes() -> None:
    _, payload = two_input_model()
    session = open_session(payload, core_mask=0x3, spin="no-spin", basic_optimizations=True)
    assert [i.name for i in session.get_inputs()] == ["a", "b"]
    with pytest.raises(BackendError, match="ONNX Runtime cannot load the model"):
        open_session(b"not a model")
    with pytest.raises(ValueError, match="spin must be one of"):
        open_session(payload, spin="fast")


def test_backends_report_what_they_run_on() -> None:
    versions = backend_versions()
    assert versions["backend.onnxruntime"] == f"onnxruntime {__import__('onnxruntime').__version__}"
    # without librknnrt (every PC) the rknnrt backend is not available and reports nothing
    assert BACKENDS["rknnrt"].available() == ("backend.rknnrt" in versions)


def _qdq_relu_model() -> bytes:
    """y = dequantize(quantize(relu(dequantize(quantize(x))))), scale 0.1, int8: a graph ONNX Runtime fuses."""
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("z", TensorProto.INT8, [], [0])
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("Relu", ["xd"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [scale, zero],
    )  # fmt: skip
    return make_model(g, 13).SerializeToString()


def test_int8_graphs_run_unfused_on_an_onnxruntime_whose_fused_kernels_vary() -> None:
    """ONNX Runtime 1.23/1.24 gave run-to-run different int8 YOLOv8n outputs once fused (docs/DESIGN-NOTES.md):
    sessions there turn the QDQ fusions off, for quantized graphs only; the graph still computes its Q/DQ values."""
    from rkfarm_agent.backends.onnxruntime.session import QDQ_FUSION_PASS, disabled_optimizers

    int8, float32 = _qdq_relu_model(), two_input_model()[1]
    assert disabled_optimizers("1.23.2", int8) == disabled_optimizers("1.24.4", int8) == [QDQ_FUSION_PASS]
    assert disabled_optimizers("1.25.1", int8) == disabled_optimizers("1.32.0", int8) == []
    assert disabled_optimizers("1.23.2", float32) == []
    import onnxruntime as ort

    x = np.array([[-1.0, -0.04, 0.0, 0.04, 0.06, 0.5, 1.23, 20.0]], np.float32)
    want = np.clip(np.round(np.maximum(np.clip(np.round(x / 0.1), -128, 127) * 0.1, 0) / 0.1), -128, 127) * 0.1
    unfused = ort.InferenceSession(int8, providers=["CPUExecutionProvider"], disabled_optimizers=[QDQ_FUSION_PASS])
    np.testing.assert_allclose(unfused.run(None, {"x": x})[0], want, atol=1e-6)
    np.testing.assert_allclose(open_session(int8).run(None, {"x": x})[0], want, atol=1e-6)


def test_doctor_says_when_int8_packages_run_unfused(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    from rkfarm_agent.doctor import cpu_check

    monkeypatch.setattr(ort, "__version__", "1.25.1")
    assert cpu_check().status == "ok" and "unfused" not in cpu_check().detail
    monkeypatch.setattr(ort, "__version__", "1.23.2")
    assert cpu_check().status == "ok" and "int8 ones unfused (slower)" in cpu_check().detail
