"""An ONNX payload opened in ONNX Runtime. Per-layer times come from ONNX Runtime's own profiler, in a
separate profiling session so that the main session's timings are not disturbed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import psutil

from rkfarm_agent.backends.base import Array, LoadedModel
from rkfarm_agent.backends.onnxruntime.custom_ops import CustomOpError
from rkfarm_agent.backends.onnxruntime.profile import parse_ort_profile, profiled
from rkfarm_agent.backends.onnxruntime.session import (
    SPIN,
    STOP_AFTER_RUN,
    first_line,
    open_session,
    single_core_mask,
)
from rkfarm_agent.errors import BackendError
from rkfarm_agent.inputs import InputAdapter
from rkfarm_proto.errors import InputError
from rkfarm_proto.records import LayerProfile, LoadOptions, MemoryReport
from rkfarm_proto.v1 import package_pb2


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
        self._session = open_session(payload, core_mask=options.core_mask, spin=STOP_AFTER_RUN if serving else SPIN)
        self._rss_loaded = _rss() - rss_before
        self._rss_first_run: int | None = None
        self._input_names = [spec.tensor.name for spec in header.inputs]
        self._output_names = [spec.name for spec in header.outputs]
        self.input_count = len(self._input_names)
        session_inputs = {i.name for i in self._session.get_inputs()}
        missing = [n for n in self._input_names if n not in session_inputs]
        if missing or len(session_inputs) != len(self._input_names):
            raise BackendError(
                f"package header inputs {self._input_names} do not match the payload's {sorted(session_inputs)}"
            )
        check_shapes(header, {i.name: list(i.shape) for i in self._session.get_inputs()})

    def _run(self, feeds: Sequence[Array]) -> list[Array]:
        first = self._rss_first_run is None
        before = _rss() if first else 0
        try:
            outputs = self._session.run(self._output_names, dict(zip(self._input_names, feeds)))
        except CustomOpError:
            raise
        except Exception as exc:
            # Inputs were validated before reaching here; what remains is a shape the graph itself rejects.
            raise InputError(f"ONNX Runtime rejected the inputs: {first_line(exc)}") from None
        if first:
            self._rss_first_run = max(0, _rss() - before)
        return [np.asarray(o) for o in outputs]

    def _profile(self, feeds: Sequence[Array], runs: int) -> LayerProfile:
        feed = dict(zip(self._input_names, feeds))

        def run(prefix: str) -> str:
            session = open_session(self._payload, core_mask=self._options.core_mask, profile_prefix=prefix)
            session.run(self._output_names, feed)  # warm-up, excluded below
            for _ in range(runs):
                session.run(self._output_names, feed)
            return str(session.end_profiling())

        return parse_ort_profile(profiled(run), skip_runs=1)

    def make_adapter(self, header: package_pb2.PackageHeader) -> InputAdapter:
        """rkfarm's input conversion, held to the header's dynamic_input shape sets (if any): the simulator and
        an agent refuse the same shapes."""
        return InputAdapter(header.inputs, header.shape_sets)

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


def check_shapes(header: package_pb2.PackageHeader, payload_shapes: dict[str, list[object]]) -> None:
    """The header's input shapes must be the payload's: same rank, same size wherever both are fixed. A header
    that says otherwise would make the agent convert, allocate and time inputs the model does not take. Every
    dynamic_input shape set must fit the header's inputs (one shape each, same rank, same fixed dims)."""
    for spec in header.inputs:
        declared = list(spec.tensor.shape)
        actual = payload_shapes[spec.tensor.name]
        clash = len(declared) != len(actual) or any(
            isinstance(a, int) and a > 0 and d > 0 and a != d for d, a in zip(declared, actual)
        )
        if clash:
            raise BackendError(
                f"input {spec.tensor.name[:64]!r}: the package header says {declared[:8]}, the payload takes "
                f"{actual[:8]}: the package was altered or not made by rkfarm"
            )
    for index, shape_set in enumerate(header.shape_sets):
        shapes = [list(s.dims) for s in shape_set.inputs]
        fits = len(shapes) == len(header.inputs) and all(
            len(dims) == len(spec.tensor.shape)
            and all(d > 0 and (s < 0 or s == d) for d, s in zip(dims, spec.tensor.shape))
            for dims, spec in zip(shapes, header.inputs)
        )
        if not fits:
            raise BackendError(
                f"shape set {index} {str(shapes)[:120]} does not fit the header's inputs "
                f"{[list(spec.tensor.shape)[:8] for spec in header.inputs][:8]}: the package was altered or not made "
                "by rkfarm"
            )
