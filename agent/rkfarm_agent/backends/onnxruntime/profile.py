"""ONNX Runtime's profiler trace (a JSON list of events) read into per-layer times."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rkfarm_proto.records import LayerProfile, LayerTiming


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
