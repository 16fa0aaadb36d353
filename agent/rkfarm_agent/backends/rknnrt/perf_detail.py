"""librknnrt's per-layer table (RKNN_QUERY_PERF_DETAIL) read into LayerTiming records."""

from __future__ import annotations

from rkfarm_proto.records import LayerTiming


def parse_perf_detail(text: str) -> list[LayerTiming]:
    """Rows of librknnrt's per-layer table: a header line naming the columns (ID, OpType, ..., Time(us),
    ..., FullName), then one row per layer with columns separated by runs of spaces."""
    lines = text.splitlines()
    header_at = next((i for i, line in enumerate(lines) if "Time(us)" in line and "OpType" in line), None)
    if header_at is None:
        return []
    columns = lines[header_at].split()
    layers = []
    for line in lines[header_at + 1 :]:
        cells = line.split()
        if len(cells) < len(columns) or not cells[0].isdigit():
            continue
        row = dict(zip(columns, cells))
        try:
            time_us = float(row.get("Time(us)", "0"))
        except ValueError:
            continue
        layers.append(
            LayerTiming(
                index=int(cells[0]) - 1,
                op_type=row.get("OpType", ""),
                data_type=row.get("DataType", ""),
                target=row.get("Target", ""),
                input_shapes=row.get("InputShape", ""),
                output_shapes=row.get("OutputShape", ""),
                time_us=time_us,
                name=cells[-1] if "FullName" in columns else "",
            )
        )
    return layers
