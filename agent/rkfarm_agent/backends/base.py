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

from rkfarm_proto.errors import InputError
from rkfarm_proto.records import LayerProfile, LoadOptions, MemoryReport
from rkfarm_proto.v1 import common_pb2, package_pb2

Array = npt.NDArray[np.generic]


class LoadedModel(ABC):
    """A model opened by a backend, ready to run prepared inputs (see rkfarm_agent.inputs).

    ``run`` and ``profile`` check the number of feeds before the backend's own code (``_run``, ``_profile``)
    sees them; the adapter from ``make_adapter`` has checked each feed's shape and dtype.
    """

    input_count: int  # set by the backend when it opens the model

    def run(self, feeds: Sequence[Any]) -> list[Array]:
        """Run once on prepared inputs, in the header's input order; outputs in the header's order."""
        return self._run(self._checked(feeds))

    def profile(self, feeds: Sequence[Any], runs: int) -> LayerProfile:
        """Run ``runs`` times with the backend's profiler on and return per-layer times."""
        return self._profile(self._checked(feeds), runs)

    def _checked(self, feeds: Sequence[Any]) -> Sequence[Any]:
        if len(feeds) != self.input_count:
            raise InputError(f"model takes {self.input_count} input(s), got {len(feeds)} feed(s)")
        return feeds

    @abstractmethod
    def _run(self, feeds: Sequence[Any]) -> list[Array]:
        """The backend's run, on feeds already checked."""

    @abstractmethod
    def _profile(self, feeds: Sequence[Any], runs: int) -> LayerProfile:
        """The backend's profiled runs, on feeds already checked."""

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

    @classmethod
    def version(cls) -> str:
        """What this backend runs on, for Info and get_sdk_version() ("" when unknown)."""
        return ""

    @abstractmethod
    def load(self, header: package_pb2.PackageHeader, payload: bytes, options: LoadOptions) -> LoadedModel:
        """Open a payload (plaintext) described by ``header``."""


__all__ = ["Array", "Backend", "LoadedModel"]
