"""rkfarm's side of the runner protocol: vendor toolkit jobs written as JSON, run in the vendor python, read back.

One ``run_jobs`` call is one vendor process (the toolkit and torch take seconds to import), however many jobs.
See ``runner.py`` for the file formats; the toolkit's console output goes to ``vendor.log`` in the folder.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rkfarm.vendor.env import VendorEnvError, child_env, vendor_python

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("runner.py")
DEFAULT_TIMEOUT_S = 3600.0


@dataclass
class VendorJob:
    """One model built by the toolkit: with its own calibration (``ranges`` None) or with given ranges."""

    id: str
    workdir: str
    model: str
    inputs: list[str]
    input_size_list: list[list[int]]
    config: dict[str, Any]
    quantize: bool = True
    dataset: str | None = None
    ranges: dict[str, list[float]] | None = None  # tensor -> [min, max], written into step 1's cfg
    evaluate: dict[str, str] = field(default_factory=dict)  # name -> .npy of N NHWC images, run on the simulator
    export: str | None = None  # .rknn path


@dataclass
class VendorResult:
    id: str
    ok: bool
    error: str = ""
    build_s: float = 0.0
    outputs: dict[str, list[npt.NDArray[np.float32]]] = field(default_factory=dict)  # per set: one array per output
    inference_s: dict[str, float] = field(default_factory=dict)
    replaced: list[str] = field(default_factory=list)  # cfg entries that took the given ranges
    kept: list[str] = field(default_factory=list)  # int8 cfg entries the ranges did not name (the toolkit's own)
    export: str | None = None
    cfg: str | None = None
    traceback: str = ""


@dataclass
class VendorRun:
    toolkit: str
    results: list[VendorResult]
    log: Path
    seconds: float

    def result(self, job_id: str) -> VendorResult:
        return next(r for r in self.results if r.id == job_id)


def run_jobs(jobs: list[VendorJob], folder: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> VendorRun:
    """Run ``jobs`` in one vendor process; a job that fails is reported in its result, not raised."""
    python = vendor_python()
    folder.mkdir(parents=True, exist_ok=True)
    spec_path, results_path, log_path = folder / "jobs.json", folder / "results.json", folder / "vendor.log"
    results_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps({"log": str(log_path), "jobs": [asdict(j) for j in jobs]}))
    started = time.perf_counter()
    log.info("vendor toolkit: %d job(s) in %s (log: %s)", len(jobs), python, log_path)
    try:
        done = subprocess.run(
            [str(python), str(RUNNER), str(spec_path), str(results_path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=child_env(),
        )
    except subprocess.TimeoutExpired:
        raise VendorEnvError(f"the vendor toolkit did not finish in {timeout_s:.0f} s (log: {log_path})") from None
    except OSError as exc:
        raise VendorEnvError(f"cannot run the vendor python {python}: {exc}") from None
    seconds = time.perf_counter() - started
    if not results_path.is_file():
        tail = _tail(log_path) or (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise VendorEnvError(f"the vendor toolkit process failed (exit {done.returncode}): {tail} (log: {log_path})")
    data = json.loads(results_path.read_text())
    results = []
    for raw in data["results"]:
        outputs = {}
        for name, path in (raw.get("outputs") or {}).items():
            with np.load(path) as npz:
                outputs[name] = [npz[f"arr_{k}"] for k in range(len(npz.files))]
        results.append(
            VendorResult(
                id=raw["id"],
                ok=bool(raw["ok"]),
                error=str(raw.get("error", "")),
                build_s=float(raw.get("build_s", 0.0)),
                outputs=outputs,
                inference_s={k: float(v) for k, v in (raw.get("inference_s") or {}).items()},
                replaced=list(raw.get("replaced", [])),
                kept=list(raw.get("kept", [])),
                export=raw.get("export"),
                cfg=raw.get("cfg"),
                traceback=str(raw.get("traceback", "")),
            )
        )
    return VendorRun(str(data.get("toolkit", "unknown")), results, log_path, seconds)


def _tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][-300:] if lines else ""
