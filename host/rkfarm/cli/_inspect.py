"""What a source model takes before it is built: inputs (names, shapes, dynamic dims), outputs, opset, and the
``--input-size`` it needs. ``rkfarm info`` prints it; ``rkfarm build`` checks ``--input-size`` against it.

ONNX is read directly. The other frameworks go through their frontend (``rkfarm.frontends.detect``) where that
needs nothing but the file (Caffe with random weights, TFLite), or read what the file itself states (Darknet's
[net] section, a TensorFlow graph's Placeholders); TorchScript stores no input shapes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkfarm.errors import ModelLoadError, RkfarmError

if TYPE_CHECKING:
    import onnx

log = logging.getLogger("rkfarm.cli")
DYNAMIC = None  # a dim whose size the file does not fix


def _meaningful(name: str) -> bool:
    """A symbolic dim's name worth showing ('batch', 'height'), not a placeholder ('?', '-1', 'unk__12')."""
    return bool(name) and name.replace("_", "a").isalnum() and not name[0].isdigit() and not name.startswith("unk")


def _placeholder(index: int, rank: int) -> str:
    return "NCHW"[index] if rank == 4 else f"D{index}"


def _onnx_value(value: onnx.ValueInfoProto) -> dict[str, Any]:
    from onnx import helper

    t = value.type.tensor_type
    dims = list(t.shape.dim) if t.HasField("shape") else None
    shape = None if dims is None else [d.dim_value if d.dim_value > 0 else DYNAMIC for d in dims]
    names = None if dims is None else [d.dim_param if _meaningful(d.dim_param) else None for d in dims]
    try:
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else None
    except (KeyError, TypeError, ValueError):
        dtype = None
    return {"name": value.name, "dtype": dtype, "shape": shape, "dim_names": names}


def _graph_info(model: onnx.ModelProto) -> dict[str, Any]:
    inits = {i.name for i in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "inputs": [_onnx_value(v) for v in model.graph.input if v.name not in inits],
        "outputs": [_onnx_value(v) for v in model.graph.output],
        "opset": opset,
        "ir_version": model.ir_version,
        "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p) or None,
        "nodes": len(model.graph.node),
    }


def read_onnx_info(path: Path) -> dict[str, Any]:
    """An ONNX file's inputs, outputs and opset, without its external weights or any graph pass."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such file") from None
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a valid ONNX model (cannot parse it: {exc})") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return _graph_info(model)


def _darknet(path: Path) -> dict[str, Any]:
    from rkfarm.frontends.common import read_source
    from rkfarm.frontends.darknet.cfg import parse_cfg

    net = parse_cfg(read_source(path, "a darknet .cfg"), path).sections[0]

    def value(key: str, default: int) -> int:
        option = net.options.get(key)
        if option is None:
            return default
        try:
            return int(option.value)
        except ValueError:
            raise ModelLoadError(f"{path}: [net] {key}={option.value!r} is not a number") from None

    shape = [1, value("channels", 3), value("height", 416), value("width", 416)]
    return {
        "inputs": [{"name": "input", "dtype": "float32", "shape": shape, "dim_names": None}],
        "outputs": None,
        "note": "input from the [net] section; the outputs are known once built with --weights",
    }


def _tensorflow(path: Path) -> dict[str, Any]:
    from rkfarm.frontends.common import read_source
    from rkfarm.frontends.tensorflow import _parse

    graph_def = _parse(read_source(path, "a frozen TensorFlow graph"), path)
    inputs = []
    for node in graph_def.node:
        if node.op != "Placeholder":
            continue
        shape_attr = node.attr["shape"].shape
        shape = None if shape_attr.unknown_rank else [d.size if d.size >= 0 else DYNAMIC for d in shape_attr.dim]
        inputs.append({"name": node.name, "dtype": None, "shape": shape, "dim_names": None})
    return {
        "inputs": inputs,
        "outputs": None,
        "note": "a frozen graph names no outputs: build it with --inputs NAME --outputs NAME --input-size DIMS",
    }


def source_info(path: Path, framework: str | None = None) -> dict[str, Any]:
    """What ``rkfarm info`` says about a source model (the keys of docs/CLI-JSON.md's source-model object)."""
    from rkfarm.frontends import FRONTENDS, detect

    fe = FRONTENDS[framework] if framework else detect(path)
    info: dict[str, Any] = {"path": str(path), "format": "source-model", "framework": fe.name}
    try:
        info["size_bytes"] = path.stat().st_size
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such file") from None
    if fe.name == "onnx":
        info.update(read_onnx_info(path))
    elif fe.name == "darknet":
        info.update(_darknet(path))
    elif fe.name == "tensorflow":
        info.update(_tensorflow(path))
    elif fe.name == "pytorch":
        info.update(inputs=None, outputs=None, note="TorchScript stores no input shapes: give --input-size "
                    "(one per forward() argument) to build it")  # fmt: skip
    else:  # caffe (random weights do for shapes), tflite: the frontend's own conversion
        args: tuple[Any, ...] = (None, None) if fe.name == "caffe" else ()
        loaded = fe.loader()(path, *args)
        info.update(_graph_info(loaded.model))
        info["note"] = f"shapes as converted from {fe.describe}"
    info["input_size"] = input_size_advice(info.get("inputs"), fe.name)
    return info


def input_size_advice(inputs: list[dict[str, Any]] | None, framework: str) -> dict[str, Any]:
    """Whether ``--input-size`` is needed, and an example with the dims to choose marked."""
    if inputs is None:
        return {"needed": framework == "pytorch", "example": None, "reason": "the file states no input shapes"}
    free = []
    example = []
    for value in inputs:
        shape = value.get("shape")
        names = value.get("dim_names") or [None] * len(shape or [])
        if shape is None:
            free.append(f"{value['name']} (no shape)")
            example.append("DIMS")
            continue
        dims = []
        for i, (d, n) in enumerate(zip(shape, names)):
            if d is DYNAMIC and i > 0:
                free.append(f"{value['name']} dim {i}" + (f" ({n})" if n else ""))
            dims.append(str(d) if d is not DYNAMIC else ("1" if i == 0 else (n or _placeholder(i, len(shape))).upper()))
        example.append(",".join(dims))
    if framework in ("tensorflow",):
        return {"needed": True, "example": " ".join(f"--input-size {e}" for e in example),
                "reason": "a frozen graph is cut at --inputs, whose shapes --input-size gives"}  # fmt: skip
    if not free:
        batch_free = any(v.get("shape") and v["shape"][0] is DYNAMIC for v in inputs)
        reason = "all dims are fixed" + (" (a dynamic batch dim becomes 1)" if batch_free else "")
        return {"needed": False, "example": None, "reason": reason}
    return {
        "needed": True,
        "example": " ".join(f"--input-size {e}" for e in example),
        "reason": "dynamic dims: " + ", ".join(free),
    }


def shape_text(shape: list[int | None] | None, names: list[str | None] | None = None) -> str:
    if shape is None:
        return "[unknown]"
    names = names or [None] * len(shape)
    return "[" + ",".join(str(d) if d is not DYNAMIC else (n or "?") for d, n in zip(shape, names)) + "]"


def format_source_info(info: dict[str, Any]) -> str:
    lines = [f"{info['path']}: {info['framework']} model, {info['size_bytes']} bytes"]
    details = [("opset", info.get("opset")), ("ir version", info.get("ir_version")),
               ("producer", info.get("producer")), ("nodes", info.get("nodes"))]  # fmt: skip
    shown = ", ".join(f"{k} {v}" for k, v in details if v is not None)
    if shown:
        lines.append(f"  {shown}")
    for side in ("inputs", "outputs"):
        values = info.get(side)
        if values is None:
            continue
        lines.append(f"  {side}:")
        for v in values:
            dynamic = [i for i, d in enumerate(v["shape"] or []) if d is DYNAMIC]
            mark = f"  (dynamic: dim {', '.join(map(str, dynamic))})" if dynamic else ""
            lines.append(f"    {v['name']}: {v['dtype'] or '?'}{shape_text(v['shape'], v.get('dim_names'))}{mark}")
    if info.get("note"):
        lines.append(f"  note: {info['note']}")
    advice = info["input_size"]
    if advice["needed"]:
        example = f": e.g. {advice['example']}" if advice["example"] else ""
        lines.append(f"  --input-size needed ({advice['reason']}){example}")
    else:
        lines.append(f"  --input-size not needed ({advice['reason']})")
    sizes = f" {advice['example']}" if advice["needed"] and advice["example"] else ""
    lines.append(f"  next: rkfarm build {info['path']}{sizes} (options: rkfarm build --help)")
    return "\n".join(lines)


def check_input_sizes(path: Path, sizes: list[list[int]], cut_inputs: list[str] | None) -> None:
    """Refuse ``--input-size`` entries that contradict an ONNX model's static dims (rank, NHWC order, channels):
    the library would override them and write a package that cannot run."""
    info = read_onnx_info(path)
    inputs = info["inputs"]
    if cut_inputs and [v["name"] for v in inputs] != list(cut_inputs):
        return  # cut at inner tensors: their shapes are what --input-size says
    if len(sizes) != len(inputs):
        names = ", ".join(v["name"] for v in inputs)
        raise RkfarmError(
            f"{path}: {len(sizes)} --input-size for {len(inputs)} input(s) ({names}); give one per input, in order"
        )
    for given, value in zip(sizes, inputs):
        model = value["shape"]
        if model is None:
            continue
        shown = ",".join(map(str, given))
        where = f"{path}: --input-size {shown} does not fit input {value['name']!r} {shape_text(model)}"
        dims = [1, *given] if len(given) == len(model) - 1 else list(given)
        if len(dims) != len(model):
            raise RkfarmError(f"{where}: it has {len(given)} dims, the input {len(model)}")
        clash = [i for i, (m, d) in enumerate(zip(model, dims)) if m is not DYNAMIC and m != d]
        if not clash:
            continue
        if len(model) == 4 and len(dims) == 4 and _is_nhwc_of(dims, model):
            nchw = [dims[0], dims[3], dims[1], dims[2]]
            raise RkfarmError(
                f"{where}: that is NHWC order; --input-size is in the model's own layout (NCHW): "
                f"--input-size {','.join(map(str, nchw))}"
            )
        detail = ", ".join(f"dim {i} is {model[i]} in the model, {dims[i]} given" for i in clash)
        if len(given) != len(dims):
            detail = f"read as {','.join(map(str, dims))} with the batch dim added: {detail}"
        raise RkfarmError(f"{where} ({detail}); only its dynamic dims can be chosen")


def _is_nhwc_of(dims: list[int], model: list[int | None]) -> bool:
    n, h, w, c = dims
    return all(m is DYNAMIC or m == d for m, d in zip(model, (n, c, h, w)))
