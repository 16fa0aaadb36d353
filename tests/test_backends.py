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
