"""The one small interface every execution backend implements: load / run / profile / memory / close."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from rkfarm_proto.v1 import common_pb2, package_pb2

Array = npt.NDArray[np.generic]


@dataclass(frozen=True)
class LoadOptions:
    """How to open a session. ``core_mask`` uses the vendor's NPU core bits (0 = auto)."""

    core_mask: int = 0
    perf_debug: bool = False
    eval_mem: bool = False
    spin_between_runs: bool = True  # False on an agent serving many clients (see backends/onnxruntime.py)


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


class LoadedModel(ABC):
    """A model opened by a backend, ready to run prepared inputs (see rkfarm_agent.inputs)."""

    @abstractmethod
    def run(self, feeds: Sequence[Array]) -> list[Array]:
        """Run once on prepared inputs, in the header's input order; outputs in the header's order."""

    @abstractmethod
    def profile(self, feeds: Sequence[Array], runs: int) -> LayerProfile:
        """Run ``runs`` times with the backend's profiler on and return per-layer times."""

    @abstractmethod
    def memory(self) -> MemoryReport:
        """Memory used by this model."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the backend's resources."""

    def make_adapter(self, header: package_pb2.PackageHeader) -> Any:
        """What turns user arrays into this model's feeds: by default rkfarm's own conversion (layout,
        mean/std) from the header; a backend whose runtime converts by itself returns its own checker."""
        from rkfarm_agent.inputs import InputAdapter

        return InputAdapter(header.inputs)

    def describe_io(self) -> tuple[list[package_pb2.InputSpec], list[common_pb2.TensorSpec]] | None:
        """Inputs and outputs as the runtime reports them, when the package header does not say (a vendor
        .rknn wrapped by load_rknn)."""
        return None


class Backend(ABC):
    """A way of executing one or more payload kinds."""

    name: ClassVar[str]
    payload_kinds: ClassVar[frozenset[int]]

    @classmethod
    @abstractmethod
    def available(cls) -> bool:
        """Whether this machine can use the backend (library present, device present)."""

    @abstractmethod
    def load(self, header: package_pb2.PackageHeader, payload: bytes, options: LoadOptions) -> LoadedModel:
        """Open a payload (plaintext) described by ``header``."""
