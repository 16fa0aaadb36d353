"""ONNX Runtime sessions, made in one place for every caller: the agent, the simulator, and the host's own
calibration and analysis runs, so that they all run a graph with the same settings.

core_mask -> threads: the vendor's NPU core bits become ONNX Runtime intra-op threads, one per set bit
(``NPU_CORE_AUTO`` = 0 lets ONNX Runtime choose, ``NPU_CORE_ALL`` = every CPU), capped at the CPU count. A
package built with ``single_core_mode=True`` runs on one core: one thread.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from typing import Any

from rkfarm_agent.backends.onnxruntime import custom_ops
from rkfarm_agent.errors import BackendError
from rkfarm_proto.platforms import NPU_CORE_0, NPU_CORE_ALL, NPU_CORE_AUTO, cores_in_mask
from rkfarm_proto.v1 import package_pb2

log = logging.getLogger(__name__)

# How a session's idle worker threads wait between runs.
SPIN = "spin"  # ONNX Runtime's default: fastest for back-to-back runs in one process (the simulator)
# An agent's worker threads stop spinning when a run ends instead of burning the cores that other runs and the
# RPC threads need: 1.17x single-client and 1.05x 32-client throughput over the default on loopback
# (benchmarks/load.py).
STOP_AFTER_RUN = "stop-after-run"
NO_SPIN = "no-spin"  # the host's analysis: between runs it compares tensors on the same cores
SPIN_MODES = (SPIN, STOP_AFTER_RUN, NO_SPIN)


def threads_for_core_mask(core_mask: int, cpu_count: int | None = None) -> int:
    """Intra-op thread count for a vendor core mask; 0 means 'let ONNX Runtime decide'."""
    cpus = cpu_count or os.cpu_count() or 1
    if core_mask == NPU_CORE_AUTO:
        return 0
    if core_mask == NPU_CORE_ALL:
        return cpus
    return max(1, min(cores_in_mask(core_mask), cpus))


def single_core_mask(header: package_pb2.PackageHeader, core_mask: int) -> int:
    """The core mask a package built with ``single_core_mode=True`` runs with: one core (auto becomes
    ``NPU_CORE_0``); a mask naming several cores is refused, as such a model has only one core's program."""
    if not header.single_core:
        return core_mask
    if core_mask == NPU_CORE_AUTO:
        return NPU_CORE_0
    if core_mask == NPU_CORE_ALL or cores_in_mask(core_mask) > 1:
        raise BackendError(
            f"the model was built with single_core_mode=True and runs on one NPU core; core_mask {core_mask:#x} "
            "names several: use NPU_CORE_AUTO, NPU_CORE_0, NPU_CORE_1 or NPU_CORE_2"
        )
    return core_mask


def open_session(
    model: bytes,
    *,
    core_mask: int = NPU_CORE_AUTO,
    spin: str = SPIN,
    basic_optimizations: bool = False,
    profile_prefix: str | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU for a serialized ONNX model; BackendError if it cannot load.

    ``basic_optimizations``: only ONNX Runtime's basic graph rewrites (every node's output stays observable, as
    calibration needs); ``profile_prefix``: profile every run into a trace file with that prefix. Custom-op nodes
    run the implementations registered in this process (``custom_ops``); a missing one is a BackendError.
    """
    if spin not in SPIN_MODES:
        raise ValueError(f"spin must be one of {SPIN_MODES}, not {spin!r}")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    threads = threads_for_core_mask(core_mask)
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if spin == STOP_AFTER_RUN:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    elif spin == NO_SPIN:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if basic_optimizations:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    custom = custom_ops.has_custom_nodes(model)
    if custom:
        model = custom_ops.bind(model)
        so.register_custom_ops_library(custom_ops.library_path())
    try:
        session = _session(ort, model, so, disabled_optimizers(ort.__version__, model))
    except Exception as exc:  # onnxruntime raises its own exception types from C++
        raise BackendError(f"ONNX Runtime cannot load the model: {first_line(exc)}") from None
    return custom_ops.CheckedSession(session) if custom else session


# ONNX Runtime's NHWC layout pass can pick an fp16 kernel that does not exist for the model's opset on an ARM core
# with FP16 arithmetic (RK3588's Cortex-A76/A55: "NOT_IMPLEMENTED ... com.ms.internal.nhwc.MaxPool(11)", seen on
# the emulated board). Without that one pass the same graph loads, computing the same numbers in NCHW.
NHWC_PASS = "NhwcTransformer"


# ONNX Runtime before 1.25.1 computes some int8 graphs differently from run to run, with one thread or several,
# once it has fused their QuantizeLinear/DequantizeLinear pairs into its QLinear kernels: on rkfarm's int8 YOLOv8n,
# 1.23.2 (the newest for Python 3.10) and 1.24.4 changed class scores by up to 0.16 between runs of one input;
# 1.25.1 and later, and 1.23.2 without those fusions, gave the same bits every run (docs/DESIGN-NOTES.md). There
# the fusions are off: the graph runs as its Q/DQ pairs around float kernels, slower but repeatable.
QDQ_FUSION_PASS = "QDQSelectorActionTransformer"
QDQ_FUSIONS_SOUND_FROM = (1, 25, 1)


def version_tuple(text: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string such as '1.23.2' or '1.26.0.dev20260101+cpu'."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part or 0) for part in match.groups()) if match else (0, 0, 0)


def int8_runs_unfused(ort_version: str) -> bool:
    """Whether sessions on that ONNX Runtime run int8 graphs without the QDQ fusions (see QDQ_FUSION_PASS)."""
    return version_tuple(ort_version) < QDQ_FUSIONS_SOUND_FROM


def disabled_optimizers(ort_version: str, model: bytes) -> list[str]:
    """The ONNX Runtime graph passes a session turns off for ``model`` (serialized) on that ONNX Runtime."""
    quantized = b"QuantizeLinear" in model or b"DequantizeLinear" in model  # op types are stored as plain strings
    if quantized and int8_runs_unfused(ort_version):
        _warn_unfused(ort_version)
        return [QDQ_FUSION_PASS]
    return []


@functools.cache
def _warn_unfused(ort_version: str) -> None:
    log.warning(
        "ONNX Runtime %s gives run-to-run different results for fused int8 graphs: running them unfused (slower); "
        "onnxruntime >= %s (Python >= 3.11) runs them fused",
        ort_version,
        ".".join(map(str, QDQ_FUSIONS_SOUND_FROM)),
    )


def _session(ort: Any, model: bytes, so: Any, disabled: list[str]) -> Any:
    try:
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    except Exception as exc:
        if "com.ms.internal.nhwc" not in str(exc):
            raise
    return ort.InferenceSession(
        model, so, providers=["CPUExecutionProvider"], disabled_optimizers=[*disabled, NHWC_PASS]
    )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (ONNX Runtime's run to many)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
