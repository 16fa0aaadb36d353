"""rkfarm.custom_op.get_node_attr returns what the vendor's rknn.api.custom_op.get_node_attr returns."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from rkfarm.custom_op import get_node_attr

WEIGHT = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")


@pytest.fixture()
def node() -> onnx.NodeProto:
    body = helper.make_graph([], "body", [], [])
    made = helper.make_node(
        "cstSoftmax",
        ["x"],
        ["y"],
        axis=2,
        alpha=0.1,
        mode="nearest",
        ints=[1, 2, 3],
        floats=[0.5, 1.5],
        strings=["a", "b"],
        weight=WEIGHT,
        weights=[WEIGHT, WEIGHT],
        body=body,
    )
    made.attribute.append(helper.make_attribute("axis", 9))  # a second 'axis': the first one wins
    made.attribute.append(helper.make_attribute("raw", b"\xff\x00"))
    made.attribute.append(helper.make_attribute("no_ints", [], attr_type=onnx.AttributeProto.INTS))
    undefined = onnx.AttributeProto()
    undefined.name = "undefined"
    made.attribute.append(undefined)
    return made


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("axis", 2),
        ("alpha", float(np.float32(0.1))),  # stored as float32: 0.10000000149011612, as the vendor returns
        ("mode", "nearest"),
        ("ints", [1, 2, 3]),
        ("floats", [0.5, 1.5]),
        ("strings", [b"a", b"b"]),  # lists of strings stay bytes, as with the vendor
        ("no_ints", []),
        ("undefined", None),
        ("missing", None),
        ("AXIS", None),  # names are case-sensitive
    ],
)
def test_scalar_and_list_values(node: onnx.NodeProto, name: str, want: Any) -> None:
    got = get_node_attr(node, name)
    assert got == want and type(got) is type(want)
    if isinstance(want, list) and want:
        assert all(type(g) is type(w) for g, w in zip(got, want))


def test_tensors_and_graphs_are_the_protos(node: onnx.NodeProto) -> None:
    weight = get_node_attr(node, "weight")
    assert isinstance(weight, onnx.TensorProto)
    np.testing.assert_array_equal(numpy_helper.to_array(weight), np.arange(6, dtype=np.float32).reshape(2, 3))
    weights = get_node_attr(node, "weights")
    assert isinstance(weights, list) and len(weights) == 2 and all(isinstance(w, onnx.TensorProto) for w in weights)
    body = get_node_attr(node, "body")
    assert isinstance(body, onnx.GraphProto) and body.name == "body"


def test_undecodable_string_raises_like_the_vendor(node: onnx.NodeProto) -> None:
    with pytest.raises(UnicodeDecodeError):
        get_node_attr(node, "raw")


def test_use_inside_a_custom_op_compute() -> None:
    class CstSoftmax:
        op_type = "cstSoftmax"

        def compute(self, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
            axis = get_node_attr(node, "axis")
            x = inputs[0]
            e = np.exp(x - x.max(axis=axis, keepdims=True))
            return [e / e.sum(axis=axis, keepdims=True)]

    node = helper.make_node("cstSoftmax", ["x"], ["y"], axis=0)
    (y,) = CstSoftmax().compute(node, [np.array([[1.0, 2.0], [3.0, 5.0]])])
    np.testing.assert_allclose(y.sum(axis=0), [1.0, 1.0])
    assert y[1, 1] > y[0, 1]
