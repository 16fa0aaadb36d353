"""The simulator: a package run in-process by the agent's own ONNX Runtime backend code.

It is the same backend class and the same input conversion the agent uses, so the simulator and a board
running the onnxruntime backend compute the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy.typing as npt

from rkfarm import __version__
from rkfarm.errors import NotSupportedError
from rkfarm.perf import PerfData
from rkfarm.runtime import Array, Runtime
from rkfarm_agent.backends.onnxruntime import OnnxRuntimeBackend
from rkfarm_agent.perf import dummy_feeds, measure
from rkfarm_proto.package import ModelPackage
from rkfarm_proto.records import LoadOptions, MemoryReport, PerfOptions
from rkfarm_proto.v1 import package_pb2


class SimulatorRuntime(Runtime):
    where = "simulator (ONNX Runtime in this process)"

    def __init__(self, package: ModelPackage, payload: bytes, options: LoadOptions) -> None:
        if package.header.payload_kind == package_pb2.PAYLOAD_KIND_RKNN:
            raise NotSupportedError(
                "a vendor .rknn model cannot run on the simulator: use init_runtime(target='rk3588', "
                "device_id=...) with a board agent that has the rknnrt backend"
            )
        self._header = package.header
        self._model = OnnxRuntimeBackend().load(package.header, payload, options)
        self._adapter = self._model.make_adapter(package.header)
        self._last_feeds: list[Array] | None = None

    def inference(
        self,
        inputs: Sequence[npt.ArrayLike],
        data_format: str | Sequence[str | None] | None = None,
        inputs_pass_through: Sequence[int | bool] | None = None,
    ) -> list[Array]:
        feeds = self._adapter(inputs, data_format, inputs_pass_through)
        outputs = self._model.run(feeds)
        self._last_feeds = feeds
        return outputs

    def eval_perf(self, options: PerfOptions) -> PerfData:
        result = measure(self._model, self._last_feeds or dummy_feeds(self._header), options)
        profile = result.profile
        return PerfData(
            run_times_us=result.run_times_us,
            layers=profile.layers if profile else [],
            where=self.where,
            profiled_run_times_us=profile.run_times_us if profile else [],
        )

    def eval_memory(self) -> MemoryReport:
        return self._model.memory()

    def versions(self) -> str:
        return f"DRV: simulator: rkfarm {__version__} ({OnnxRuntimeBackend.version()})"

    def close(self) -> None:
        self._model.close()
