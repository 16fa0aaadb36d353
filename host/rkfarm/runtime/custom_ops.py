"""The custom-op registry of this process: the agent runtime's, which the simulator, calibration and analysis
sessions all run through (``rkfarm_agent.backends.onnxruntime.custom_ops``)."""

from __future__ import annotations

from rkfarm_agent.backends.onnxruntime.custom_ops import CustomOpError, register, registered, require

__all__ = ["CustomOpError", "register", "registered", "require"]
