"""ONNX Runtime's profiler trace (a JSON list of events) read into per-layer times, and where it is written.

ONNX Runtime writes its trace to a file, and the trace names every node and shape of the model — for an
encrypted model, what the encryption hides. So the file goes to a private (0700) folder in memory-backed
storage (``/dev/shm``) when the machine has it, and the folder is removed on every path out; folders left by a
killed process are swept on the next profile.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rkfarm_proto.records import LayerProfile, LayerTiming

log = logging.getLogger(__name__)

PREFIX = "rkfarm-prof-"
MEMORY_DIR = Path("/dev/shm")
STALE_S = 3600.0  # a trace folder this old belongs to a process that died while profiling


def trace_root() -> Path:
    """Where trace folders go: memory-backed storage when writable, else the temporary folder."""
    if MEMORY_DIR.is_dir() and os.access(MEMORY_DIR, os.W_OK | os.X_OK):
        return MEMORY_DIR
    return Path(tempfile.gettempdir())


def sweep_stale(root: Path, now: float | None = None) -> list[Path]:
    """Remove this user's trace folders older than STALE_S under ``root``; returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    for folder in root.glob(PREFIX + "*"):
        try:
            info = folder.lstat()
            if folder.is_dir() and info.st_uid == os.getuid() and now - info.st_mtime > STALE_S:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        except OSError:
            continue
    if removed:
        log.info("removed %d stale profile folder(s) under %s", len(removed), root)
    return removed


def profiled(run: Callable[[str], str]) -> list[dict[str, Any]]:
    """The events of a trace that ``run(prefix)`` writes (it returns the trace's path), read back in memory;
    the private folder holding it is gone when this returns or raises."""
    root = trace_root()
    sweep_stale(root)
    with tempfile.TemporaryDirectory(prefix=PREFIX, dir=root) as folder:  # mkdtemp: mode 0700
        trace = Path(run(str(Path(folder) / "ort")))
        events: list[dict[str, Any]] = json.loads(trace.read_text())
    return events


def parse_ort_profile(events: list[dict[str, Any]], skip_runs: int = 0) -> LayerProfile:
    """Average per-node kernel times over runs from an ONNX Runtime profile trace."""
    run_events = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    run_events.sort(key=lambda e: e["ts"])
    if not run_events:
        return LayerProfile(layers=[], run_times_us=[])
    kept = run_events[skip_runs:] or run_events
    start = kept[0]["ts"]
    totals: dict[str, float] = defaultdict(float)
    first_seen: dict[str, tuple[int, dict[str, Any]]] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if event["ts"] < start:
            continue
        node = event["name"][: -len("_kernel_time")]
        totals[node] += float(event.get("dur", 0))
        if node not in first_seen:
            first_seen[node] = (event["ts"], event.get("args", {}))
    order = sorted(first_seen, key=lambda n: first_seen[n][0])
    runs = len(kept)
    layers = []
    for index, node in enumerate(order):
        args = first_seen[node][1]
        layers.append(
            LayerTiming(
                index=index,
                op_type=str(args.get("op_name", "")),
                data_type=_first_dtype(args.get("output_type_shape")),
                target=str(args.get("provider", "")).replace("ExecutionProvider", "") or "CPU",
                input_shapes=_shapes(args.get("input_type_shape")),
                output_shapes=_shapes(args.get("output_type_shape")),
                time_us=totals[node] / runs,
                name=node,
            )
        )
    return LayerProfile(layers=layers, run_times_us=[float(e.get("dur", 0)) for e in kept])


def _first_dtype(type_shapes: Any) -> str:
    for item in type_shapes or []:
        for dtype in item:
            return str(dtype)
    return ""


def _shapes(type_shapes: Any) -> str:
    parts = []
    for item in type_shapes or []:
        for _, dims in item.items():
            parts.append("(" + ",".join(str(d) for d in dims) + ")")
    return " ".join(parts)
