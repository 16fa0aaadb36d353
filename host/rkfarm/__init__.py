"""rkfarm: an open toolkit for Rockchip-NPU style edge inference.

``from rkfarm import RKNN`` is a drop-in for ``from rknn.api import RKNN`` (RKNN-Toolkit2 2.x).
"""

import importlib.util

__version__ = "0.1.0"

if importlib.util.find_spec("onnx") is None:  # pragma: no cover - only on an agent-only install
    raise ImportError("the rkfarm host package needs its extra dependencies: pip install 'rkfarm[host]'")

from rkfarm.api import RKNN
from rkfarm.errors import RkfarmError

__all__ = ["RKNN", "RkfarmError", "__version__"]
