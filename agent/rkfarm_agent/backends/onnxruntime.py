"""ONNX Runtime backend: runs ONNX payloads (float, float16, QDQ int8) on any board or PC.

core_mask -> threads: the vendor's NPU core bits become ONNX Runtime intra-op threads, one per set bit
(``NPU_CORE_AUTO`` = 0 lets ONNX Runtime choose, ``NPU_CORE_ALL`` = every CPU), capped at the CPU count. A
package built with ``single_core_mode=True`` runs on one core: one thread.
Per-layer times come from ONNX Runtime's own profiler, in a separate profiling session so that the main
session's timings are not disturbed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import psutil

from rkfarm_agent.backends.base import Array, Backend, LoadedModel
from rkfarm_agent.errors import BackendError
from rkfarm_proto.errors import InputError
from rkfarm_proto.platforms import NPU_CORE_0, NPU_CORE_ALL, NPU_CORE_AUTO, cores_in_mask
from rkfarm_proto.records import LayerProfile, LayerTiming, LoadOptions, MemoryReport
from rkfarm_proto.v1 import package_pb2

log = logging.getLogger(__name__)

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


def _session_options(core_mask: int, profile_prefix: str | None = None, spin_between_runs: bool = True) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    threads = threads_for_core_mask(core_mask)
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if not spin_between_runs:
        # An agent's worker threads stop spinning when a run ends instead of burning the cores that other
        # runs and the RPC threads need: 1.17x single-client and 1.05x 32-client throughput over ONNX
        # Runtime's default on loopback (benchmarks/load.py). In-process back-to-back calls (the simulator)
        # are faster with the default, so they keep it.
        so.add_session_config_entry("session.force_spinning_stop", "1")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def _open_session(
    payload: bytes, core_mask: int, profile_prefix: str | None = None, spin_between_runs: bool = True
) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            payload,
            _session_options(core_mask, profile_prefix, spin_between_runs),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises its own exception types from C++
        raise BackendError(f"ONNX Runtime cannot load the payload: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


class OnnxRuntimeModel(LoadedModel):
    def __init__(
        self, header: package_pb2.PackageHeader, payload: bytes, options: LoadOptions, serving: bool = False
    ) -> None:
        self._header = header
        self._payload = payload
        options = replace(options, core_mask=single_core_mask(header, options.core_mask))
        self._options = options
        import onnxruntime  # noqa: F401  (first import is process overhead, not this model's memory)

        rss_before = _rss()
        self._spin = not serving
        self._session = _open_session(payload, options.core_mask, spin_between_runs=self._spin)
        self._rss_loaded = _rss() - rss_before
        self._rss_first_run: int | None = None
        self._input_names = [spec.tensor.name for spec in header.inputs]
        self._output_names = [spec.name for spec in header.outputs]
        session_inputs = {i.name for i in self._session.get_inputs()}
        missing = [n for n in self._input_names if n not in session_inputs]
        if missing or len(session_inputs) != len(self._input_names):
            raise BackendError(
                f"package header inputs {self._input_names} do not match the payload's {sorted(session_inputs)}"
            )

    def run(self, feeds: Sequence[Array]) -> list[Array]:
        first = self._rss_first_run is None
        before = _rss() if first else 0
        try:
            outputs = self._session.run(self._output_names, dict(zip(self._input_names, feeds)))
        except Exception as exc:
            # Inputs were validated before reaching here; what remains is a shape the graph itself rejects.
            raise InputError(f"ONNX Runtime rejected the inputs: {_first_line(exc)}") from None
        if first:
            self._rss_first_run = max(0, _rss() - before)
        return [np.asarray(o) for o in outputs]

    def profile(self, feeds: Sequence[Array], runs: int) -> LayerProfile:
        with tempfile.TemporaryDirectory(prefix="rkfarm-prof-") as tmp:
            session = _open_session(self._payload, self._options.core_mask, str(Path(tmp) / "ort"))
            feed = dict(zip(self._input_names, feeds))
            session.run(self._output_names, feed)  # warm-up, excluded below
            for _ in range(runs):
                session.run(self._output_names, feed)
            trace = Path(session.end_profiling())
            events = json.loads(trace.read_text())
        return parse_ort_profile(events, skip_runs=1)

    def memory(self) -> MemoryReport:
        weights = int(self._header.weight_bytes) or len(self._payload)
        internal = int(self._header.activation_bytes)
        measured = self._rss_loaded + (self._rss_first_run or 0)
        other = max(0, measured - weights - internal)
        return MemoryReport(
            weight_bytes=weights,
            internal_bytes=internal,
            other_bytes=other,
            method=(
                "weight: constant tensors in the payload; internal: peak live intermediate tensors planned at "
                "build time; other: process RSS growth while loading and first run (psutil) not explained by "
                "weight + internal"
            ),
        )

    def close(self) -> None:
        self._session = None


def parse_ort_profile(events: list[dict[str, Any]], skip_runs: int = 0) -> LayerProfile:
    """Average per-node kernel times over runs from an ONNX Runtime profile trace."""
    run_events = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    run_events.sort(key=lambda e: e["ts"])
    if not run_events:
        return LayerProfile(layers=[], run_times_us=[])
    kept = run_events[skip_runs:] or run_events
    start = kept[0]["ts"]
    totals: dict[str, float] = defaultdict(float)
    first_seen: dict[str, tuple[int, dict[str, Any]]] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if event["ts"] < start:
            continue
        node = event["name"][: -len("_kernel_time")]
        totals[node] += float(event.get("dur", 0))
        if node not in first_seen:
            first_seen[node] = (event["ts"], event.get("args", {}))
    order = sorted(first_seen, key=lambda n: first_seen[n][0])
    runs = len(kept)
    layers = []
    for index, node in enumerate(order):
        args = first_seen[node][1]
        layers.append(
            LayerTiming(
                index=index,
                op_type=str(args.get("op_name", "")),
                data_type=_first_dtype(args.get("output_type_shape")),
                target=str(args.get("provider", "")).replace("ExecutionProvider", "") or "CPU",
                input_shapes=_shapes(args.get("input_type_shape")),
                output_shapes=_shapes(args.get("output_type_shape")),
                time_us=totals[node] / runs,
                name=node,
            )
        )
    return LayerProfile(layers=layers, run_times_us=[float(e.get("dur", 0)) for e in kept])


def _first_dtype(type_shapes: Any) -> str:
    for item in type_shapes or []:
        for dtype in item:
            return str(dtype)
    return ""


def _shapes(type_shapes: Any) -> str:
    parts = []
    for item in type_shapes or []:
        for _, dims in item.items():
            parts.append("(" + ",".join(str(d) for d in dims) + ")")
    return " ".join(parts)


class OnnxRuntimeBackend(Backend):
    name: ClassVar[str] = "onnxruntime"
    payload_kinds: ClassVar[frozenset[int]] = frozenset({package_pb2.PAYLOAD_KIND_ONNX})

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None  # imported lazily, on the first load

    def load(self, header: package_pb2.PackageHeader, payload: bytes, options: LoadOptions) -> LoadedModel:
        return OnnxRuntimeModel(header, payload, options, serving=self.serving)
