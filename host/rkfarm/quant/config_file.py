"""The vendor's ``.quantization.cfg``: per-tensor quantization parameters as YAML, written and read back.

Shape (as RKNN-Toolkit2's hybrid quantization writes it)::

    custom_quantize_layers: {}
    quantize_parameters:
        <tensor>:
            qtype: asymmetric_quantized
            qmethod: layer            # or channel
            dtype: int8               # int32 for biases
            min: [...]                # one entry per tensor, or one per channel
            max: [...]
            scale: [...]
            zero_point: [...]

rkfarm adds ``axis`` to per-channel entries (the vendor infers it from the layer). ``min``/``max`` are the range
the grid covers, so ``scale`` and ``zero_point`` follow from them by the scheme's formulas; when reading, scale
and zero point are authoritative and min/max are checked against them. Floats are written with full precision,
so a table survives a write/read round trip bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rkfarm.errors import ConfigError
from rkfarm.quant.scheme import (
    INT8_MAX,
    INT8_MIN,
    INT32_MAX,
    INT32_MIN,
    QTYPE,
    WEIGHT_LEVEL,
    QuantParams,
)

QTYPES = (QTYPE, "symmetric_quantized")
_KEYS = ("qtype", "qmethod", "dtype", "min", "max", "scale", "zero_point")


@dataclass
class QuantConfig:
    """A parsed ``.quantization.cfg``: the parameters, and layers the user asked to keep in another dtype."""

    parameters: dict[str, QuantParams]
    custom_quantize_layers: dict[str, str] = field(default_factory=dict)


def dump_quant_cfg(
    parameters: Mapping[str, QuantParams], custom_quantize_layers: Mapping[str, str] | None = None
) -> str:
    import yaml

    entries: dict[str, dict[str, Any]] = {}
    for name, p in parameters.items():
        entry: dict[str, Any] = {
            "qtype": QTYPE,
            "qmethod": p.qmethod,
            "dtype": p.dtype,
            "min": [float(v) for v in p.min],
            "max": [float(v) for v in p.max],
            "scale": [float(v) for v in p.scale],
            "zero_point": [int(v) for v in p.zero_point],
        }
        if p.axis is not None:
            entry["axis"] = int(p.axis)
        entries[name] = entry
    document = {"custom_quantize_layers": dict(custom_quantize_layers or {}), "quantize_parameters": entries}
    return str(yaml.safe_dump(document, sort_keys=False, default_flow_style=False, indent=4, width=1 << 16))


def write_quant_cfg(
    path: str | Path, parameters: Mapping[str, QuantParams], custom_quantize_layers: Mapping[str, str] | None = None
) -> Path:
    out = Path(path)
    try:
        out.write_text(dump_quant_cfg(parameters, custom_quantize_layers), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write quantization config {out}: {exc}") from None
    return out


def read_quant_cfg(path: str | Path) -> QuantConfig:
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read quantization config {source}: {exc}") from None
    return parse_quant_cfg(text, str(source))


def parse_quant_cfg(text: str, source: str = "<quantization cfg>") -> QuantConfig:
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(document, dict) or "quantize_parameters" not in document:
        raise ConfigError(f"{source}: expected 'custom_quantize_layers' and 'quantize_parameters' mappings")
    custom = document.get("custom_quantize_layers") or {}
    entries = document.get("quantize_parameters") or {}
    if not isinstance(custom, dict) or not isinstance(entries, dict):
        raise ConfigError(f"{source}: 'custom_quantize_layers' and 'quantize_parameters' must be mappings")
    parameters = {str(name): _entry(entry, f"{source}: tensor {name!r}") for name, entry in entries.items()}
    return QuantConfig(parameters, {str(k): str(v) for k, v in custom.items()})


def _entry(entry: object, where: str) -> QuantParams:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with {', '.join(_KEYS)}")
    missing = [k for k in _KEYS if k not in entry]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    if entry["qtype"] not in QTYPES:
        raise ConfigError(f"{where}: qtype {entry['qtype']!r} is not one of {', '.join(QTYPES)}")
    dtype, qmethod = entry["dtype"], entry["qmethod"]
    if dtype not in ("int8", "int32") or qmethod not in ("layer", "channel"):
        raise ConfigError(f"{where}: dtype must be int8 or int32 and qmethod layer or channel")
    try:
        scale = np.asarray(entry["scale"], np.float64).reshape(-1)
        zero_point = np.asarray(entry["zero_point"], np.int64).reshape(-1)
        lo = np.asarray(entry["min"], np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: scale, zero_point and min must be lists of numbers") from None
    if scale.size == 0 or scale.size != zero_point.size or scale.size != lo.size or np.any(scale <= 0):
        raise ConfigError(f"{where}: scale, zero_point, min and max need the same count and positive scales")
    if qmethod == "layer" and scale.size != 1:
        raise ConfigError(f"{where}: qmethod layer takes one scale, got {scale.size}")
    axis = int(entry.get("axis", 0)) if qmethod == "channel" else None
    if dtype == "int32":
        qmin, qmax = INT32_MIN, INT32_MAX
    else:
        # the grid's lowest level: -127 for symmetric weights, -128 for activations
        lowest = np.round(lo / scale) + zero_point
        qmin = -WEIGHT_LEVEL if np.all(lowest == -WEIGHT_LEVEL) else INT8_MIN
        qmax = INT8_MAX
    return QuantParams(dtype, scale.astype(np.float32), zero_point, qmin, qmax, axis)
