"""The board-side Python API of RKNN-Toolkit-Lite2 (``rknnlite.api.RKNNLite``), on the agent's own code.

``from rkfarm_agent.lite import RKNNLite`` replaces ``from rknnlite.api import RKNNLite``; see
``rkfarm_agent.lite.api`` for what it supports and refuses.
"""

from __future__ import annotations

from rkfarm_agent.lite.api import RKNNLite
from rkfarm_agent.lite.errors import LiteError, NotSupportedError, OptionError, StateError

__all__ = ["LiteError", "NotSupportedError", "OptionError", "RKNNLite", "StateError"]
