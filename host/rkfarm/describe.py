"""Describe model files for people (`rkfarm info`) and scripts (`--json`)."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from rkfarm.errors import PackageError
from rkfarm.prequant import ALGORITHM as PREQUANTIZED
from rkfarm_proto.package import detect_format, read_package, vendor_rknn_version
from rkfarm_proto.tensors import dtype_name, shape_str
from rkfarm_proto.v1 import common_pb2, package_pb2

_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _real_types(message: Message, data: dict[str, Any]) -> dict[str, Any]:
    """Undo protobuf's JSON mapping of 64-bit integers to strings (``"payload_size": "300400"``), recursively."""
    for field in message.DESCRIPTOR.fields:
        if field.name not in data:
            continue
        value = data[field.name]
        if field.type in _INT64_TYPES:
            data[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(field):
            sub = getattr(message, field.name)
            if isinstance(value, list):
                data[field.name] = [_real_types(m, d) for m, d in zip(sub, value)]
            elif isinstance(value, dict):
                data[field.name] = _real_types(sub, value)
    return data


def _is_map(field: Any) -> bool:
    kind = field.message_type
    return kind is not None and bool(kind.GetOptions().map_entry)


def _option_value(text: str) -> Any:
    """A recorded build option (``repr()`` of the config value) as the value itself; plain text stays text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def header_dict(header: package_pb2.PackageHeader) -> dict[str, Any]:
    """The header as JSON-ready data, with enum names shortened, dtypes readable, numbers as numbers and build
    options as the values they were (``"quantized_algorithm": "mmse"``, not ``"'mmse'"``)."""
    data = MessageToDict(header, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    data = _real_types(header, data)
    data["build_options"] = {k: _option_value(v) for k, v in sorted(header.build_options.items())}
    data["payload_kind"] = package_pb2.PayloadKind.Name(header.payload_kind).removeprefix("PAYLOAD_KIND_").lower()
    data["inputs"] = [
        {
            **_tensor(spec.tensor),
            "mean_values": list(spec.mean_values),
            "std_values": list(spec.std_values),
            "quant_img_rgb2bgr": spec.quant_img_rgb2bgr,
        }
        for spec in header.inputs
    ]
    data["outputs"] = [_tensor(t) for t in header.outputs]
    enc = data.get("encryption", {})
    enc.pop("salt", None)
    enc["recipients"] = [k.recipient for k in header.encryption.keys]
    enc.pop("keys", None)
    return data


def _tensor(t: common_pb2.TensorSpec) -> dict[str, Any]:
    return {
        "name": t.name,
        "dtype": dtype_name(t.dtype),
        "shape": list(t.shape),
        "layout": common_pb2.Layout.Name(t.layout).removeprefix("LAYOUT_").lower(),
    }


def describe_file(path: Path) -> dict[str, Any]:
    """What the file is; for a package, its header. Raises PackageError for unreadable packages."""
    try:
        with path.open("rb") as fh:
            prefix = fh.read(64)
    except FileNotFoundError:
        raise PackageError(f"{path}: no such file") from None
    except OSError as exc:
        raise PackageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    kind = detect_format(prefix)
    info: dict[str, Any] = {"path": str(path), "format": kind, "size_bytes": path.stat().st_size}
    if kind == "rkfm":
        package = read_package(path)
        info["header"] = header_dict(package.header)
        if package.header.payload_kind == package_pb2.PAYLOAD_KIND_RKNN and not package.encrypted:
            from rkfarm.packages import vendor_rknn_metadata

            info["rknn_metadata"] = vendor_rknn_metadata(package.payload)
        return info
    if kind in ("rknn", "rknn-encrypted"):
        info["rknn_format_version"] = vendor_rknn_version(prefix)
        info["note"] = (
            "vendor RKNN-Toolkit2 model: runs only on the vendor runtime librknnrt (a board agent with the "
            "rknnrt backend); rkfarm can send it to such an agent but cannot simulate it"
        )
        data = path.read_bytes()
        info["sha256"] = hashlib.sha256(data).hexdigest()
        if kind == "rknn":
            from rkfarm.packages import vendor_rknn_metadata

            info["rknn_metadata"] = vendor_rknn_metadata(data)
        return info
    if kind == "onnx":
        info["note"] = "ONNX model: build a package from it with `rkfarm build` (or RKNN.load_onnx + build)"
        return info
    raise PackageError(f"{path}: not a model file rkfarm recognises (no package, .rknn or ONNX signature)")


def _precision(h: dict[str, Any]) -> str:
    q = h.get("quantization", {})
    if q.get("weights_only"):
        return f"int8 weights, {h.get('float_dtype') or 'float'} compute (quantize_weight)"
    if q.get("algorithm") == PREQUANTIZED:
        return (
            f"int8 ({q.get('dtype')}, the model's own quantization: per-{q.get('method')}, "
            f"{q.get('quantized_tensors')} quantized activations, no calibration)"
        )
    if q.get("quantized"):
        return (
            f"int8 ({q.get('dtype')}, {q.get('algorithm')}, per-{q.get('method')}, "
            f"{q.get('calibration_samples')} calibration samples)"
        )
    return str(h.get("float_dtype") or "n/a")


def format_info(info: dict[str, Any]) -> str:
    lines = [f"{info['path']}: {info['format']}, {info['size_bytes']} bytes"]
    if "note" in info:
        lines.append(f"  {info['note']}")
        if info.get("rknn_format_version") is not None:
            lines.append(f"  RKNN file format version: {info['rknn_format_version']}")
        meta = info.get("rknn_metadata")
        if meta:
            lines.append(f"  toolkit version:  {meta.get('toolkit_version') or 'unknown'}")
            lines.append(f"  compiler version: {meta.get('compiler_version') or 'unknown'}")
            lines.append(f"  target platform:  {', '.join(meta.get('target_platforms') or []) or 'unknown'}")
            for side in ("inputs", "outputs"):
                for t in meta.get(side) or []:
                    lines.append(f"  {side[:-1]}: {t['name']} {t['dtype'] or ''}{shape_str(t['shape'] or [])}")
        elif info["format"] == "rknn":
            lines.append("  toolkit version and target platform: not readable (an unknown .rknn layout)")
        return "\n".join(lines)
    h = info["header"]
    q = h.get("quantization", {})
    lines += [
        f"  producer:        {h['producer']}  ({h['created_utc']})",
        f"  source:          {h['source_model_name']} [{h['source_framework']}] "
        f"sha256 {h['source_model_sha256'][:16]}…",
        f"  target platform: {h['target_platform'] or 'any'}",
        f"  payload:         {h['payload_kind']}, {h['payload_size']} bytes, sha256 {h['payload_sha256'][:16]}…"
        + (f", opset {h['opset']}" if h.get("opset") else ""),
        f"  precision:       {_precision(h)}",
        f"  weights:         {int(h.get('weight_bytes', 0))} bytes; "
        f"peak activations {int(h.get('activation_bytes', 0))} bytes",
    ]
    if q.get("float_tensors"):
        lines.append(f"  kept in float:   {', '.join(q['float_tensors'])}")
    enc = h.get("encryption", {})
    if enc.get("algorithm"):
        lines.append(
            f"  encryption:      {enc['algorithm']} level {enc.get('crypt_level')} ({enc.get('kdf')}), "
            f"for {', '.join(enc.get('recipients', [])) or 'nobody'}"
        )
    if h.get("custom_string"):
        lines.append(f"  custom string:   {h['custom_string']}")
    lines.append("  inputs:")
    for t in h["inputs"]:
        norm = ""
        if t["mean_values"] or t["std_values"]:
            norm = f"  mean {t['mean_values'] or '0'} std {t['std_values'] or '1'}"
        lines.append(f"    {t['name']}: {t['dtype']}{shape_str(t['shape'])} {t['layout']}{norm}")
    lines.append("  outputs:")
    for t in h["outputs"]:
        lines.append(f"    {t['name']}: {t['dtype']}{shape_str(t['shape'])}")
    if h.get("build_options"):
        opts = ", ".join(f"{k}={v}" for k, v in sorted(h["build_options"].items()))
        lines.append(f"  build options:   {opts}")
    meta = info.get("rknn_metadata")
    if meta:
        platforms = ", ".join(meta.get("target_platforms") or []) or "unknown"
        lines.append(f"  vendor .rknn:    RKNN-Toolkit2 {meta.get('toolkit_version') or 'unknown'}, for {platforms}")
    return "\n".join(lines)
