"""``onnx_edit``: give graph inputs and outputs a new shape, as the vendor's ``rknn.utils.onnx_edit`` does.

An input is re-declared with the new shape and Reshape/Transpose ops are inserted after it that rebuild the
original tensor, so the model computes the same function of the re-laid-out data. An output gets ops after the
original tensor that produce the new shape under the output's name. Only the ops needed are inserted. With a
calibration ``dataset``, the input transforms are applied to its arrays too (see ``_edit_dataset``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from rkfarm.errors import NotSupportedError, OnnxEditError
from rkfarm.frontends.onnx import read_onnx
from rkfarm.graph import real_inputs
from rkfarm.utils._edit_dataset import EditDataset
from rkfarm.utils._equation import Dim, Layout, Step, Transform, parse, resolve

log = logging.getLogger("rkfarm.utils.onnx_edit")

_MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit: bigger models keep their weights in an external data file


@dataclass(frozen=True)
class Edit:
    """One requested transform, checked: which tensor, input or output, and the resolved equation."""

    name: str
    kind: str  # 'input' or 'output'
    transform: Transform
    original: list[Dim]

    @property
    def steps(self) -> list[Step]:
        t = self.transform
        return t.steps(t.new, t.original) if self.kind == "input" else t.steps(t.original, t.new)


def onnx_edit(
    model: str | os.PathLike[str],
    export_path: str | os.PathLike[str],
    inputs_transform: Mapping[str, str] | None = None,
    outputs_transform: Mapping[str, str] | None = None,
    dataset: str | os.PathLike[str] | None = None,
) -> int:
    """Re-shape graph inputs/outputs of the ONNX file ``model`` by ``{tensor name: equation}`` and save the
    result to ``export_path``; with ``dataset``, also write ``dataset_for_<export stem>.txt`` (and a folder of
    that name) beside it, with the input transforms applied to the samples.

    Returns 0, or -1 (with a warning, nothing written) when no transform is given, as the vendor does. Invalid
    equations and unknown tensors raise :class:`OnnxEditError`; dataset problems raise ``DatasetError``.
    Everything is checked before anything is written.
    """
    proto, shown, _ = read_onnx(model)
    requests = [(n, e, "input") for n, e in (inputs_transform or {}).items()]
    requests += [(n, e, "output") for n, e in (outputs_transform or {}).items()]
    if not requests:
        log.warning("onnx_edit: neither inputs_transform nor outputs_transform was given; nothing to do")
        return -1
    names = [n for n, _, _ in requests]
    for name in names:
        if names.count(name) > 1:
            raise OnnxEditError(f"tensor {name!r} is in both inputs_transform and outputs_transform; give it once")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    if opset < 5:
        raise NotSupportedError(f"{shown}: opset {opset} has no Reshape with a shape input; onnx_edit needs 5+")
    edits = [_check(proto, shown, name, text, given) for name, text, given in requests]
    out = Path(export_path)
    inputs = real_inputs(proto)
    samples = None
    if dataset is not None:
        by_input = {e.name: e.transform for e in edits if e.kind == "input"}
        samples = EditDataset(Path(dataset), [v.name for v in inputs], [_dims(v) for v in inputs], by_input, out)
    namer = _Namer(proto.graph)
    for edit in edits:
        _apply(proto, edit, namer)
    out.parent.mkdir(parents=True, exist_ok=True)
    big = proto.ByteSize() > _MAX_PROTO_BYTES
    onnx.save_model(proto, str(out), save_as_external_data=big, location=f"{out.name}.data" if big else None)
    log.info("onnx_edit: saved the edited model to %s", out)
    if samples is not None:
        txt = samples.write()
        log.info("onnx_edit: wrote %d samples to %s (files in %s)", len(samples), txt, samples.folder)
    return 0


def _check(model: onnx.ModelProto, shown: str, name: str, text: str, given: str) -> Edit:
    g = model.graph
    inputs = {v.name: v for v in real_inputs(model)}
    outputs = {v.name: v for v in g.output}
    if name in inputs and name in outputs:
        raise OnnxEditError(f"tensor {name!r} is both a graph input and a graph output of {shown}: not supported")
    if name not in inputs and name not in outputs:
        inner = any(name in n.output for n in g.node) or any(t.name == name for t in g.initializer)
        raise OnnxEditError(
            f"tensor {name!r} is {'an inner tensor of' if inner else 'not in'} {shown}; onnx_edit re-shapes graph "
            f"inputs ({', '.join(inputs)}) and outputs ({', '.join(outputs)})"
        )
    kind = "input" if name in inputs else "output"
    if kind != given:
        log.warning("onnx_edit: %r is a graph %s, given in %ss_transform: edited as an %s", name, kind, given, kind)
    value = inputs[name] if kind == "input" else outputs[name]
    where = f"{kind} {name!r}"
    equation = parse(text, where)
    if not value.type.HasField("tensor_type"):
        raise OnnxEditError(f"{where} is not a tensor; onnx_edit re-shapes tensors only")
    if not value.type.tensor_type.HasField("shape"):  # the ONNX checker refuses this; be clear anyway
        raise OnnxEditError(f"{where} has no declared shape; declare it in the model")
    original = _dims(value)
    return Edit(name, kind, resolve(equation, original, where, kind=kind), original)


def _dims(value: onnx.ValueInfoProto) -> list[Dim]:
    dims: list[Dim] = []
    for d in value.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.dim_value > 0 else (d.dim_param or None))
    return dims


def _fmt(dims: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _apply(model: onnx.ModelProto, edit: Edit, namer: _Namer) -> None:
    """Rewrite the graph for one edit and log what was done."""
    g, t = model.graph, edit.transform
    new_dims = t.shape(t.new)
    label = f"onnx_edit: {edit.kind} {edit.name!r} ({t.equation.text!r})"
    for index, (group, dim) in enumerate(zip(t.original.groups, edit.original)):
        if group and not isinstance(dim, int) and not t.size(group)[1]:
            log.warning("%s: dynamic dim %d (%s) fixed to %d by the sizes given", label, index, dim, t.size(group)[0])
    steps = edit.steps
    if not steps and new_dims == edit.original:
        log.warning("%s: the new shape is the original shape; nothing to do for this tensor", label)
        return
    value = next(v for v in (g.input if edit.kind == "input" else g.output) if v.name == edit.name)
    _declare(value, new_dims)
    said = _insert(model, edit, steps, namer) if steps else ["no ops needed"]
    inserted = "to rebuild the original" if edit.kind == "input" else "after the original"
    verb = "takes" if edit.kind == "input" else "gives"
    log.info(
        "%s: now %s %s (was %s); inserted %s: %s",
        label,
        verb,
        _fmt(new_dims),
        _fmt(edit.original),
        inserted,
        "; ".join(said),
    )


def _insert(model: onnx.ModelProto, edit: Edit, steps: Sequence[Step], namer: _Namer) -> list[str]:
    """Insert the ops of ``steps`` at the edited input (after it) or output (before it); return their log."""
    g, t = model.graph, edit.transform
    inner = namer.new(f"{edit.name}_rkfarm_orig")  # the tensor as the original graph has it
    _rename_uses(g, edit.name, inner)
    for info in g.value_info:
        if info.name == edit.name:
            info.name = inner
    if edit.kind == "input":
        nodes, consts, said = _emit(t, t.new, steps, edit.name, inner, namer)
        kept = list(g.node)
        del g.node[:]
        g.node.extend([*nodes, *kept])
    else:
        for node in g.node:
            node.output[:] = [inner if o == edit.name else o for o in node.output]
        for init in g.initializer:
            if init.name == edit.name:
                init.name = inner
        nodes, consts, said = _emit(t, t.original, steps, inner, edit.name, namer)
        g.node.extend(nodes)
    g.initializer.extend(consts)
    if model.ir_version < 4:  # old IR: every initializer is also a graph input
        g.input.extend(helper.make_tensor_value_info(c.name, c.data_type, c.dims) for c in consts)
    return said


def _emit(
    t: Transform, start: Layout, steps: Sequence[Step], source: str, result: str, namer: _Namer
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], list[str]]:
    """Nodes (and their constant initializers) taking ``source`` through ``steps`` into ``result``, and a
    description of each step for the log."""
    nodes: list[onnx.NodeProto] = []
    consts: list[onnx.TensorProto] = []
    said: list[str] = []
    current, layout = source, start
    for index, step in enumerate(steps):
        out = result if index == len(steps) - 1 else namer.new(f"{result}_rkfarm_{index}")
        if step.perm is not None:
            nodes.append(helper.make_node("Transpose", [current], [out], namer.new(out), perm=list(step.perm)))
            said.append(f"Transpose {_fmt(t.shape(layout))} by {step.perm} to {_fmt(t.shape(step.target))}")
        else:
            shape = _reshape_target(t, layout, step.target, current, out, nodes, consts, namer)
            nodes.append(helper.make_node("Reshape", [current, shape], [out], namer.new(out)))
            said.append(f"Reshape {_fmt(t.shape(layout))} to {_fmt(t.shape(step.target))}")
        current, layout = out, step.target
    return nodes, consts, said


def _reshape_target(
    t: Transform,
    src: Layout,
    dst: Layout,
    current: str,
    out: str,
    nodes: list[onnx.NodeProto],
    consts: list[onnx.TensorProto],
    namer: _Namer,
) -> str:
    """The name of a Reshape's shape tensor: a constant when ONNX's 0 (copy) and -1 (infer) can express the
    dynamic dims, else computed from the run-time shape of ``current``."""

    def const(values: Sequence[int], what: str) -> str:
        name = namer.new(f"{out}_{what}")
        consts.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    src_sizes, dst_sizes = t.sizes(src), t.sizes(dst)
    fixed: list[int] = []
    for index, (static, dynamic) in enumerate(dst_sizes):
        same = index < len(src_sizes) and src_sizes[index] == (static, dynamic)
        fixed.append(static if not dynamic else 0 if same else -1)
    if fixed.count(-1) <= 1:
        return const(fixed, "shape")
    # several dims to compute: take each dynamic atom from its dim of the run-time shape
    shape = namer.new(f"{current}_rkfarm_dims")
    nodes.append(helper.make_node("Shape", [current], [shape], namer.new(shape)))
    atom: dict[str, str] = {}
    for index, (static, dynamic) in enumerate(src_sizes):
        if not dynamic:
            continue
        value = namer.new(f"{shape}_{index}")
        nodes.append(helper.make_node("Gather", [shape, const([index], f"at{index}")], [value], namer.new(value)))
        if static != 1:
            whole, value = value, namer.new(f"{value}_div")
            nodes.append(helper.make_node("Div", [whole, const([static], f"by{static}")], [value], namer.new(value)))
        atom[dynamic[0]] = value
    pieces = []
    for index, (static, dynamic) in enumerate(dst_sizes):
        if not dynamic:
            pieces.append(const([static], f"dim{index}"))
            continue
        factors = [atom[a] for a in dynamic] + ([const([static], f"mul{index}")] if static != 1 else [])
        piece = factors[0]
        for factor in factors[1:]:
            product = namer.new(f"{out}_dim{index}")
            nodes.append(helper.make_node("Mul", [piece, factor], [product], namer.new(product)))
            piece = product
        pieces.append(piece)
    target = namer.new(f"{out}_shape")
    nodes.append(helper.make_node("Concat", pieces, [target], namer.new(target), axis=0))
    return target


def _declare(value: onnx.ValueInfoProto, dims: Sequence[Dim]) -> None:
    shape = value.type.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif d is not None:
            dim.dim_param = d


def _rename_uses(g: onnx.GraphProto, old: str, new: str, subgraph: bool = False) -> None:
    """Point every reader of ``old`` (subgraphs included, unless they define their own ``old``) at ``new``."""
    if subgraph:  # a body may return an outer-scope tensor as one of its outputs
        for value in g.output:
            if value.name == old:
                value.name = new
    for node in g.node:
        node.input[:] = [new if i == old else i for i in node.input]
        for sub in _subgraphs(node):
            local = {v.name for v in sub.input} | {t.name for t in sub.initializer}
            local |= {o for n in sub.node for o in n.output}
            if old not in local:
                _rename_uses(sub, old, new, subgraph=True)


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of an If/Loop/Scan (or any graph-valued attribute)."""
    return [sub for a in node.attribute for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs)]


class _Namer:
    """Fresh tensor and node names that collide with nothing in the graph or its subgraphs."""

    def __init__(self, g: onnx.GraphProto) -> None:
        self._used: set[str] = set()
        self._collect(g)

    def _collect(self, g: onnx.GraphProto) -> None:
        self._used.update(v.name for v in [*g.input, *g.output, *g.value_info])
        self._used.update(t.name for t in g.initializer)
        for node in g.node:
            self._used.update([node.name, *node.input, *node.output])
            for sub in _subgraphs(node):
                self._collect(sub)

    def new(self, base: str) -> str:
        name, n = base, 0
        while name in self._used:
            n += 1
            name = f"{base}_{n}"
        self._used.add(name)
        return name
