"""The Caffe net, layer by layer, into one ONNX graph (opset 17, static shapes).

Caffe names blobs, and an in-place layer (top == bottom, e.g. ReLU after a convolution) writes a new value
under the same name. Here every write gets its own ONNX tensor; once the graph is built, the last value of a
blob takes the blob's name and the earlier ones are renamed ``<blob>/<layer that wrote it>``. ONNX node names
are the Caffe layer names (helper nodes: ``<layer>/<what>``). The outputs are the blobs no layer reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import onnx
from onnx import helper

from rkfarm.errors import ModelLoadError
from rkfarm.frontends.caffe import layers_basic, layers_conv, layers_ssd
from rkfarm.frontends.caffe.builder import Builder, LayerContext
from rkfarm.frontends.caffe.reader import Layer, Net
from rkfarm.frontends.caffe.weights import Weights

log = logging.getLogger(__name__)
OPSET = 17
IR_VERSION = 8  # the IR version of opset 17

CONVERTERS: dict[str, Callable[[LayerContext], None]] = {
    "Convolution": layers_conv.convolution,
    "Deconvolution": layers_conv.deconvolution,
    "Pooling": layers_conv.pooling,
    "InnerProduct": layers_conv.inner_product,
    "ReLU": layers_basic.relu,
    "PReLU": layers_basic.prelu,
    "ELU": layers_basic.elu,
    "Sigmoid": layers_basic.sigmoid,
    "TanH": layers_basic.tanh,
    "BatchNorm": layers_basic.batch_norm,
    "Scale": layers_basic.scale,
    "Eltwise": layers_basic.eltwise,
    "Concat": layers_basic.concat,
    "Softmax": layers_basic.softmax,
    "Flatten": layers_basic.flatten,
    "Reshape": layers_basic.reshape,
    "Permute": layers_basic.permute,
    "Dropout": layers_basic.identity,
    "Split": layers_basic.identity,
    "Slice": layers_basic.slice_,
    "Crop": layers_basic.crop,
    "Normalize": layers_ssd.normalize,
    "PriorBox": layers_ssd.prior_box,
    "Interp": layers_ssd.interp,
    "Upsample": layers_ssd.upsample,
}
# layers whose every field rkfarm must understand (a field it does not know is refused)
STRICT_TYPES = frozenset(CONVERTERS) | {"Input"}
# a net may end in these: they are dropped and their bottoms become the outputs
DROPPED_AT_END = frozenset({"DetectionOutput"})


def _where(net: Net, layer: Layer) -> str:
    return f"{net.path}:{layer.line}" if layer.line else str(net.path)


def _inputs(net: Net, input_name: Sequence[str] | None) -> list[tuple[str, list[int]]]:
    """The net's inputs (top-level `input:` fields, then Input layers), ordered by ``input_name`` when given."""
    found = list(net.inputs)
    for layer in net.layers:
        lp = layer.param
        if lp.type != "Input":
            continue
        shapes = list(lp.input_param.shape)
        if len(lp.bottom) or not lp.top or len(shapes) not in (1, len(lp.top)):
            raise ModelLoadError(
                f"{_where(net, layer)}: Input layer {lp.name!r} needs tops and one shape (or one per top), no bottoms"
            )
        found += [(top, list(shapes[0 if len(shapes) == 1 else i].dim)) for i, top in enumerate(lp.top)]
    if not found:
        raise ModelLoadError(f"{net.path}: the net has no inputs (no `input:` field and no Input layer)")
    names = [n for n, _ in found]
    for name, shape in found:
        if names.count(name) > 1:
            raise ModelLoadError(f"{net.path}: input {name!r} is declared twice")
        if not shape or any(d <= 0 for d in shape):
            raise ModelLoadError(f"{net.path}: input {name!r} has shape {shape}; rkfarm needs positive, static dims")
    if input_name is None:
        return found
    wanted = [input_name] if isinstance(input_name, str) else list(input_name)
    if sorted(wanted) != sorted(names):
        raise ModelLoadError(
            f"{net.path}: input_name {wanted} must name the net's {len(names)} input(s), in the order wanted: {names}"
        )
    by_name = dict(found)
    return [(n, by_name[n]) for n in wanted]


def convert(net: Net, weights: Weights, input_name: Sequence[str] | None = None) -> onnx.ModelProto:
    blob_names = {n for n, _ in net.inputs}
    for layer in net.layers:
        blob_names.update(layer.param.bottom)
        blob_names.update(layer.param.top)
    b = Builder(reserved=blob_names)
    inputs = _inputs(net, input_name)
    current: dict[str, str] = {}  # blob -> tensor holding its latest value
    writers: dict[str, list[tuple[str, str]]] = {}  # blob -> (tensor, layer) for each value it took
    for name, shape in inputs:
        current[name] = name
        b.shapes[name] = tuple(shape)
    produced: list[str] = []  # tensors layers wrote, in order
    consumed: set[str] = set()
    dropped: dict[str, str] = {}  # top of a dropped layer -> that layer
    terminal: list[str] = []  # bottoms of dropped layers: the first outputs
    for layer in net.layers:
        lp, where = layer.param, _where(net, layer)
        if lp.type == "Input":
            continue
        for bottom in lp.bottom:
            if bottom in dropped:
                raise ModelLoadError(
                    f"{where}: layer {lp.name!r} reads {bottom!r}, the output of {dropped[bottom]}, which rkfarm "
                    "drops (it runs only at the end of a net); cut the graph before it"
                )
            if bottom not in current:
                raise ModelLoadError(f"{where}: layer {lp.name!r} reads {bottom!r}, which no earlier layer produces")
        if lp.type in DROPPED_AT_END:
            log.warning(
                "%s: dropping %s layer %r (decode boxes and run NMS on the host): the outputs end at %s",
                where, lp.type, lp.name, ", ".join(lp.bottom),
            )  # fmt: skip
            terminal += [current[x] for x in lp.bottom if current[x] not in terminal]
            dropped.update({top: f"{lp.type} layer {lp.name!r}" for top in lp.top})
            continue
        if lp.type == "Silence":
            consumed.update(current[x] for x in lp.bottom)
            continue
        fn = CONVERTERS.get(lp.type)
        if fn is None:
            raise ModelLoadError(f"{where}: layer {lp.name!r} has type {lp.type!r} which rkfarm cannot convert")
        if len(set(lp.top)) != len(lp.top):
            raise ModelLoadError(f"{where}: layer {lp.name!r} names a top twice")
        ins = [current[x] for x in lp.bottom]
        outs = []
        for top in lp.top:
            if top in current or top in writers:
                outs.append(b.unique(f"{top}/{lp.name}"))
            else:
                b.claim(top)
                outs.append(top)
        fn(LayerContext(b, lp, where, ins, outs, weights))
        consumed.update(ins)
        for top, tensor in zip(lp.top, outs):
            current[top] = tensor
            writers.setdefault(top, []).append((tensor, lp.name))
            produced.append(tensor)

    input_names = {n for n, _ in inputs}
    finals = set(current.values())
    outputs = list(terminal) + [t for t in produced if t in finals and t not in consumed and t not in terminal]
    outputs = [t for t in outputs if t not in input_names]
    if not outputs:
        raise ModelLoadError(f"{net.path}: the net has no outputs (every blob is read by a later layer)")

    # the latest value of each blob takes the blob's name
    mapping: dict[str, str] = {}
    for blob, values in writers.items():
        last = values[-1][0]
        if last == blob or blob in input_names:
            continue
        first_tensor, first_layer = values[0]
        if first_tensor == blob:
            mapping[blob] = b.unique(f"{blob}/{first_layer}")
        mapping[last] = blob
    b.rename(mapping)
    outputs = [mapping.get(t, t) for t in outputs]

    graph = helper.make_graph(
        b.nodes,
        net.name,
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(s)) for n, s in inputs],
        [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, list(b.shapes[t])) for t in outputs],
        initializer=b.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rkfarm-caffe", ir_version=IR_VERSION
    )
    log.info(
        "converted %s: %d layers -> %d ONNX nodes; inputs %s, outputs %s",
        net.path.name, len(net.layers), len(b.nodes), [n for n, _ in inputs], outputs,
    )  # fmt: skip
    return model
