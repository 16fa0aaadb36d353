"""Reading a Caffe model: the prototxt (text NetParameter) and the caffemodel (binary, weights by layer name).

The prototxt is parsed twice over. A lenient parse of the whole file (unknown fields skipped) gives the layer
list, so a layer rkfarm drops (a TRAIN-only data layer, a DetectionOutput) may carry fields of any Caffe fork.
Then every layer rkfarm converts is parsed again on its own, strictly: a field this schema does not declare
inside such a layer is refused with its line, because it may change what the layer computes. The top-level
fields (outside layers) are parsed strictly as well. Lines come from a small scanner that finds each top-level
``layer { ... }`` block (comments and strings skipped), so messages name ``file:line`` of the layer.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from rkfarm.errors import ModelLoadError
from rkfarm.frontends.caffe import caffe_pb2

# V1 layer type enum -> the layer type string Caffe's upgrade gives it
V1_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL", "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution",
    "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power",
    "RELU": "ReLU", "SIGMOID": "Sigmoid", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split",
    "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}  # fmt: skip
# parameter fields a V1 layer shares with LayerParameter (same message types, other field numbers)
_V1_PARAMS = (
    "concat_param", "convolution_param", "dropout_param", "eltwise_param", "inner_product_param", "pooling_param",
    "relu_param", "sigmoid_param", "softmax_param", "slice_param", "tanh_param",
)  # fmt: skip


@dataclass
class Layer:
    """One layer of the TEST-phase net, V1 layers already in the new form."""

    param: caffe_pb2.LayerParameter
    line: int  # 1-based line of the layer in the prototxt (0 when unknown)


@dataclass
class Net:
    path: Path
    name: str
    inputs: list[tuple[str, list[int]]]  # the top-level `input:` fields with their shapes
    layers: list[Layer]


@dataclass(frozen=True)
class _Span:
    kind: str  # "layer" or "layers"
    line: int  # line of the field name
    name_at: int  # offset of the field name
    body_line: int  # line of the opening bracket: the body text starts there
    start: int  # offset of the opening bracket
    end: int  # offset just past the closing bracket


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _scan(text: str) -> list[_Span]:
    """The top-level ``layer``/``layers`` blocks of a text-format NetParameter, in order."""
    spans: list[_Span] = []
    depth, i, line, n = 0, 0, 1, len(text)
    last_ident, ident_line, ident_at = "", 0, 0
    open_at = open_line = start_line = start_at = 0
    kind = ""
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                if text[j] == "\\":
                    j += 1
                elif text[j] == "\n":
                    break  # unterminated; the real parser reports it
                j += 1
            i = j + 1
            continue
        elif c in "{<":
            if depth == 0:
                kind = last_ident if last_ident in ("layer", "layers") else ""
                open_at, open_line = i, line
                start_line, start_at = ident_line, ident_at
            depth += 1
        elif c in "}>":
            depth -= 1
            if depth == 0 and kind:
                spans.append(_Span(kind, start_line, start_at, open_line, open_at, i + 1))
                kind = ""
        else:
            m = _IDENT.match(text, i)
            if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_.-+")):
                last_ident, ident_line, ident_at = m.group(), line, i
                i = m.end()
                continue
        i += 1
    return spans


def _parse_error(path: Path, exc: text_format.ParseError, line_offset: int = 0) -> str:
    """``file:line: message`` for a text-format parse error, with the schema's package name removed."""
    text = str(exc)
    text = re.sub(r"^\d+:\d+ : ", "", text).replace("rkfarm.caffe.", "")
    line = exc.GetLine()
    where = f"{path}:{line + line_offset}" if line is not None and line > 0 else f"{path}"
    return f"{where}: {text}"


def _meets(rule: caffe_pb2.NetStateRule, state: caffe_pb2.NetState) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    return all(s in state.stage for s in rule.stage) and not any(s in state.stage for s in rule.not_stage)


def _included(layer: caffe_pb2.LayerParameter, state: caffe_pb2.NetState, where: str) -> bool:
    """Caffe's include/exclude rules for the net state (phase forced to TEST, as a deployed net runs)."""
    if layer.include and layer.exclude:
        raise ModelLoadError(f"{where}: layer {layer.name!r} has both include and exclude rules (Caffe refuses that)")
    if layer.include:
        return any(_meets(r, state) for r in layer.include)
    return not any(_meets(r, state) for r in layer.exclude)


def _upgrade_v1(v1: caffe_pb2.V1LayerParameter) -> caffe_pb2.LayerParameter:
    layer = caffe_pb2.LayerParameter(name=v1.name, bottom=v1.bottom, top=v1.top)
    name = caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)
    layer.type = V1_TYPES.get(name, name)
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    for field in _V1_PARAMS:
        if v1.HasField(field):
            getattr(layer, field).CopyFrom(getattr(v1, field))
    return layer


def _line_of_name(text: str, name: str) -> int:
    """Fallback for a layer's line: where ``name: "<name>"`` first appears."""
    m = re.search(r"\bname\s*:\s*[\"']" + re.escape(name) + r"[\"']", text)
    return text.count("\n", 0, m.start()) + 1 if m else 0


def read_prototxt(path: Path, data: bytes, strict_types: Collection[str]) -> Net:
    """Parse a prototxt; layers whose type is in ``strict_types`` are checked field by field."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelLoadError(f"{path}: not a Caffe prototxt (not UTF-8 text; a .caffemodel goes in blobs=)") from None
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_field=True, allow_unknown_extension=True)
    except text_format.ParseError as exc:
        raise ModelLoadError(f"{_parse_error(path, exc)} (not a valid Caffe prototxt)") from None
    if net.layer and net.layers:
        raise ModelLoadError(f"{path}: mixes `layer {{}}` and the old `layers {{}}` form (Caffe refuses that)")
    spans = _scan(text)
    by_kind = {k: [s for s in spans if s.kind == k] for k in ("layer", "layers")}
    lines_ok = len(by_kind["layer"]) == len(net.layer) and len(by_kind["layers"]) == len(net.layers)

    if lines_ok:
        # the top-level fields, strictly: the text with every layer block blanked out (line count kept)
        rest = list(text)
        for s in spans:
            for k in range(s.name_at, s.end):
                if rest[k] != "\n":
                    rest[k] = " "
        checked, why = "".join(rest), "rkfarm reads only the standard net fields"
    else:
        # the scanner did not find the layers the parser found: check the whole file strictly instead, so that no
        # field rkfarm does not know is skipped silently
        checked, why = text, "rkfarm does not support this field"
    try:
        text_format.Parse(checked, caffe_pb2.NetParameter())
    except text_format.ParseError as exc:
        raise ModelLoadError(f"{_parse_error(path, exc)} ({why})") from None

    state = caffe_pb2.NetState(phase=caffe_pb2.TEST, level=net.state.level, stage=net.state.stage)
    layers: list[Layer] = []
    entries: list[tuple[caffe_pb2.LayerParameter, _Span | None, bool]] = []
    if net.layers:
        spans_v1 = by_kind["layers"]
        entries = [(_upgrade_v1(v1), spans_v1[i] if lines_ok else None, True) for i, v1 in enumerate(net.layers)]
    else:
        entries = [(lp, by_kind["layer"][i] if lines_ok else None, False) for i, lp in enumerate(net.layer)]
    for param, span, is_v1 in entries:
        line = span.line if span else _line_of_name(text, param.name)
        where = f"{path}:{line}" if line else str(path)
        if not _included(param, state, where):
            continue
        if param.type in strict_types and span is not None:
            body = text[span.start + 1 : span.end - 1]
            strict: caffe_pb2.LayerParameter | caffe_pb2.V1LayerParameter = (
                caffe_pb2.V1LayerParameter() if is_v1 else caffe_pb2.LayerParameter()
            )
            try:
                text_format.Parse(body, strict)
            except text_format.ParseError as exc:
                msg = _parse_error(path, exc, span.body_line - 1)
                raise ModelLoadError(
                    f"{msg} in layer {param.name!r} ({param.type}): rkfarm does not support this field, and it may "
                    "change what the layer computes"
                ) from None
        layers.append(Layer(param, line))

    return Net(path, net.name or path.stem, _net_inputs(path, net), layers)


def _net_inputs(path: Path, net: caffe_pb2.NetParameter) -> list[tuple[str, list[int]]]:
    names = list(net.input)
    if not names:
        if net.input_shape or net.input_dim:
            raise ModelLoadError(f"{path}: input_shape/input_dim given without `input:` names")
        return []
    if net.input_shape and net.input_dim:
        raise ModelLoadError(f"{path}: give the inputs' shapes as input_shape or input_dim, not both")
    if net.input_shape:
        if len(net.input_shape) != len(names):
            raise ModelLoadError(f"{path}: {len(names)} input(s) but {len(net.input_shape)} input_shape(s)")
        shapes = [list(s.dim) for s in net.input_shape]
    elif net.input_dim:
        if len(net.input_dim) != 4 * len(names):
            raise ModelLoadError(
                f"{path}: input_dim needs four numbers per input ({len(names)} input(s), {len(net.input_dim)} given)"
            )
        dims = list(net.input_dim)
        shapes = [dims[4 * i : 4 * i + 4] for i in range(len(names))]
    else:
        raise ModelLoadError(f"{path}: input {names[0]!r} has no shape (give input_shape or input_dim)")
    return list(zip(names, shapes))


def read_caffemodel(path: Path, data: bytes) -> dict[str, list[caffe_pb2.BlobProto]]:
    """The weights of a binary caffemodel: each layer's blobs by layer name (a later duplicate wins, as in Caffe)."""
    head = data[:64].lstrip()
    if head.startswith((b"name:", b"layer", b"input:", b"input ", b"#")):
        raise ModelLoadError(f"{path}: this is a prototxt (text), not a caffemodel")
    weights = caffe_pb2.NetWeights()
    try:
        weights.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ModelLoadError(f"{path}: truncated or not a caffemodel (cannot decode it)") from None
    found: dict[str, list[caffe_pb2.BlobProto]] = {}
    for entry in list(weights.layers) + list(weights.layer):
        found[entry.name] = list(entry.blobs)
    if not found:
        raise ModelLoadError(f"{path}: truncated or not a caffemodel (it holds no layers)")
    return found
