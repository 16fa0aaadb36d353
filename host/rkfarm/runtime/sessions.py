"""ONNX Runtime sessions for the host's own work (calibration, accuracy analysis, hybrid search).

They come from the agent's one session factory, so that the host runs a graph with the settings the simulator
and a board use; only how idle threads wait and which graph rewrites run are chosen here.
"""

from __future__ import annotations

from typing import Any

import onnx

from rkfarm.errors import BuildError
from rkfarm_agent.backends.onnxruntime.session import NO_SPIN, SPIN
from rkfarm_agent.backends.onnxruntime.session import open_session as ort_session
from rkfarm_agent.errors import BackendError


def open_session(model: onnx.ModelProto, what: str, *, calibration: bool = False) -> Any:
    """A session for ``model`` (``what`` names it in errors). Idle threads do not spin: between runs the host
    compares tensors on the same cores. ``calibration``: only basic graph rewrites, so that every node's output
    stays observable, and ONNX Runtime's default spinning (runs follow each other with little work between)."""
    try:
        if calibration:
            return ort_session(model.SerializeToString(), spin=SPIN, basic_optimizations=True)
        return ort_session(model.SerializeToString(), spin=NO_SPIN)
    except BackendError as exc:
        raise BuildError(f"cannot run the {what} model: {exc}") from None
