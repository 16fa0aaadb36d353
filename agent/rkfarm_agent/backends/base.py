"""The one small interface every execution backend implements: load / run / profile / memory / close.

Its options and results (``LoadOptions``, ``LayerProfile``, ``MemoryReport``) are contracts: they live in
``rkfarm_proto.records``, because the host reads them back from the wire.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from rkfarm_proto.records import LayerProfile, LoadOptions, MemoryReport
from rkfarm_proto.v1 import common_pb2, package_pb2

Array = npt.NDArray[np.generic]


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
    """A way of executing one or more payload kinds. ``serving``: opened by an agent that serves many clients
    (a backend may then trade single-client latency for throughput), not in-process by the simulator."""

    name: ClassVar[str]
    payload_kinds: ClassVar[frozenset[int]]

    def __init__(self, *, serving: bool = False) -> None:
        self.serving = serving

    @classmethod
    @abstractmethod
    def available(cls) -> bool:
        """Whether this machine can use the backend (library present, device present)."""

    @abstractmethod
    def load(self, header: package_pb2.PackageHeader, payload: bytes, options: LoadOptions) -> LoadedModel:
        """Open a payload (plaintext) described by ``header``."""


__all__ = ["Array", "Backend", "LoadedModel"]
