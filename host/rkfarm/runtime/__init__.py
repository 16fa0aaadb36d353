"""Where a package runs: the in-process simulator or a remote agent, behind one interface.

This package is the host's one door to the agent's runtime (its backends, input conversion and timing), so
that the simulator runs exactly what a board runs; nothing else of the host imports ``rkfarm_agent``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from rkfarm.perf import PerfData
from rkfarm_agent.inputs import InputAdapter
from rkfarm_proto.records import MemoryReport, PerfOptions

Array = npt.NDArray[np.generic]


class Runtime(ABC):
    """A package opened for inference."""

    where: str

    @abstractmethod
    def inference(
        self,
        inputs: Sequence[npt.ArrayLike],
        data_format: str | Sequence[str | None] | None = None,
        inputs_pass_through: Sequence[int | bool] | None = None,
    ) -> list[Array]:
        """Outputs for one set of user inputs (converted per the package header)."""

    @abstractmethod
    def eval_perf(self, options: PerfOptions) -> PerfData:
        """Time inferences on the last inputs (zeros before the first inference), as ``options`` say."""

    @abstractmethod
    def eval_memory(self) -> MemoryReport:
        """Memory of the opened model."""

    @abstractmethod
    def versions(self) -> str:
        """The runtime's versions, for get_sdk_version()."""

    @abstractmethod
    def close(self) -> None:
        """Release the session."""


__all__ = ["Array", "InputAdapter", "Runtime"]
