"""Graph passes on ONNX models. Each takes a ModelProto and returns a new one; the output is standard ONNX."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper, shape_inference

from rkfarm.errors import BuildError, ModelLoadError
from rkfarm_proto.custom_ops import CUSTOM_OP_DOMAIN
from rkfarm_proto.tensors import shape_str

log = logging.getLogger(__name__)

# optimization_level -> onnxslim optimizations to skip. Level 3 (the vendor's default) runs everything,
# including Conv+BatchNorm / Conv+Add / Gemm fusions.
_SLIM_SKIPS: dict[int, list[str]] = {
    1: ["graph_fusion", "subexpression_elimination", "weight_tying"],
    2: ["graph_fusion"],
    3: [],
}


def dims_of(value: onnx.ValueInfoProto) -> list[int]:
    """Dims of a value, -1 for symbolic or unknown ones."""
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def set_dims(value: onnx.ValueInfoProto, dims: Sequence[int]) -> None:
    """Fix a value's dims; a dim's denotation (which dim holds channels) stays when the rank does."""
    shape = value.type.tensor_type.shape
    denotations = [d.denotation for d in shape.dim] if len(shape.dim) == len(dims) else []
    shape.ClearField("dim")
    for index, d in enumerate(dims):
        dim = shape.dim.add()
        dim.dim_value = int(d)
        if denotations and denotations[index]:
            dim.denotation = denotations[index]


# ONNX's standard dimension denotations (onnx/docs/DimensionDenotation.md): how a graph input says which of its
# dims holds channels. Frontends of NHWC frameworks mark their image inputs so; specs.tensor_spec reads it.
NHWC_DENOTATIONS = ("DATA_BATCH", "DATA_FEATURE", "DATA_FEATURE", "DATA_CHANNEL")


def mark_nhwc(model: onnx.ModelProto, names: Sequence[str] | None = None) -> None:
    """Record that 4-D graph inputs (all, or those named) are NHWC: inference then takes them as they are."""
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4 and (names is None or value.name in names):
            for dim, denotation in zip(dims, NHWC_DENOTATIONS):
                dim.denotation = denotation


def is_nhwc(value: onnx.ValueInfoProto) -> bool:
    dims = value.type.tensor_type.shape.dim
    return len(dims) == 4 and dims[3].denotation == NHWC_DENOTATIONS[3]


def nhwc_inputs(model: onnx.ModelProto) -> list[str]:
    return [v.name for v in model.graph.input if is_nhwc(v)]


def real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old exporters list weights as inputs too)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


# The IR version that first allowed each element type newer than the classic ones (FLOAT8*: 9, [U]INT4: 10,
# FLOAT4E2M1: 11); a type past these leaves a model's IR version as it is.
_TYPE_IR = {17: 9, 18: 9, 19: 9, 20: 9, 21: 10, 22: 10, 23: 11}


def _elem_types(g: onnx.GraphProto) -> set[int]:
    """Every element type the graph and its subgraphs declare or make: values, initializers, constants, and the
    targets of Cast ("to") and of the ops that take a "dtype"."""
    types = {v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types |= {t.data_type for t in g.initializer}
    for attr in (a for node in g.node for a in node.attribute):
        if attr.type == onnx.AttributeProto.INT and attr.name in ("to", "dtype"):
            types.add(attr.i)
        elif attr.type == onnx.AttributeProto.TENSOR:
            types.add(attr.t.data_type)
        elif attr.type == onnx.AttributeProto.GRAPH:
            types |= _elem_types(attr.g)
        for sub in attr.graphs:
            types |= _elem_types(sub)
    return types


def fit_ir_version(model: onnx.ModelProto) -> None:
    """Set, in place, the lowest IR version valid for the model's opsets and element types, so that the oldest
    ONNX Runtime able to run its ops loads it (a new onnx writes IR 14 by default; ONNX Runtime 1.23, the newest
    for Python 3.10, reads up to 11). Only the version number changes, never the graph. The floor is IR 4 (below
    it every initializer must also be a graph input) unless the model is older already; local functions keep IR
    10 (their overloads came with it); an element type newer than those in _TYPE_IR leaves the model as it is."""
    types = _elem_types(model.graph)
    if any(t > max(_TYPE_IR) for t in types):
        return
    needed = [helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True), min(model.ir_version, 4)]
    needed += [_TYPE_IR[t] for t in types if t in _TYPE_IR]
    if len(model.functions):
        needed.append(10)
    lowest = max(needed)
    if lowest != model.ir_version:
        log.debug("IR version %d -> %d (the lowest for opsets %s)", model.ir_version, lowest,
                  {o.domain or "ai.onnx": o.version for o in model.opset_import})  # fmt: skip
        model.ir_version = lowest


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Re-run shape inference from scratch: drop stale intermediate shapes and unfix output dims first."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    for out in m.graph.output:
        if any(d < 0 for d in dims_of(out)):
            out.type.tensor_type.ClearField("shape")
    try:
        inferred = shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError / ValidationError from C++
        raise BuildError(f"shape inference failed: {exc}") from None
    if any(n.domain == CUSTOM_OP_DOMAIN for n in inferred.graph.node):
        from rkfarm.custom_graph import infer_custom

        inferred = infer_custom(inferred)
    return inferred


def _value_info_map(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    out = {v.name: v for v in g.value_info}
    out.update({v.name: v for v in g.input})
    out.update({v.name: v for v in g.output})
    return out


def produced_tensors(model: onnx.ModelProto) -> set[str]:
    names = {o for n in model.graph.node for o in n.output if o}
    names.update(i.name for i in model.graph.input)
    return names


def cut(
    model: onnx.ModelProto,
    inputs: Sequence[str] | None,
    outputs: Sequence[str] | None,
    input_shapes: Sequence[Sequence[int]] | None,
) -> onnx.ModelProto:
    """Extract the subgraph between ``inputs`` and ``outputs`` (either may be None: keep the model's own)."""
    in_names = list(inputs) if inputs else [i.name for i in real_inputs(model)]
    out_names = list(outputs) if outputs else [o.name for o in model.graph.output]
    known = produced_tensors(model) | {i.name for i in model.graph.initializer}
    for kind, names in (("input", in_names), ("output", out_names)):
        missing = [n for n in names if n not in known]
        if missing:
            raise ModelLoadError(f"{kind}(s) {missing} are not tensors of this model")
    inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    vimap = _value_info_map(inferred)
    for i, name in enumerate(in_names):
        if name not in vimap:
            if not input_shapes or i >= len(input_shapes):
                raise ModelLoadError(f"the shape of cut input {name!r} is unknown: give it in input_size_list")
            inferred.graph.value_info.append(
                helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(input_shapes[i]))
            )
    for name in out_names:
        if name not in vimap:
            inferred.graph.value_info.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    try:
        extracted = onnx.utils.Extractor(inferred).extract_model(in_names, out_names)
    except Exception as exc:
        raise ModelLoadError(f"cannot cut the graph at inputs={in_names} outputs={out_names}: {exc}") from None
    # Cut inputs that are initializers of the source become real inputs: drop them from the initializers.
    cut_inputs = set(in_names)
    kept = [t for t in extracted.graph.initializer if t.name not in cut_inputs]
    del extracted.graph.initializer[:]
    extracted.graph.initializer.extend(kept)
    extracted.ir_version = model.ir_version
    return extracted


def set_input_shapes(model: onnx.ModelProto, shapes: Sequence[Sequence[int]]) -> None:
    """Fix input dims in place from ``input_size_list`` (one shape per input; batch may be omitted)."""
    ins = real_inputs(model)
    if len(shapes) != len(ins):
        raise ModelLoadError(
            f"input_size_list has {len(shapes)} shape(s) for {len(ins)} input(s) ({', '.join(i.name for i in ins)})"
        )
    for value, shape in zip(ins, shapes):
        dims = [int(d) for d in shape]
        rank = len(dims_of(value)) or len(dims)
        if len(dims) == rank - 1:
            dims = [1, *dims]  # the vendor's older examples omit the batch dim
        if len(dims) != rank or any(d <= 0 for d in dims):
            raise ModelLoadError(
                f"input_size_list entry {shape_str(list(shape))} does not fit input {value.name!r} "
                f"of rank {rank} ({shape_str(dims_of(value))})"
            )
        current = dims_of(value)
        clash = [i for i, (c, d) in enumerate(zip(current, dims)) if c > 0 and c != d]
        if clash and current:
            log.warning("input %r: overriding static dims %s with %s", value.name, shape_str(current), shape_str(dims))
        set_dims(value, dims)


def freeze_inputs(model: onnx.ModelProto, values: Sequence[npt.ArrayLike | None]) -> None:
    """Turn inputs into constants (``input_initial_val``); a None entry keeps that input."""
    ins = real_inputs(model)
    if len(values) != len(ins):
        raise ModelLoadError(f"input_initial_val has {len(values)} entries for {len(ins)} input(s)")
    for value_info, value in zip(ins, values):
        if value is None:
            continue
        elem = value_info.type.tensor_type.elem_type
        arr = np.asarray(value, dtype=helper.tensor_dtype_to_np_dtype(elem))
        dims = dims_of(value_info)
        if dims and (len(dims) != arr.ndim or any(d > 0 and d != s for d, s in zip(dims, arr.shape))):
            raise ModelLoadError(
                f"input_initial_val for {value_info.name!r} has shape {shape_str(arr.shape)}, "
                f"the input is {shape_str(dims)}"
            )
        model.graph.initializer.append(numpy_helper.from_array(arr, value_info.name))
        model.graph.input.remove(value_info)


def fix_dynamic_dims(model: onnx.ModelProto) -> None:
    """Set a dynamic batch dim to 1; refuse other dynamic dims with a message saying how to fix them."""
    for value in real_inputs(model):
        dims = dims_of(value)
        if not dims and value.type.tensor_type.HasField("shape"):
            continue  # a scalar
        if not value.type.tensor_type.HasField("shape"):
            raise ModelLoadError(f"input {value.name!r} has no shape: give it in input_size_list")
        if dims and dims[0] < 0:
            log.info("input %r: dynamic batch dim fixed to 1", value.name)
            dims[0] = 1
        if any(d < 0 for d in dims):
            shown = shape_str(dims)
            raise ModelLoadError(
                f"input {value.name!r} has dynamic dims {shown}: fix them with "
                f"load_onnx(..., input_size_list=[[...]]) (e.g. {shown.replace('?', 'N')})"
            )
        set_dims(value, dims)


def eliminate_dead_nodes(model: onnx.ModelProto) -> None:
    """Remove nodes whose outputs nobody uses, and initializers nobody reads (in place)."""
    g = model.graph
    needed = {o.name for o in g.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(g.node):
        if any(o in needed for o in node.output if o):
            kept.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:  # subgraphs read outer-scope names
                for sub in [attr.g, *attr.graphs]:
                    needed.update(i for n in sub.node for i in n.input if i)
    kept.reverse()
    del g.node[:]
    g.node.extend(kept)
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)


def simplify(model: onnx.ModelProto, level: int) -> onnx.ModelProto:
    """Constant folding, fusions (Conv+BatchNorm, ...) and dead-node removal with onnxslim, by level."""
    if level == 0:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        eliminate_dead_nodes(m)
        return m
    import onnxslim

    try:
        slimmed = onnxslim.slim(model, skip_optimizations=_SLIM_SKIPS[level] or None)
    except Exception as exc:
        raise BuildError(f"graph optimization (onnxslim) failed: {exc}; try config(optimization_level=0)") from None
    if not isinstance(slimmed, onnx.ModelProto):
        raise BuildError("graph optimization (onnxslim) returned no model; try config(optimization_level=0)")
    return _keep_layouts(model, slimmed)


def _keep_layouts(before: onnx.ModelProto, after: onnx.ModelProto) -> onnx.ModelProto:
    """Put back the NHWC marks a pass that rebuilds the graph (onnxslim) may drop."""
    names = nhwc_inputs(before)
    if names:
        mark_nhwc(after, names)
    return after


def set_batch_size(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """Give every input batch ``batch`` (rknn_batch_size); the model must have been built for batch 1."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for value in real_inputs(m):
        dims = dims_of(value)
        if not dims or dims[0] != 1:
            raise BuildError(f"rknn_batch_size needs inputs with batch 1; input {value.name!r} is {shape_str(dims)}")
        dims[0] = batch
        set_dims(value, dims)
    return infer_shapes(m)


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Quantized operators (ONNX and ONNX Runtime's com.microsoft domain) besides Q/DQ; any QLinear* op counts too.
INTEGER_OPS = frozenset(
    {
        "ConvInteger",
        "MatMulInteger",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "MatMulIntegerToFloat",
        "QGemm",
        "QAttention",
        "QEmbedLayerNormalization",
    }
)


def is_quantization_op(node: onnx.NodeProto) -> bool:
    """A Q/DQ node or a quantized operator: the model carries its own quantization."""
    return node.op_type in QDQ_OPS or node.op_type in INTEGER_OPS or node.op_type.startswith("QLinear")


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store weights and compute in float16, keeping float32 inputs and outputs (as the NPU's fp16 mode).

    Refuses a model with QuantizeLinear/DequantizeLinear or quantized ops: the converter would rewrite their
    float32 scales (``rkfarm.prequant`` keeps such models as they are)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    quantized = sorted({n.op_type for n in model.graph.node if is_quantization_op(n)})
    if quantized:
        raise BuildError(f"float16 conversion of a quantized model ({', '.join(quantized)}) would break its scales")

    name_nodes(model)
    custom = [n.name for n in model.graph.node if n.domain == CUSTOM_OP_DOMAIN]  # Python ops compute in float32
    try:
        converted = convert_float_to_float16(
            model, keep_io_types=True, disable_shape_infer=False, node_block_list=custom or None
        )
    except Exception as exc:
        raise BuildError(f"float16 conversion failed: {exc}; try config(float_dtype='float32')") from None
    topological_sort(converted)
    return _keep_layouts(model, converted)


def _outer_reads(node: onnx.NodeProto) -> set[str]:
    """Names a node reads: its inputs plus outer-scope names its subgraphs (If/Loop/Scan bodies) use."""
    names = {i for i in node.input if i}
    for attr in node.attribute:
        for sub in [attr.g, *attr.graphs]:
            local = {i.name for i in sub.input} | {t.name for t in sub.initializer}
            for inner in sub.node:
                names.update(i for i in _outer_reads(inner) if i not in local)
                local.update(inner.output)
    return names


def topological_sort(model: onnx.ModelProto) -> None:
    """Reorder nodes so each comes after the producers of what it reads (some converters append nodes)."""
    g = model.graph
    available = {i.name for i in g.input} | {t.name for t in g.initializer}
    pending = [(node, _outer_reads(node)) for node in g.node]
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node, needs in pending:
            if needs <= available:
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append((node, needs))
        if len(rest) == len(pending):
            missing = sorted(set().union(*(needs for _, needs in rest)) - available)[:5]
            raise BuildError(f"graph has a cycle or reads undefined tensors: {missing}")
        pending = rest
    del g.node[:]
    g.node.extend(ordered)


def place_after_producers(
    g: onnx.GraphProto, after: dict[str, list[onnx.NodeProto]], what: str, front: Sequence[onnx.NodeProto] = ()
) -> None:
    """Insert new nodes right after the producer of the tensor each list is keyed by (graph inputs first),
    keeping the graph in order; ``front`` nodes go before everything. Consumes ``after``."""
    ordered = list(front)
    for name in [i.name for i in g.input]:
        ordered.extend(after.pop(name, []))
    for node in g.node:
        ordered.append(node)
        for out in node.output:
            ordered.extend(after.pop(out, []))
    if after:
        raise BuildError(f"cannot place {what} of tensor(s) {sorted(after)[:3]}: no producer")
    del g.node[:]
    g.node.extend(ordered)


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (profilers and per-layer reports key on it), in place."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        while name in seen:
            name = f"{name}_{index}"
        node.name = name
        seen.add(name)


def _tensor_nbytes(t: onnx.TensorProto) -> int:
    count = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
    return count * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of constant tensors: initializers and Constant nodes."""
    total = sum(_tensor_nbytes(t) for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            total += sum(_tensor_nbytes(a.t) for a in node.attribute if a.name == "value")
    return total


def activation_peak_bytes(model: onnx.ModelProto) -> int:
    """Peak bytes of intermediate tensors alive at once, running nodes in graph order (a memory plan)."""
    inferred = model if model.graph.value_info else infer_shapes(model)
    sizes: dict[str, int] = {}
    for v in _value_info_map(inferred).values():
        tt = v.type.tensor_type
        dims = dims_of(v)
        if not tt.elem_type or any(d < 0 for d in dims):
            continue
        sizes[v.name] = int(np.prod(dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize
    g = inferred.graph
    constants = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    last_use: dict[str, int] = {}
    for i, node in enumerate(g.node):
        for name in node.input:
            last_use[name] = i
    keep = {o.name for o in g.output}
    live = {i.name: sizes.get(i.name, 0) for i in real_inputs(inferred)}
    peak = sum(live.values())
    for i, node in enumerate(g.node):
        for out in node.output:
            if out and out not in constants:
                live[out] = sizes.get(out, 0)
        peak = max(peak, sum(live.values()))
        for name in list(live):
            if name not in keep and last_use.get(name, -1) <= i:
                del live[name]
    return peak
