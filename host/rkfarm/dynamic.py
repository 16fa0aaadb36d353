"""``config(dynamic_input=...)``: one package that runs a fixed list of input shape sets.

As the vendor defines it, ``dynamic_input`` is a list of shape sets, one shape per model input in the source
model's layout (NCHW for an ONNX image input), and the built model takes exactly those sets. Only the source
model's dynamic (symbolic) dims may differ between sets, and every set must give its static dims their size.

rkfarm keeps those dims symbolic in the ONNX payload (dims equal in every set are fixed), so ONNX Runtime runs
each set with the same weights; the package header lists the sets and the runtime's input conversion refuses any
other shape (``rkfarm_agent.inputs``). The build runs the final payload once per set on zeros, so a graph that
cannot take a set (a Reshape to a constant size, say) fails at build time rather than at inference.

Which set is the vendor's "MaxShape" (``largest``): the one with the most input elements in all; eval_memory's
planned activation memory and eval_perf's main figures are for it. Quantization calibrates over every set
(``rkfarm.quant.pipeline``), where the vendor calibrates at MaxShape only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper

from rkfarm import graph
from rkfarm.errors import BuildError, ModelLoadError, NotSupportedError, RkfarmError
from rkfarm.frontends import LoadedGraph
from rkfarm_proto.tensors import shape_str
from rkfarm_proto.v1 import package_pb2

log = logging.getLogger(__name__)

ShapeSets = Sequence[Sequence[Sequence[int]]]


def largest(sets: ShapeSets) -> int:
    """Index of the vendor's MaxShape: the set with the most input elements in all (the first such set)."""
    sizes = [sum(int(np.prod(shape)) for shape in shapes) for shapes in sets]
    return sizes.index(max(sizes))


def check_sets(model: onnx.ModelProto, sets: ShapeSets, error: type[RkfarmError] = BuildError) -> None:
    """Refuse sets that do not fit ``model``'s inputs: count, rank, and the size of every static dim."""
    ins = graph.real_inputs(model)
    names = ", ".join(repr(i.name) for i in ins)
    if len(sets[0]) != len(ins):
        raise error(
            f"dynamic_input gives {len(sets[0])} shape(s) per set but the model has {len(ins)} input(s) ({names}): "
            "give one shape per input in each set"
        )
    for k, value in enumerate(ins):
        if not value.type.tensor_type.HasField("shape"):
            raise error(f"input {value.name!r} has no shape in the model: dynamic_input cannot be checked against it")
        dims = graph.dims_of(value)
        symbolic = [d for d, s in enumerate(dims) if s < 0]
        for j, shapes in enumerate(sets):
            shape = list(shapes[k])
            if len(shape) != len(dims):
                raise error(
                    f"dynamic_input[{j}] gives input {value.name!r} the shape {shape}, of rank {len(shape)}; the input "
                    f"is {shape_str(dims)}, of rank {len(dims)}"
                )
            for d, (size, own) in enumerate(zip(shape, dims)):
                if own > 0 and size != own:
                    free = f"its dynamic dims are {symbolic}" if symbolic else "it has no dynamic dim"
                    raise error(
                        f"dynamic_input[{j}] sets dim {d} of input {value.name!r} to {size}, but that dim is static "
                        f"({own}) in the model {shape_str(dims)}: only dynamic dims may change between sets ({free})"
                    )


def apply_sets(model: onnx.ModelProto, sets: ShapeSets, error: type[RkfarmError] = BuildError) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs take ``sets``: dims that differ between sets symbolic (keeping the
    model's own names), dims equal in every set fixed to that size; shapes inferred again."""
    check_sets(model, sets, error)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for k, value in enumerate(graph.real_inputs(m)):
        for d, dim in enumerate(value.type.tensor_type.shape.dim):
            sizes = {int(shapes[k][d]) for shapes in sets}
            if len(sizes) == 1:
                dim.dim_value = sizes.pop()  # a oneof: clears a dim_param
            elif not dim.dim_param:
                dim.dim_param = f"{value.name}_dim{d}"
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")  # inferred again from the inputs
    return graph.infer_shapes(m)


def fixed_to(model: onnx.ModelProto, shapes: Sequence[Sequence[int]]) -> onnx.ModelProto:
    """A copy of ``model`` with every input fixed to one set's shapes (calibration, memory planning)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for value, shape in zip(graph.real_inputs(m), shapes):
        for dim, size in zip(value.type.tensor_type.shape.dim, shape):
            dim.dim_value = int(size)
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")
    return graph.infer_shapes(m)


def shape_sets_proto(sets: ShapeSets) -> list[package_pb2.ShapeSet]:
    return [
        package_pb2.ShapeSet(inputs=[package_pb2.InputShape(dims=list(shape)) for shape in shapes]) for shapes in sets
    ]


def check_runs(model: onnx.ModelProto, sets: ShapeSets) -> None:
    """Run the payload once per set on zeros: a graph that cannot take a set is a BuildError naming it."""
    from rkfarm.runtime.sessions import open_session

    session = open_session(model, "dynamic_input")
    ins = graph.real_inputs(model)
    for j, shapes in enumerate(sets):
        feeds: dict[str, npt.NDArray[np.generic]] = {}
        for value, shape in zip(ins, shapes):
            dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            feeds[value.name] = np.zeros([int(d) for d in shape], dtype=dtype)
        try:
            session.run(None, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types from C++
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BuildError(
                f"dynamic_input[{j}] {[list(s) for s in shapes]}: the model cannot run this shape set ({first}); "
                "its graph fixes sizes the set changes (a Reshape to a constant shape, say)"
            ) from None
    log.info("dynamic_input: the payload runs all %d shape sets", len(sets))


def load_onnx_dynamic(
    proto: onnx.ModelProto,
    sets: ShapeSets,
    inputs: Sequence[str] | None = None,
    input_size_list: Sequence[Sequence[int]] | None = None,
    input_initial_val: Sequence[object] | None = None,
    outputs: Sequence[str] | None = None,
) -> LoadedGraph:
    """``load_onnx`` after ``config(dynamic_input=...)``: the model's dynamic dims stay symbolic where the sets
    differ instead of being refused (the vendor takes the sets to settle them, so input_size_list is not
    needed). The frontend loads a copy fixed to the largest set; its inputs then take the sets."""
    from rkfarm.frontends.onnx import load_onnx

    for name, given in (("input_size_list", input_size_list), ("input_initial_val", input_initial_val)):
        if given is not None:
            raise NotSupportedError(
                f"load_onnx({name}=...) together with config(dynamic_input=...) is not supported: the shape sets "
                "give every input's shapes"
            )
    graph_inputs = [i.name for i in graph.real_inputs(proto)]
    if inputs and list(inputs) != graph_inputs:
        raise NotSupportedError(
            "load_onnx(inputs=...) at inner tensors together with config(dynamic_input=...) is not supported"
        )
    check_sets(proto, sets, ModelLoadError)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    for value, shape in zip(graph.real_inputs(fixed), sets[largest(sets)]):
        for dim, size in zip(value.type.tensor_type.shape.dim, shape):
            dim.dim_value = int(size)  # only dynamic dims differ from the model's (checked above)
    loaded = load_onnx(fixed, None, None, None, outputs)
    original = {v.name: v for v in graph.real_inputs(proto)}
    for value in graph.real_inputs(loaded.model):
        value.type.tensor_type.shape.CopyFrom(original[value.name].type.tensor_type.shape)
    loaded.model = apply_sets(loaded.model, sets, ModelLoadError)
    shown = [(v.name, graph.dims_of(v)) for v in graph.real_inputs(loaded.model)]
    dynamic = [f"{name}{shape_str(dims)}" for name, dims in shown if any(d < 0 for d in dims)]
    log.info("dynamic_input: %d shape sets; dynamic inputs %s", len(sets), ", ".join(dynamic) or "none")
    return loaded
