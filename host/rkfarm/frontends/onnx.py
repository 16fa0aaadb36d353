"""ONNX frontend: read, cut at inputs/outputs, fix dynamic dims, freeze inputs."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy.typing as npt
import onnx
from google.protobuf.message import DecodeError

from rkfarm import graph
from rkfarm.errors import ModelLoadError
from rkfarm.frontends import LoadedGraph
from rkfarm_proto.package import detect_format

log = logging.getLogger(__name__)


def read_onnx(
    model: str | os.PathLike[str] | onnx.ModelProto, custom_op_types: Sequence[str] = ()
) -> tuple[onnx.ModelProto, str, str]:
    """The model, a display name and the sha256 of its bytes. Errors say what is wrong with the file.

    Nodes whose op type is in ``custom_op_types`` (registered with reg_custom_op) move to the custom-op domain."""
    if isinstance(model, onnx.ModelProto):
        blob = model.SerializeToString()
        return model, model.graph.name or "<ModelProto>", hashlib.sha256(blob).hexdigest()
    path = Path(model)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelLoadError(f"{path}: is a directory, not an ONNX model") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    kind = detect_format(data[:16])
    if kind in ("rkfm", "rknn", "rknn-encrypted"):
        raise ModelLoadError(f"{path}: this is a built model ({kind}), not ONNX: load it with load_rknn()")
    if not data:
        raise ModelLoadError(f"{path}: the file is empty")
    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"{path}: not a valid ONNX model (cannot parse it: {exc}); is the file truncated?"
        ) from None
    if not proto.graph.node:
        raise ModelLoadError(f"{path}: not a valid ONNX model (it has no graph nodes); is the file truncated?")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        try:
            onnx.load_external_data_for_model(proto, str(path.parent))
        except OSError as exc:
            raise ModelLoadError(f"{path}: external weight file missing: {exc}") from None
    if custom_op_types:
        from rkfarm.custom_graph import adopt

        adopt(proto, custom_op_types)
    check_onnx(proto, path.name)
    return proto, path.name, hashlib.sha256(data).hexdigest()


def check_onnx(proto: onnx.ModelProto, name: str) -> None:
    """The ONNX checker, after a clearer word for ops that are not ONNX's (custom ops not registered)."""
    from rkfarm_proto.custom_ops import CUSTOM_OP_DOMAIN, is_nonstandard

    for node in proto.graph.node:
        if is_nonstandard(node.op_type) and node.domain != CUSTOM_OP_DOMAIN:
            raise ModelLoadError(
                f"{name}: node {node.name or node.output[0]!r} has op type {node.op_type}, which is not an ONNX op: "
                "register its class with reg_custom_op() before loading the model"
            )
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelLoadError(f"{name}: invalid ONNX model: {first}") from None


def load_onnx(
    model: str | os.PathLike[str] | onnx.ModelProto,
    inputs: Sequence[str] | None = None,
    input_size_list: Sequence[Sequence[int]] | None = None,
    input_initial_val: Sequence[npt.ArrayLike | None] | None = None,
    outputs: Sequence[str] | None = None,
) -> LoadedGraph:
    proto, name, digest = read_onnx(model)
    graph_inputs = [i.name for i in graph.real_inputs(proto)]
    graph_outputs = [o.name for o in proto.graph.output]
    if (inputs and list(inputs) != graph_inputs) or (outputs and list(outputs) != graph_outputs):
        if inputs and input_size_list is None and any(i not in graph_inputs for i in inputs):
            raise ModelLoadError("load_onnx(inputs=...) at inner tensors needs input_size_list with their shapes")
        proto = graph.cut(proto, inputs, outputs, input_size_list)
        log.info("cut graph: inputs %s, outputs %s", inputs or graph_inputs, outputs or graph_outputs)
    if input_size_list is not None:
        graph.set_input_shapes(proto, input_size_list)
    if input_initial_val is not None:
        graph.freeze_inputs(proto, input_initial_val)
    graph.fix_dynamic_dims(proto)
    proto = graph.infer_shapes(proto)
    graph.fit_ir_version(proto)  # runs on the oldest ONNX Runtime that has its ops
    for out in proto.graph.output:
        if not out.type.tensor_type.elem_type:
            raise ModelLoadError(f"output {out.name!r}: type unknown after shape inference")
    return LoadedGraph(model=proto, source_name=name, source_sha256=digest, framework="onnx")
