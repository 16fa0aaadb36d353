"""What the facade keeps between calls, what importing it costs, and eval_perf's counts on both runtimes."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from vendor_fixtures import example_folder

from rkfarm import RKNN
from rkfarm.runtime.simulator import SimulatorRuntime
from rkfarm_agent.perf import measure
from rkfarm_proto.package import read_package
from rkfarm_proto.records import PERF_WARMUP, LoadOptions, PerfOptions
from rkfarm_proto.v1 import agent_pb2


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return example_folder(tmp_path_factory.mktemp("state"), seed=31)


def test_release_and_load_rknn_forget_analysis_and_hybrid_results(work: Path, tmp_path: Path) -> None:
    rknn = RKNN(raise_errors=True)
    rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], auto_hybrid_cos_thresh=1.0)
    rknn.load_onnx(str(work / "small.onnx"))
    rknn.build(do_quantization=True, dataset=str(work / "dataset.txt"), auto_hybrid=True)
    rknn.accuracy_analysis([str(work / "cal0.png")], str(tmp_path / "snap"))
    rknn.export_rknn(str(tmp_path / "m.rkfm"))
    assert rknn.hybrid_result is not None and rknn.analysis_result is not None
    rknn.load_rknn(str(tmp_path / "m.rkfm"))  # another model: the old one's results must not linger
    assert rknn.hybrid_result is None and rknn.analysis_result is None
    rknn.load_onnx(str(work / "small.onnx"))
    rknn.build(do_quantization=True, dataset=str(work / "dataset.txt"), auto_hybrid=True)
    assert rknn.hybrid_result is not None
    rknn.release()
    assert rknn.hybrid_result is None and rknn.analysis_result is None and rknn.package is None


def test_warmup_zero_means_zero_on_the_wire() -> None:
    """proto3 could not tell warmup=0 from unset, so a board did 5 warm-ups where the simulator did none."""
    sent = PerfOptions(runs=3, warmup=0).to_request("s")
    assert sent.HasField("warmup") and PerfOptions.from_request(sent).warmup == 0
    unset = agent_pb2.EvalPerfRequest(session_id="s", runs=3)
    assert PerfOptions.from_request(unset) == PerfOptions(runs=3, warmup=PERF_WARMUP)
    with pytest.raises(ValueError, match="warmup >= 0"):
        PerfOptions(runs=1, warmup=-1)


class CountingModel:
    """A real ONNX Runtime model (the simulator's) that counts its runs."""

    def __init__(self, runtime: SimulatorRuntime) -> None:
        self.inner = runtime._model
        self.runs = 0

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.runs += 1
        return self.inner.run(feeds)

    def profile(self, feeds: Sequence[np.ndarray], runs: int) -> object:
        self.runs += runs
        return self.inner.profile(feeds, runs)


@pytest.mark.parametrize(("warmup", "per_layer"), [(0, False), (2, False), (0, True)])
def test_measure_runs_what_it_is_told(work: Path, tmp_path: Path, warmup: int, per_layer: bool) -> None:
    rknn = RKNN(raise_errors=True)
    rknn.load_onnx(str(work / "small.onnx"))
    rknn.build(do_quantization=False)
    rknn.export_rknn(str(tmp_path / "m.rkfm"))
    package = read_package(tmp_path / "m.rkfm")
    runtime = SimulatorRuntime(package, package.payload, LoadOptions())
    model = CountingModel(runtime)
    feeds = [np.zeros((1, 3, 16, 16), np.float32)]
    result = measure(model, feeds, PerfOptions(runs=4, warmup=warmup, per_layer=per_layer))  # type: ignore[arg-type]
    assert len(result.run_times_us) == 4
    assert model.runs == 4 + warmup + (4 if per_layer else 0)
    assert (result.profile is not None) == per_layer
    runtime.close()


def test_importing_rkfarm_loads_no_heavy_library() -> None:
    heavy = "('onnx', 'onnxruntime', 'torch', 'cv2', 'PIL')"
    code = f"import sys, rkfarm; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_rknn_leaves_logging_alone_unless_asked() -> None:
    logger = logging.getLogger("rkfarm")
    before = (list(logger.handlers), logger.level)
    RKNN().release()
    assert (list(logger.handlers), logger.level) == before
