"""Options and result records both sides use, and their wire forms (``agent.proto`` messages), defined once.

The simulator and a board produce the same records: the agent turns them into messages, the host's remote
client turns messages back into them, and the public API (``PerfReport.layers``, ``eval_memory()``) hands
them to users. Each converter lives beside its record so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from rkfarm_proto.platforms import NPU_CORE_AUTO
from rkfarm_proto.v1 import agent_pb2

PERF_RUNS = 50  # eval_perf's timed runs
PERF_WARMUP = 5  # and the untimed runs before them
PROFILE_RUNS = 20  # runs averaged into a per-layer table (the profiler slows every run it watches)


@dataclass(frozen=True)
class LoadOptions:
    """How to open a model: ``core_mask`` in the vendor's NPU core bits (``NPU_CORE_AUTO`` = 0), the per-layer
    profiler (``perf_debug``) and memory accounting (``eval_mem``), as ``init_runtime()`` takes them."""

    core_mask: int = NPU_CORE_AUTO
    perf_debug: bool = False
    eval_mem: bool = False

    def to_request(self, model_sha256: str, lease_s: float = 0.0, client: str = "") -> agent_pb2.LoadRequest:
        return agent_pb2.LoadRequest(
            model_sha256=model_sha256,
            core_mask=self.core_mask,
            perf_debug=self.perf_debug,
            eval_mem=self.eval_mem,
            lease_s=lease_s,
            client=client,
        )

    @classmethod
    def from_request(cls, request: agent_pb2.LoadRequest) -> LoadOptions:
        return cls(core_mask=request.core_mask, perf_debug=request.perf_debug, eval_mem=request.eval_mem)


@dataclass(frozen=True)
class PerfOptions:
    """How ``eval_perf`` measures: ``runs`` timed inferences after ``warmup`` untimed ones, and the per-layer
    table when ``per_layer``."""

    runs: int = PERF_RUNS
    warmup: int = PERF_WARMUP
    per_layer: bool = False

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0:
            raise ValueError(f"eval_perf needs runs >= 1 and warmup >= 0, got runs={self.runs}, warmup={self.warmup}")

    def to_request(self, session_id: str) -> agent_pb2.EvalPerfRequest:
        return agent_pb2.EvalPerfRequest(
            session_id=session_id, runs=self.runs, warmup=self.warmup, per_layer=self.per_layer
        )

    @classmethod
    def from_request(cls, request: agent_pb2.EvalPerfRequest) -> PerfOptions:
        """Unset fields take the defaults; ``warmup`` is optional on the wire so that 0 means 0."""
        warmup = request.warmup if request.HasField("warmup") else PERF_WARMUP
        return cls(runs=request.runs or PERF_RUNS, warmup=warmup, per_layer=request.per_layer)


@dataclass(frozen=True)
class LayerTiming:
    """One row of the per-layer performance table (the vendor's columns)."""

    index: int
    op_type: str
    data_type: str
    target: str
    input_shapes: str
    output_shapes: str
    time_us: float
    name: str

    def to_proto(self) -> agent_pb2.LayerTime:
        return agent_pb2.LayerTime(**dataclasses.asdict(self))

    @classmethod
    def from_proto(cls, message: agent_pb2.LayerTime) -> LayerTiming:
        return cls(**{f.name: getattr(message, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class LayerProfile:
    """Per-layer times averaged over the profiled runs, and each run's end-to-end time."""

    layers: list[LayerTiming]
    run_times_us: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class MemoryReport:
    """Memory of one loaded model, in bytes; ``method`` says how each figure was obtained."""

    weight_bytes: int
    internal_bytes: int
    other_bytes: int
    method: str

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.internal_bytes + self.other_bytes

    def to_proto(self, process_rss_bytes: int = 0) -> agent_pb2.EvalMemoryResponse:
        return agent_pb2.EvalMemoryResponse(
            weight_bytes=self.weight_bytes,
            internal_bytes=self.internal_bytes,
            other_bytes=self.other_bytes,
            total_bytes=self.total_bytes,
            method=self.method,
            process_rss_bytes=process_rss_bytes,
        )

    @classmethod
    def from_proto(cls, message: agent_pb2.EvalMemoryResponse) -> MemoryReport:
        return cls(message.weight_bytes, message.internal_bytes, message.other_bytes, message.method)


__all__ = [
    "PERF_RUNS",
    "PERF_WARMUP",
    "PROFILE_RUNS",
    "LayerProfile",
    "LayerTiming",
    "LoadOptions",
    "MemoryReport",
    "PerfOptions",
]
