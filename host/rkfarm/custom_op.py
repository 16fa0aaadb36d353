"""Helpers for custom-op classes, as the vendor's ``rknn.api.custom_op`` provides them.

A custom op's ``compute(self, node, inputs)`` receives the ONNX ``NodeProto`` being run and reads its
attributes with :func:`get_node_attr`, e.g. ``axis = get_node_attr(node, 'axis')``.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import helper


def get_node_attr(node: onnx.NodeProto, name: str) -> Any:
    """The value of attribute ``name`` of ``node``, or None if the node has no such attribute.

    Values are what the vendor returns: ``int``, ``float``, ``str`` for a string (decoded as UTF-8),
    lists for ``ints``/``floats``, ``list[bytes]`` for ``strings``, and the protobuf message itself for
    tensors (``onnx.TensorProto``; ``numpy_helper.to_array`` makes it an array), graphs and type protos.
    The first attribute of that name wins; an attribute that refers to a function's attribute
    (``ref_attr_name``) has no value here and raises ``ValueError``.
    """
    for attr in node.attribute:
        if attr.name == name:
            value = helper.get_attribute_value(attr)
            if attr.type == onnx.AttributeProto.STRING:
                return value.decode("utf-8")
            return value
    return None


__all__ = ["get_node_attr"]
