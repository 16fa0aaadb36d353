"""rkfarm: an open toolkit for Rockchip-NPU style edge inference.

``from rkfarm import RKNN`` is a drop-in for ``from rknn.api import RKNN`` (RKNN-Toolkit2 2.x).

``RKNN`` is imported on first use, so that ``import rkfarm.<module>`` (the command line's ``--help`` above
all) does not pay for numpy, ONNX and ONNX Runtime.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from rkfarm.errors import RkfarmError

__version__ = "0.1.0"
HOST_EXTRAS = "the rkfarm host package needs its extra dependencies: pip install 'rkfarm[host]'"

if TYPE_CHECKING:
    from rkfarm.api import RKNN


def __getattr__(name: str) -> Any:
    if name == "RKNN":
        if importlib.util.find_spec("onnx") is None:  # pragma: no cover - only on an agent-only install
            raise ImportError(HOST_EXTRAS)
        from rkfarm.api import RKNN

        return RKNN
    raise AttributeError(f"module 'rkfarm' has no attribute {name!r}")


__all__ = ["RKNN", "RkfarmError", "__version__"]
