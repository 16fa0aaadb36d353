"""Model utilities that mirror the vendor's ``rknn.utils``: ``from rkfarm.utils import onnx_edit``.

Like the vendor's package, ``rkfarm.utils.onnx_edit`` is the *function*. The spelling
``from rkfarm.utils.onnx_edit import onnx_edit`` works too: that module name is an alias of the implementation
module, registered here because a submodule file of that name would shadow the function.
"""

from __future__ import annotations

import sys

from rkfarm.errors import OnnxEditError
from rkfarm.utils import _onnx_edit
from rkfarm.utils._onnx_edit import onnx_edit

sys.modules.setdefault(f"{__name__}.onnx_edit", _onnx_edit)

__all__ = ["OnnxEditError", "onnx_edit"]
