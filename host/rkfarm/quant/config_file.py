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
the grid covers, so ``scale`` and ``zero_point`` follow from them by the scheme's formulas. Reading keeps both:
``parameters`` as written, ``ranges`` as written; hybrid quantization step 2 (``rkfarm.quant.hybrid``) honours a
range edited by hand by deriving new parameters from it. Floats are written with full precision, so a table
survives a write/read round trip bit for bit.

``custom_quantize_layers`` maps a tensor to the dtype its layer should compute in: ``float16`` or ``float32``
keep it in float (``int8`` is accepted and changes nothing). Errors name the file, the line and the tensor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

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
FLOAT_LAYER_DTYPES = ("float16", "float32")  # custom_quantize_layers values that keep a layer in float
INT8_LAYER_DTYPES = ("int8", "w8a8", "asymmetric_quantized-8")  # accepted; the layer stays int8
Range = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


@dataclass
class QuantConfig:
    """A parsed ``.quantization.cfg``: the parameters, and layers the user asked to keep in another dtype."""

    parameters: dict[str, QuantParams]
    custom_quantize_layers: dict[str, str] = field(default_factory=dict)
    ranges: dict[str, Range] = field(default_factory=dict)  # min/max as written, per entry
    lines: dict[tuple[str, str], int] = field(default_factory=dict)  # (section, tensor) -> 1-based line
    source: str = "<quantization cfg>"

    def where(self, section: str, name: str) -> str:
        """``file: line N`` for an entry, for error messages."""
        line = self.lines.get((section, name))
        return f"{self.source}: line {line}" if line else self.source

    def float_layers(self) -> list[str]:
        """Tensors of ``custom_quantize_layers`` asked to stay in float, in file order."""
        return [name for name, dtype in self.custom_quantize_layers.items() if dtype in FLOAT_LAYER_DTYPES]


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
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return str(yaml.dump(document, Dumper=dumper, sort_keys=False, default_flow_style=False, indent=4, width=1 << 16))


def write_quant_cfg(
    path: str | Path, parameters: Mapping[str, QuantParams], custom_quantize_layers: Mapping[str, str] | None = None
) -> Path:
    out = Path(path)
    try:
        out.write_text(dump_quant_cfg(parameters, custom_quantize_layers), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write quantization config {out}: {exc}") from None
    return out


def read_quant_cfg(path: str | os.PathLike[str]) -> QuantConfig:
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read quantization config {source}: {exc}") from None
    return parse_quant_cfg(text, str(source))


def parse_quant_cfg(text: str, source: str = "<quantization cfg>") -> QuantConfig:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)  # libyaml when present: 5x faster
    try:
        node = loader.get_single_node()
        document = loader.construct_document(node) if node is not None else None
        lines = _entry_lines(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: {at}not valid YAML ({problem})") from None
    finally:
        loader.dispose()
    if not isinstance(document, dict) or "quantize_parameters" not in document:
        raise ConfigError(f"{source}: expected 'custom_quantize_layers' and 'quantize_parameters' mappings")
    custom = document.get("custom_quantize_layers") or {}
    entries = document.get("quantize_parameters") or {}
    if not isinstance(custom, dict) or not isinstance(entries, dict):
        raise ConfigError(f"{source}: 'custom_quantize_layers' and 'quantize_parameters' must be mappings")
    config = QuantConfig({}, {}, {}, lines, source)
    for name, dtype in custom.items():
        if str(dtype) not in (*FLOAT_LAYER_DTYPES, *INT8_LAYER_DTYPES):
            raise ConfigError(
                f"{config.where('custom_quantize_layers', str(name))}: custom_quantize_layers: tensor {str(name)!r} "
                f"has dtype {dtype!r}; use one of {', '.join(FLOAT_LAYER_DTYPES + INT8_LAYER_DTYPES)}"
            )
        config.custom_quantize_layers[str(name)] = str(dtype)
    for name, entry in entries.items():
        where = f"{config.where('quantize_parameters', str(name))}: tensor {str(name)!r}"
        config.parameters[str(name)], config.ranges[str(name)] = _entry(entry, where)
    return config


def _entry_lines(root: object) -> dict[tuple[str, str], int]:
    """1-based line of every tensor key under the two top-level sections (from the YAML node tree)."""
    import yaml

    lines: dict[tuple[str, str], int] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key, value in root.value:
        if isinstance(value, yaml.MappingNode):
            for name, _ in value.value:
                lines[(str(key.value), str(name.value))] = name.start_mark.line + 1
    return lines


def _entry(entry: object, where: str) -> tuple[QuantParams, Range]:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with {', '.join(_KEYS)}")
    missing = [k for k in _KEYS if k not in entry]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    if entry["qtype"] not in QTYPES:
        raise ConfigError(f"{where}: qtype {entry['qtype']!r} is not one of {', '.join(QTYPES)}")
    dtype, qmethod = entry["dtype"], entry["qmethod"]
    if dtype not in ("int8", "int32"):
        raise ConfigError(
            f"{where}: dtype {dtype!r} is not int8 or int32 (to keep a layer in float, list it under "
            "custom_quantize_layers as 'tensor: float16')"
        )
    if qmethod not in ("layer", "channel"):
        raise ConfigError(f"{where}: qmethod {qmethod!r} is not layer or channel")
    try:
        scale = np.asarray(entry["scale"], np.float64).reshape(-1)
        zero_point = np.asarray(entry["zero_point"], np.int64).reshape(-1)
        lo = np.asarray(entry["min"], np.float64).reshape(-1)
        hi = np.asarray(entry["max"], np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: scale, zero_point, min and max must be lists of numbers") from None
    sizes = {scale.size, zero_point.size, lo.size, hi.size}
    if scale.size == 0 or len(sizes) != 1 or np.any(scale <= 0) or not np.all(np.isfinite([*lo, *hi, *scale])):
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
    return QuantParams(dtype, scale.astype(np.float32), zero_point, qmin, qmax, axis), (lo, hi)
