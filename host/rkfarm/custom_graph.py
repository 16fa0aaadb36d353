"""Custom ops in a graph: adopting a source model's custom nodes, and their shapes.

``reg_custom_op()`` registers a class in this process (``rkfarm_agent``'s custom-op runtime, which the simulator
shares with the board). Loading a model then moves every node whose op type is registered into
``CUSTOM_OP_DOMAIN`` — a ``cst*`` op from whatever domain the model used, and a standard op whose implementation
the user replaces — so the ONNX checker accepts it, the quantizer leaves it in float, the float16 pass keeps it in
float32, and the runtime knows to run the Python class. A ``cst*`` node with no registered class is an error at
load time.

Shapes: ONNX's inference knows nothing of these nodes. For a ``cst*`` op its class's
``shape_infer(node, in_shapes, in_dtypes)`` gives the outputs; for a replaced standard op, ONNX's own inference of
that op (as if it were not replaced) does. ``infer_custom`` runs both to a fixed point with ONNX's inference of
the rest of the graph.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, shape_inference

from rkfarm.errors import ModelLoadError
from rkfarm.runtime import custom_ops
from rkfarm_proto.custom_ops import CUSTOM_OP_DOMAIN, IO_TYPES_KEY, is_nonstandard

log = logging.getLogger(__name__)
ONNX_DOMAINS = ("", "ai.onnx")


def custom_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == CUSTOM_OP_DOMAIN]


def custom_types(model: onnx.ModelProto) -> list[str]:
    """The op types the package must list: its nodes in the custom domain, sorted."""
    return sorted({n.op_type for n in custom_nodes(model)})


def adopt(model: onnx.ModelProto, op_types: Sequence[str]) -> list[str]:
    """Move the nodes whose op type is in ``op_types`` (registered custom ops) into the custom domain, in place;
    the op types moved. Refuses a ``cst*`` node not in ``op_types``, and custom nodes inside subgraphs."""
    ops = set(op_types)
    for node in model.graph.node:
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs] if attr.g.node or attr.graphs else []:
                inner = [n.op_type for n in sub.node if n.op_type in ops or is_nonstandard(n.op_type)]
                if inner:
                    raise ModelLoadError(
                        f"custom op {inner[0]} inside the subgraph of node {node.name!r}: not supported"
                    )
    moved: list[str] = []
    for node in model.graph.node:
        if node.op_type in ops:
            node.domain = CUSTOM_OP_DOMAIN
            moved.append(node.op_type)
        elif is_nonstandard(node.op_type):
            raise ModelLoadError(
                f"node {node.name or node.output[0]!r} has op type {node.op_type}, which is not an ONNX op: register "
                "its class with reg_custom_op() before loading the model"
            )
    if moved:
        if not any(o.domain == CUSTOM_OP_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(CUSTOM_OP_DOMAIN, 1))
        used = {n.domain for n in model.graph.node}
        keep = [o for o in model.opset_import if o.domain in ONNX_DOMAINS or o.domain in used]
        del model.opset_import[:]
        model.opset_import.extend(keep)
        log.info("custom ops: %s", ", ".join(sorted(set(moved))))
    return sorted(set(moved))


def infer_custom(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shapes and types for the custom nodes' outputs, and what follows from them, to a fixed point; the element
    types of the custom nodes' inputs and outputs are also kept in the model's metadata (``IO_TYPES_KEY``)."""
    model = _infer_custom(model)
    known = _known(model)
    types = {t: known[t].type.tensor_type.elem_type for n in custom_nodes(model) for t in (*n.input, *n.output) if t}
    entries = [p for p in model.metadata_props if p.key != IO_TYPES_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(entries)
    model.metadata_props.add(key=IO_TYPES_KEY, value=json.dumps(types, sort_keys=True))
    return model


def _infer_custom(model: onnx.ModelProto) -> onnx.ModelProto:
    pending = custom_nodes(model)
    ops = custom_ops.registered()
    while pending:
        known = _known(model)
        ready = [n for n in pending if all(not t or t in known for t in n.input)]
        if not ready:
            missing = sorted({t for n in pending for t in n.input if t and t not in known})
            raise ModelLoadError(f"custom op {pending[0].op_type}: the shapes of its inputs {missing} are unknown")
        for node in ready:
            impl = ops.get(node.op_type)
            if impl is None:
                custom_ops.require([node.op_type])
            if all(o in known and known[o].type.tensor_type.HasField("shape") for o in node.output):
                continue  # the source model says
            outputs = _outputs_of(node, impl, known, model)
            model.graph.value_info.extend(v for v in outputs if v.name not in known)
        pending = [n for n in pending if n not in ready]
        try:
            model = shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
        except Exception as exc:  # onnx raises InferenceError from C++
            raise ModelLoadError(f"shape inference after custom ops failed: {exc}") from None
    return model


def _known(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    known = {v.name: v for v in (*g.input, *g.value_info, *g.output) if v.type.tensor_type.elem_type}
    for t in g.initializer:
        known.setdefault(t.name, helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return known


def _outputs_of(
    node: onnx.NodeProto, impl: Any, known: dict[str, onnx.ValueInfoProto], model: onnx.ModelProto
) -> list[onnx.ValueInfoProto]:
    ins = [known[t] for t in node.input if t]
    if is_nonstandard(node.op_type):
        shapes = [_dims(v) for v in ins]
        dtypes = [np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)) for v in ins]
        try:
            result = impl.shape_infer(node, shapes, dtypes)
        except Exception as exc:  # the user's code: whatever it raises, said in one line
            failure = f"{type(exc).__name__}: {exc}"
            raise ModelLoadError(f"custom op {node.op_type}: shape_infer() failed: {failure}") from None
        out_shapes, out_dtypes = _check_infer(node, result)
        return [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), [int(d) for d in s])
            for name, s, dt in zip(node.output, out_shapes, out_dtypes)
        ]
    return _standard_outputs(node, ins, model)


def _check_infer(node: onnx.NodeProto, result: Any) -> tuple[Sequence[Any], Sequence[Any]]:
    where = f"custom op {node.op_type}: shape_infer()"
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise ModelLoadError(f"{where} must return (out_shapes, out_dtypes), got {type(result).__name__}")
    shapes, dtypes = result
    count = len(node.output)
    if len(shapes) != count or len(dtypes) != count:
        raise ModelLoadError(
            f"{where} returned {len(shapes)} shape(s) and {len(dtypes)} dtype(s); the node has {count} output(s)"
        )
    try:
        for s, dt in zip(shapes, dtypes):
            _ = [int(d) for d in s], np.dtype(dt)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{where} returned a shape or dtype that is not one: {exc}") from None
    return shapes, dtypes


def _standard_outputs(
    node: onnx.NodeProto, ins: list[onnx.ValueInfoProto], model: onnx.ModelProto
) -> list[onnx.ValueInfoProto]:
    """A replaced standard op's outputs, as ONNX infers them for that op alone."""
    single = onnx.NodeProto()
    single.CopyFrom(node)
    single.domain = ""
    inits = {t.name: t for t in model.graph.initializer}
    consts = [inits[t] for t in node.input if t in inits]
    graph = helper.make_graph(
        [single], "one", [v for v in ins if v.name not in inits], [onnx.ValueInfoProto(name=o) for o in node.output],
        consts,
    )  # fmt: skip
    opsets = [o for o in model.opset_import if o.domain in ONNX_DOMAINS]
    try:
        inferred = shape_inference.infer_shapes(helper.make_model(graph, opset_imports=opsets), strict_mode=True)
    except Exception as exc:  # onnx raises InferenceError from C++
        where = f"custom op {node.op_type} (replacing the ONNX op)"
        raise ModelLoadError(f"{where}: shape inference failed: {exc}") from None
    found = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output) if v.type.tensor_type.elem_type}
    missing = [o for o in node.output if o not in found]
    if missing:
        raise ModelLoadError(f"custom op {node.op_type}: ONNX cannot infer the shape of {missing}")
    return [found[o] for o in node.output]


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
