"""TensorFlow frontend: a frozen GraphDef (``.pb``), cut at ``inputs``/``outputs``, through tf2onnx to ONNX.

``inputs`` and ``outputs`` name tensors as the vendor takes them: a node name (its first output) or
``node:k``. An input may be an inner node, as the vendor's SSD-MobileNet example cuts at
``Preprocessor/sub``: that node becomes a placeholder of its ``input_size_list`` shape and everything above it
is dropped (tf2onnx never sees it). ``input_size_list`` gives each input's shape as TensorFlow has it (NHWC);
a shape one dim short gets batch 1 in front, as the vendor's ``[[300, 300, 3]]``. The ONNX model's inputs and
outputs are named as given (``node`` for ``node:0``).

A quantization-aware-training graph keeps its quantization (build(do_quantization=False) keeps it, as the
vendor): ``FakeQuantWithMinMaxVars``/``Args`` on activations become QuantizeLinear/DequantizeLinear on the grid
TensorFlow computes (its "nudged" range, see ``prepare_fake_quant``); fake-quantized weights (per tensor or per
channel, narrow range or not) become DequantizeLinear of their integers on their FakeQuant's grid
(``restore_weight_grids``). Refused, naming the op: FakeQuant on activations with ``narrow_range=True``, per
channel, or a range computed at run time (tf2onnx has no conversion for them).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

from rkfarm.errors import ModelLoadError
from rkfarm.frontends import FRONTENDS, LoadedGraph, sniff
from rkfarm.frontends.common import finish, read_source, sources_sha256
from rkfarm.frontends.tf_convert import OPSET, import_converter, mark_layouts, quiet, run_converter
from rkfarm_proto.tensors import shape_str

log = logging.getLogger(__name__)
_PLACEHOLDERS = ("Placeholder", "PlaceholderWithDefault", "PlaceholderV2")
_FAKE_QUANT = ("FakeQuantWithMinMaxArgs", "FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsPerChannel")
_WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_LAYOUT_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")
_VARIABLES = ("VariableV2", "Variable", "VarHandleOp", "VarIsInitializedOp", "ReadVariableOp")


def _tensor(name: str) -> tuple[str, int]:
    """'node' or 'node:k' -> (node, k)."""
    node, sep, port = name.rpartition(":")
    if sep and port.isdigit():
        return node, int(port)
    return name, 0


def _names(value: Sequence[str] | None, what: str, path: Path) -> list[str]:
    if isinstance(value, str) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ModelLoadError(f"{path}: load_tensorflow() needs {what} as a list of tensor names, e.g. ['input']")
    names = [v.strip() for v in value]
    seen = [_tensor(n) for n in names]
    if len(set(seen)) != len(seen):
        raise ModelLoadError(f"{path}: {what} names a tensor twice: {names}")
    return names


def load_tensorflow(
    tf_pb: str | os.PathLike[str],
    inputs: Sequence[str],
    input_size_list: Sequence[Sequence[int]],
    outputs: Sequence[str],
    input_is_nchw: bool = False,
) -> LoadedGraph:
    """Load a frozen TensorFlow graph cut at ``inputs`` (shapes ``input_size_list``) and ``outputs``."""
    path = Path(tf_pb)
    data = read_source(path, "a frozen TensorFlow GraphDef")
    in_names = _names(inputs, "inputs", path)
    out_names = _names(outputs, "outputs", path)
    if not input_size_list or len(input_size_list) != len(in_names):
        raise ModelLoadError(
            f"{path}: input_size_list needs one shape per input ({len(in_names)}: {', '.join(in_names)}), "
            "e.g. [[1, 224, 224, 3]]"
        )
    shapes = []
    for name, shape in zip(in_names, input_size_list):
        try:
            dims = [int(d) for d in shape]
        except (TypeError, ValueError):
            raise ModelLoadError(f"{path}: input_size_list entry {shape!r} for {name!r} holds no dims") from None
        if not dims or any(d <= 0 for d in dims):
            raise ModelLoadError(f"{path}: input_size_list entry {dims} for {name!r} must hold positive dims")
        shapes.append(dims)
    found = sniff(data[:4096])
    if found in ("tflite", "pytorch"):  # unambiguous signatures: no need to import TensorFlow to say so
        describe = FRONTENDS[found].describe
        raise ModelLoadError(f"{path}: not a TensorFlow GraphDef (it is {describe}: load it with load_{found}())")
    convert = import_converter("load_tensorflow()", "tensorflow")
    graph_def = _parse(data, path)
    cut, renames, ins, outs = _cut(graph_def, path, in_names, shapes, out_names)
    weight_grids = prepare_fake_quant(cut)
    proto = run_converter(
        lambda: convert.from_graph_def(cut, input_names=ins, output_names=outs, opset=OPSET, tensors_to_rename=renames),
        path,
        "the TensorFlow graph",
    )
    restored = restore_weight_grids(proto, weight_grids)
    if restored:
        log.info("%s: %d fake-quantized weight(s) kept quantized on their FakeQuant grids", path.name, restored)
    mark_layouts(proto, input_is_nchw)
    log.info("%s: converted with tf2onnx (%d nodes)", path.name, len(proto.graph.node))
    return finish(proto, path, sources_sha256([data]), "tensorflow")


def _parse(data: bytes, path: Path) -> Any:
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ModelLoadError(f"{path}: not a TensorFlow GraphDef (cannot parse it{_other_format(data)})") from None
    if not graph_def.node:
        hint = _other_format(data) or ": it has no nodes"
        raise ModelLoadError(f"{path}: not a frozen TensorFlow GraphDef{hint}")
    if any(not n.name or not n.op for n in graph_def.node):
        raise ModelLoadError(f"{path}: not a TensorFlow GraphDef (nodes without a name or op); is the file damaged?")
    variables = sorted({n.op for n in graph_def.node if n.op in _VARIABLES})
    if variables:
        raise ModelLoadError(
            f"{path}: the graph holds variables ({', '.join(variables)}): freeze it first "
            "(convert_variables_to_constants_v2, or freeze_graph)"
        )
    return graph_def


def _other_format(data: bytes) -> str:
    """What a file that is no GraphDef is instead, for the message: ': it is ...', or ''."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    found = sniff(data[:4096])
    if found in ("caffe", "darknet"):
        return f": it looks like {FRONTENDS[found].describe}"
    try:
        if onnx.load_model_from_string(data).graph.node:
            return ": it is an ONNX model: load it with load_onnx()"
    except (DecodeError, RuntimeError, ValueError):
        pass
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return ""
    if saved.meta_graphs or saved.saved_model_schema_version:
        return ": it is a SavedModel's saved_model.pb: freeze it to a GraphDef first"
    return ""


def _missing(path: Path, what: str, name: str, nodes: Sequence[str]) -> ModelLoadError:
    close = difflib.get_close_matches(name, nodes, n=3, cutoff=0.5)
    hint = f" (close: {', '.join(close)})" if close else ""
    return ModelLoadError(f"{path}: {what} {name!r} is not a node of the graph{hint}")


def _cut(
    graph_def: Any, path: Path, in_names: list[str], shapes: list[list[int]], out_names: list[str]
) -> tuple[Any, dict[str, str], list[str], list[str]]:
    """The graph between the inputs (placeholders of the given shapes) and the outputs; tf2onnx's tensor names
    for them, and the renames that give the ONNX inputs/outputs the names the caller used."""
    import tensorflow as tf

    nodes = {n.name: n for n in graph_def.node}
    for what, names in (("input", in_names), ("output", out_names)):
        for name in names:
            if _tensor(name)[0] not in nodes:
                raise _missing(path, what, name, list(nodes))
    with quiet(), tf.Graph().as_default() as g:
        try:
            tf.compat.v1.import_graph_def(graph_def, name="")
        except Exception as exc:  # unknown ops, bad attributes, dangling inputs: TensorFlow's own check
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{path}: TensorFlow cannot import the graph: {first}") from None
        tensors = {}
        for what, names in (("input", in_names), ("output", out_names)):
            for name in names:
                node, port = _tensor(name)
                op = g.get_operation_by_name(node)
                if port >= len(op.outputs):
                    raise ModelLoadError(f"{path}: {what} {name!r}: node {node!r} has {len(op.outputs)} output(s)")
                tensors[name] = op.outputs[port]

    cut = tf.compat.v1.GraphDef()
    cut.CopyFrom(graph_def)
    by_name = {n.name: n for n in cut.node}
    ins: list[str] = []
    renames: dict[str, str] = {}
    for name, given in zip(in_names, shapes):
        node, port = _tensor(name)
        tensor = tensors[name]
        rank = tensor.shape.rank
        dims = [1, *given] if rank is not None and len(given) == rank - 1 else given  # the vendor omits batch
        if rank is not None and len(dims) != rank:
            raise ModelLoadError(
                f"{path}: input_size_list entry {shape_str(dims)} does not fit input {name!r} of rank {rank}"
            )
        known = tensor.shape.as_list() if rank is not None else []
        if any(k is not None and k != d for k, d in zip(known, dims)):
            log.warning("input %r: overriding its dims %s with %s", name, known, shape_str(dims))
        placeholder = node if port == 0 else f"{node}__port{port}"
        if placeholder != node and placeholder in by_name:
            raise ModelLoadError(f"{path}: cannot cut at {name!r}: the graph already has a node {placeholder!r}")
        new = tf.compat.v1.NodeDef(name=placeholder, op="Placeholder")
        new.attr["dtype"].type = tensor.dtype.as_datatype_enum
        new.attr["shape"].shape.CopyFrom(tf.TensorShape(dims).as_proto())
        if port == 0:
            by_name[node].CopyFrom(new)
            others = sorted({i for n in cut.node for i in n.input if i.startswith(f"{node}:") and i != f"{node}:0"})
            if others:
                raise ModelLoadError(
                    f"{path}: cannot cut at {name!r}: the graph also reads {', '.join(others)}; list them in inputs"
                )
        else:
            cut.node.append(new)
            for consumer in cut.node:
                consumer.input[:] = [placeholder if i == f"{node}:{port}" else i for i in consumer.input]
        ins.append(f"{placeholder}:0")
        renames[f"{placeholder}:0"] = node if port == 0 else name
    outs = [f"{node}:{port}" for node, port in map(_tensor, out_names)]
    renames.update({out: out[:-2] for out in outs if out.endswith(":0")})
    with quiet():
        sub = tf.compat.v1.graph_util.extract_sub_graph(cut, [_tensor(o)[0] for o in out_names])
    kept = {n.name: n for n in sub.node}
    wanted = {i.split(":")[0] for i in ins}
    unlisted = sorted(n for n, nd in kept.items() if nd.op in _PLACEHOLDERS and n not in wanted)
    if unlisted:
        raise ModelLoadError(
            f"{path}: the outputs also depend on placeholder(s) {', '.join(unlisted)}: list them in inputs"
        )
    unused = sorted(n for n in wanted if n not in kept)
    if unused:
        raise ModelLoadError(f"{path}: input(s) {', '.join(unused)} do not feed the outputs {out_names}")
    return sub, {k: v for k, v in renames.items() if k != v}, ins, outs


@dataclass(frozen=True)
class _Grid:
    """The values a FakeQuant op rounds to: (q - zero) * scale for integers q in [qmin, qmax]."""

    scale: npt.NDArray[np.float32]  # a scalar, or one per channel
    zero: npt.NDArray[np.float32]  # integers, shaped as scale
    qmin: int
    qmax: int

    @property
    def bounds(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """The clamping range: TensorFlow's 'nudged' min and max."""
        f = np.float32
        return (f(self.qmin) - self.zero) * self.scale, (f(self.qmax) - self.zero) * self.scale

    def codes(self, values: npt.NDArray[Any], axis: int | None) -> npt.NDArray[np.uint8] | None:
        """``values`` as integers of this grid (per-channel along ``axis``), or None if they are not on it."""
        scale, zero = self.scale, self.zero
        if axis is not None:
            if scale.ndim != 1 or values.ndim <= axis or values.shape[axis] != scale.size:
                return None
            shape = [1] * values.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        elif scale.ndim:
            return None
        q = np.round(values / scale) + zero
        if q.min() < self.qmin or q.max() > self.qmax:
            return None
        back = ((q - zero) * scale).astype(np.float32)
        if not np.allclose(back, values, rtol=1e-6, atol=float(np.min(scale)) * 1e-4):
            return None
        return q.astype(np.uint8)


def _grid(lo: npt.ArrayLike, hi: npt.ArrayLike, bits: int, narrow: bool) -> _Grid:
    """The grid of a FakeQuant op with range [lo, hi], as TensorFlow nudges it: in float32, the zero point moved
    to the nearest integer (halves away from zero), the range moved with it."""
    f = np.float32
    lo_, hi_ = np.asarray(lo, f), np.asarray(hi, f)
    qmin, qmax = f(1 if narrow else 0), f((1 << bits) - 1)
    scale = (hi_ - lo_) / (qmax - qmin)
    from_min = qmin - lo_ / scale
    rounded = np.floor(from_min.astype(np.float64) + 0.5).astype(f)
    zero = np.where(from_min < qmin, qmin, np.where(from_min > qmax, qmax, rounded)).astype(f)
    return _Grid(scale, zero, int(qmin), int(qmax))


def prepare_fake_quant(graph_def: Any) -> list[_Grid]:
    """Make tf2onnx's Q/DQ of FakeQuant ops compute what TensorFlow computes (in place); the grids of the
    FakeQuant ops on constants (weights), for ``restore_weight_grids``.

    On activations: tf2onnx derives the zero point from the raw range with its own rounding; where the raw zero
    point falls on .5 (a symmetric range such as [-1, 1]) it takes the other integer than TensorFlow, which
    moves the clamping bounds by a step. Each such op gets its nudged range instead, on which both agree."""
    import tensorflow as tf

    fakes = [n for n in graph_def.node if n.op in _FAKE_QUANT]
    if not fakes:
        return []
    nodes = {n.name: n for n in graph_def.node}
    runtime: dict[str, bool] = {}  # node -> its value depends on a graph input (or is one)

    def at_run_time(name: str) -> bool:
        stack = [name.lstrip("^").split(":")[0]]
        while stack:  # iterative post-order: graphs are deep
            top = stack[-1]
            if top in runtime:
                stack.pop()
                continue
            node = nodes.get(top)
            if node is None or node.op in _PLACEHOLDERS:
                runtime[top] = True
                stack.pop()
                continue
            deps = [i.lstrip("^").split(":")[0] for i in node.input]
            pending = [d for d in deps if d not in runtime]
            if pending:
                stack.extend(pending)
                continue
            runtime[top] = any(runtime[d] for d in deps)
            stack.pop()
        return runtime[name.lstrip("^").split(":")[0]]

    wanted = sorted({i for n in fakes if n.op != "FakeQuantWithMinMaxArgs" for i in n.input[1:3] if not at_run_time(i)})
    values: dict[str, npt.NDArray[Any]] = {}
    if wanted:
        with quiet(), tf.Graph().as_default() as g, tf.compat.v1.Session(graph=g) as session:
            tf.compat.v1.import_graph_def(graph_def, name="")
            fetched = session.run([f"{n}:0" if ":" not in n else n for n in wanted])
        values = {n: np.asarray(v) for n, v in zip(wanted, fetched)}

    weights: list[_Grid] = []
    for node in list(graph_def.node):
        if node.op not in _FAKE_QUANT:
            continue
        bits = node.attr["num_bits"].i if "num_bits" in node.attr else 8
        narrow = node.attr["narrow_range"].b if "narrow_range" in node.attr else False
        if node.op == "FakeQuantWithMinMaxArgs":
            ranges: list[npt.NDArray[Any] | None] = [
                np.asarray(node.attr["min"].f, np.float32),
                np.asarray(node.attr["max"].f, np.float32),
            ]
        else:
            ranges = [values.get(i) for i in node.input[1:3]]
        lo, hi = ranges if len(ranges) == 2 else (None, None)
        if lo is None or hi is None or lo.shape != hi.shape or not np.all(hi > lo):
            continue  # a range computed at run time: tf2onnx refuses it, and rkfarm says so
        grid = _grid(lo, hi, bits, narrow)
        if not at_run_time(node.input[0]):
            weights.append(grid)  # folded by tf2onnx with TensorFlow itself: already TensorFlow's numbers
        elif node.op == "FakeQuantWithMinMaxArgs":
            node.attr["min"].f, node.attr["max"].f = (float(b) for b in grid.bounds)
        elif node.op == "FakeQuantWithMinMaxVars":
            for index, (kind, bound) in enumerate(zip(("min", "max"), grid.bounds), start=1):
                const = graph_def.node.add(name=f"{node.name}/nudged_{kind}", op="Const")
                const.attr["dtype"].type = tf.float32.as_datatype_enum
                const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.float32(bound)))
                node.input[index] = const.name
    return weights


def restore_weight_grids(model: onnx.ModelProto, grids: Sequence[_Grid]) -> int:
    """Give back their quantization to the weights a QAT graph fake-quantizes (in place).

    tf2onnx folds a FakeQuant of a constant into float values (on the op's grid, computed by TensorFlow). Left
    float behind a DequantizeLinear, ONNX Runtime would quantize such a weight again with a scale of its own (its
    QDQ weight-quantization pass), and compute other numbers than the graph. Each float weight of Conv/
    ConvTranspose/MatMul/Gemm whose input is dequantized and whose values lie on one of the graph's weight grids
    becomes DequantizeLinear of its integers on that grid (the same values). A weight whose op takes a float input
    stays float: ONNX Runtime computes it in float, as TensorFlow does. Returns how many weights were restored."""
    if not grids:
        return 0
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}

    def dequantized(name: str) -> bool:
        node = producers.get(name)
        while node is not None and node.op_type in _LAYOUT_OPS:
            node = producers.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)

    def quantized_weight(name: str) -> bool:  # every reader is a weighted op of a dequantized input
        return all(n.op_type in _WEIGHTED and n.input[1:2] == [name] and dequantized(n.input[0]) for n in readers[name])

    weights = {n.input[1] for n in g.node if n.op_type in _WEIGHTED and n.input[1:2] and n.input[1] in inits}
    weights = {w for w in weights if quantized_weight(w)}
    added: list[onnx.NodeProto] = []
    for name in sorted(weights):
        tensor = inits[name]
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(tensor)
        for grid in grids:
            axes: list[int | None] = [None] if grid.scale.ndim == 0 else list(range(values.ndim))
            found = next(((axis, q) for axis in axes if (q := grid.codes(values, axis)) is not None), None)
            if found is None:
                continue
            axis, q = found
            g.initializer.remove(tensor)
            g.initializer.extend([
                numpy_helper.from_array(q, f"{name}/quantized"),
                numpy_helper.from_array(grid.scale.astype(np.float32), f"{name}/scale"),
                numpy_helper.from_array(grid.zero.astype(np.uint8), f"{name}/zero_point"),
            ])  # fmt: skip
            node = helper.make_node(
                "DequantizeLinear", [f"{name}/quantized", f"{name}/scale", f"{name}/zero_point"], [name]
            )
            if axis is not None:
                node.attribute.append(helper.make_attribute("axis", axis))
            added.append(node)
            break
    if added:
        nodes = [*added, *g.node]
        del g.node[:]
        g.node.extend(nodes)
    return len(added)
