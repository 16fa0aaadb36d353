"""A sweep's results as data: one ``BoardRun`` per board and the ``SweepResult`` that holds them (JSON-ready).

``rkfarm.farm.sweep`` fills them in; ``rkfarm.farm.report`` renders them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rkfarm_proto.records import LayerTiming


@dataclass
class BoardRun:
    """One board's share of a sweep. ``ok`` False: ``error`` says why (``vanished``: the board left mid-job)."""

    agent_id: str
    address: str = ""
    platform: str = ""
    version: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    ok: bool = False
    error: str = ""
    vanished: bool = False
    attempts: list[str] = field(default_factory=list)
    where: str = ""
    latency_us: dict[str, float] = field(default_factory=dict)  # LatencyStats fields
    fps: float = 0.0
    run_times_us: list[float] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)  # LayerTiming fields
    memory: dict[str, Any] = field(default_factory=dict)  # eval_memory's dict
    uploaded_bytes: int = 0
    open_s: float = 0.0  # upload (if needed) and Load
    perf_s: float = 0.0
    elapsed_s: float = 0.0  # the whole job: hold, open, measure, close, release
    history_runs: list[int] = field(default_factory=list)

    @property
    def median_us(self) -> float | None:
        return self.latency_us.get("median_us")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SweepResult:
    """A sweep's outcome: the model, what selected the boards, and one ``BoardRun`` per board."""

    model: str
    model_sha256: str
    selectors: list[str]
    runs: int
    warmup: int
    per_layer: bool
    core_mask: int
    started_unix: float
    wall_s: float = 0.0
    boards: list[BoardRun] = field(default_factory=list)

    @property
    def succeeded(self) -> list[BoardRun]:
        return [b for b in self.boards if b.ok]

    @property
    def failed(self) -> list[BoardRun]:
        return [b for b in self.boards if not b.ok]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "succeeded": len(self.succeeded), "failed": len(self.failed)}


def layer_key(layer: LayerTiming | dict[str, Any]) -> str:
    """How layers are matched across boards: their name, else op type and index."""
    data = layer if isinstance(layer, dict) else dataclasses.asdict(layer)
    return str(data.get("name") or f"{data.get('op_type')}#{data.get('index')}")


__all__ = ["BoardRun", "SweepResult", "layer_key"]
