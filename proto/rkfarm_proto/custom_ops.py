"""Custom operators, as both sides name them.

A node that runs a Python implementation instead of an ONNX Runtime kernel sits in ``CUSTOM_OP_DOMAIN`` in a
package's payload, whatever domain its source model used, and its op type is listed in the package header's
``custom_ops``. Op types starting with ``cst`` are the vendor's non-standard ops; any other registered op type is
a standard ONNX op whose implementation the user replaces.
"""

from __future__ import annotations

CUSTOM_OP_DOMAIN = "rkfarm.custom"
# model metadata key: JSON {tensor name: ONNX element type} for every custom node's inputs and outputs, so the
# runtime can declare its Python ops even where a pass dropped the graph's intermediate value_info
IO_TYPES_KEY = "rkfarm.custom_op_io_types"
NONSTANDARD_PREFIX = "cst"  # the vendor's naming rule for op types that are not ONNX ops


def is_nonstandard(op_type: str) -> bool:
    """An op type ONNX does not define (the vendor requires such types to start with 'cst')."""
    return op_type.startswith(NONSTANDARD_PREFIX)
