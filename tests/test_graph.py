"""Graph passes on models the tests build: freezing inputs, dead nodes, batch size, weight accounting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model

from rkfarm import RKNN, graph
from rkfarm.errors import ModelLoadError


def two_input_model(path: Path) -> Path:
    """y = relu(a * w + b); a dead branch hangs off a."""
    w = numpy_helper.from_array(np.full((1, 4), 2.0, np.float32), "w")
    nodes = [
        helper.make_node("Mul", ["a", "w"], ["aw"], name="mul"),
        helper.make_node("Add", ["aw", "b"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu"),
        helper.make_node("Neg", ["a"], ["unused"], name="dead"),
    ]
    g = helper.make_graph(
        nodes,
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [w],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    return path


def test_input_initial_val_freezes_an_input(tmp_path: Path) -> None:
    path = two_input_model(tmp_path / "two.onnx")
    b = np.array([[-1.0, 0.0, 1.0, 2.0]], np.float32)
    with RKNN(raise_errors=True) as rknn:
        rknn.config(float_dtype="float32")
        rknn.load_onnx(str(path), input_initial_val=[None, b])
        rknn.build(do_quantization=False)
        assert rknn.package is not None
        assert [i.tensor.name for i in rknn.package.header.inputs] == ["a"]
        rknn.init_runtime()
        a = np.array([[1.0, -1.0, 0.5, 0.0]], np.float32)
        out = rknn.inference([a])
        assert out is not None
        np.testing.assert_allclose(out[0], np.maximum(a * 2 + b, 0))


def test_dead_nodes_removed_and_batch_fixed(tmp_path: Path) -> None:
    path = two_input_model(tmp_path / "two.onnx")
    with RKNN(raise_errors=True) as rknn:
        rknn.config(float_dtype="float32", optimization_level=0)
        rknn.load_onnx(str(path))
        rknn.build(do_quantization=False)
        assert rknn.package is not None
        payload = onnx.load_from_string(rknn.package.payload)
        assert "Neg" not in {n.op_type for n in payload.graph.node}
        assert list(rknn.package.header.inputs[0].tensor.shape) == [1, 4]  # dynamic batch -> 1
        assert rknn.package.header.weight_bytes == 16


def test_rknn_batch_size(tmp_path: Path) -> None:
    path = two_input_model(tmp_path / "two.onnx")
    with RKNN(raise_errors=True) as rknn:
        rknn.config(float_dtype="float32")
        rknn.load_onnx(str(path), input_size_list=[[1, 4], [1, 4]])
        rknn.build(do_quantization=False, rknn_batch_size=3)
        assert rknn.package is not None
        assert list(rknn.package.header.inputs[0].tensor.shape) == [3, 4]
        rknn.init_runtime()
        a = np.arange(12, dtype=np.float32).reshape(3, 4)
        b = np.ones((3, 4), np.float32)
        out = rknn.inference([a, b])
        assert out is not None and out[0].shape == (3, 4)


def test_cut_to_unknown_tensor_is_refused(tmp_path: Path) -> None:
    path = two_input_model(tmp_path / "two.onnx")
    with RKNN(raise_errors=True) as rknn, pytest.raises(ModelLoadError, match="not tensors of this model"):
        rknn.load_onnx(str(path), outputs=["nope"])


def test_cut_at_inner_input(tmp_path: Path) -> None:
    path = two_input_model(tmp_path / "two.onnx")
    with RKNN(raise_errors=True) as rknn:
        rknn.config(float_dtype="float32")
        rknn.load_onnx(str(path), inputs=["s"], input_size_list=[[1, 4]], outputs=["y"])
        rknn.build(do_quantization=False)
        rknn.init_runtime()
        s = np.array([[-2.0, -1.0, 1.0, 2.0]], np.float32)
        out = rknn.inference([s])
        assert out is not None
        np.testing.assert_array_equal(out[0], np.maximum(s, 0))


def test_topological_sort_repairs_appended_nodes() -> None:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    nodes = [helper.make_node("Relu", ["t"], ["y"]), helper.make_node("Neg", ["a"], ["t"])]
    model = make_model(helper.make_graph(nodes, "g", [a], [y]), 13)
    graph.topological_sort(model)
    assert [n.op_type for n in model.graph.node] == ["Neg", "Relu"]
    onnx.checker.check_model(model)
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("quantize", [False, True])
def test_packages_carry_the_lowest_ir_version_their_opsets_allow(tmp_path: Path, quantize: bool) -> None:
    """onnx writes its newest IR version (14 for onnx 1.23) into every model it makes; ONNX Runtime 1.23, the
    newest on Python 3.10 (Ubuntu 22.04 boards), reads up to 11. The payload says 7, the lowest for opset 13, and
    runs there; the numbers are the source's."""
    path = two_input_model(tmp_path / "two.onnx")
    assert onnx.load(path).ir_version == onnx.IR_VERSION
    with RKNN(raise_errors=True) as rknn:
        rknn.config(float_dtype="float32")
        rknn.load_onnx(str(path), input_size_list=[[1, 4], [1, 4]])
        dataset = tmp_path / "dataset.txt"
        if quantize:
            for k in range(4):
                np.save(tmp_path / f"a{k}.npy", np.full((1, 4), k - 1.5, np.float32))
                np.save(tmp_path / f"b{k}.npy", np.full((1, 4), 0.5, np.float32))
            dataset.write_text("".join(f"a{k}.npy b{k}.npy\n" for k in range(4)))
        rknn.build(do_quantization=quantize, dataset=str(dataset) if quantize else None)
        assert rknn.package is not None
        payload = onnx.load_from_string(rknn.package.payload)
        assert payload.ir_version == helper.find_min_ir_version_for(list(payload.opset_import), True) == 7
        a = np.array([[-1.0, 0.0, 0.5, 1.0]], np.float32)
        b = np.full((1, 4), 0.5, np.float32)
        session = ort.InferenceSession(rknn.package.payload, providers=["CPUExecutionProvider"])
        out = session.run(None, {"a": a, "b": b})[0]
        np.testing.assert_allclose(out, np.maximum(a * 2 + b, 0), atol=0.02 if quantize else 0)


def test_ir_version_follows_element_types_and_keeps_old_or_unknown_ones() -> None:
    def model(ir: int, opset: int, dtype: int) -> onnx.ModelProto:
        x, y = (helper.make_tensor_value_info(name, dtype, [1]) for name in "xy")
        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)

    cases = [
        (14, 13, TensorProto.FLOAT, 7),  # opset 13's lowest
        (14, 13, TensorProto.FLOAT8E4M3FN, 9),  # float8 came with IR 9
        (14, 13, TensorProto.INT4, 10),
        (14, 7, TensorProto.FLOAT, 4),  # not below 4: an IR 3 model lists its initializers as inputs
        (3, 7, TensorProto.FLOAT, 3),  # an old model stays old
        (14, 13, TensorProto.UINT2, 14),  # a type newer than the table: left as it is
        (6, 21, TensorProto.FLOAT, 10),  # a pass that raised the opset raises the IR version with it
    ]
    for ir, opset, dtype, expected in cases:
        m = model(ir, opset, dtype)
        graph.fit_ir_version(m)
        assert m.ir_version == expected, (ir, opset, dtype)
