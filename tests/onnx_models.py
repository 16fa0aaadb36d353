"""Models the tests make with onnx.helper, written at the lowest IR version their opset allows.

onnx writes its newest IR version into every model unless told otherwise (14 for onnx 1.23), and ONNX Runtime 1.23,
the newest for Python 3.10, reads up to 11. rkfarm lowers what it loads and what it packages
(`rkfarm.graph.fit_ir_version`, tested in test_graph.py on a model at onnx's default); a test that hands its own model
straight to ONNX Runtime or to an agent's backend makes it here, so it loads on every Python the README names.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import helper


def make_model(graph: onnx.GraphProto, opset: int, **kwargs: Any) -> onnx.ModelProto:
    """``helper.make_model`` with the default domain at ``opset`` and the lowest IR version for it."""
    opsets = [helper.make_opsetid("", opset)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets), **kwargs)
