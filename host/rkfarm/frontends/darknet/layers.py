"""The network a ``.cfg`` describes: each layer's kind, parameters, inputs and output shape, as darknet computes them.

Layers are numbered from 0 after ``[net]``, as darknet numbers them (``route``/``shortcut`` indices count so).
Every key a layer sets is either used, or known to change nothing at inference (training settings), or refused:
darknet itself ignores keys it does not know, but a key rkfarm does not know may be one a newer darknet reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rkfarm.errors import ModelLoadError, NotSupportedError
from rkfarm.frontends.darknet.cfg import Cfg, Section

log = logging.getLogger(__name__)

ACTIVATIONS = ("leaky", "linear", "logistic", "relu", "tanh", "mish", "swish")
# section names darknet accepts, by the name this frontend uses
ALIASES = {
    "convolutional": "convolutional", "conv": "convolutional", "maxpool": "maxpool", "max": "maxpool",
    "avgpool": "avgpool", "avg": "avgpool", "connected": "connected", "conn": "connected",
    "softmax": "softmax", "soft": "softmax", "route": "route", "shortcut": "shortcut", "upsample": "upsample",
    "dropout": "dropout", "yolo": "yolo", "region": "region", "cost": "cost",
}  # fmt: skip
# darknet layers rkfarm does not convert (yet): refused by name
UNSUPPORTED = {
    "local", "activation", "rnn", "gru", "lstm", "conv_lstm", "crnn", "crop", "detection", "normalization",
    "lrn", "batchnorm", "reorg", "reorg3d", "local_avg", "local_avgpool", "scale_channels", "sam", "Gaussian_yolo",
    "empty", "deconvolutional", "deconv", "implicit_add", "implicit_mul", "contrastive",
}  # fmt: skip
# keys that steer training only, in any layer
TRAINING_KEYS = frozenset({"learning_rate", "stopbackward", "onlyforward", "dont_update", "burnin_update"})
HEADS = ("yolo", "region")
# layers nothing may read at inference: heads (left undecoded) and [cost] (its output is the training loss)
TERMINAL = (*HEADS, "cost")


@dataclass(frozen=True)
class Shape:
    c: int
    h: int
    w: int

    @property
    def size(self) -> int:
        return self.c * self.h * self.w

    def __str__(self) -> str:
        return f"{self.c}x{self.h}x{self.w}"


@dataclass(frozen=True)
class Conv:
    filters: int
    size: int
    stride: int
    padding: int  # each side
    groups: int
    batch_normalize: bool
    activation: str
    in_c: int


@dataclass(frozen=True)
class MaxPool:
    size: int
    stride: int
    padding: int  # total; darknet puts padding // 2 before and the rest after


@dataclass(frozen=True)
class Route:
    groups: int
    group_id: int


@dataclass(frozen=True)
class Shortcut:
    activation: str


@dataclass(frozen=True)
class Upsample:
    stride: int
    scale: float


@dataclass(frozen=True)
class Connected:
    outputs: int
    inputs: int
    batch_normalize: bool
    activation: str


@dataclass(frozen=True)
class Softmax:
    groups: int
    temperature: float


Params = Conv | MaxPool | Route | Shortcut | Upsample | Connected | Softmax | None


@dataclass(frozen=True)
class Layer:
    index: int
    kind: str  # the canonical section name (ALIASES' values)
    section: Section
    inputs: tuple[int, ...]  # indices of the layers it reads; -1 is the network input
    shape: Shape  # its output
    params: Params = None

    def describe(self) -> str:
        return f"layer {self.index} [{self.section.name}] (line {self.section.line})"


@dataclass(frozen=True)
class Network:
    input: Shape
    layers: tuple[Layer, ...]
    outputs: tuple[int, ...]  # layers whose output is a graph output: the inputs of yolo/region layers, in order


def _activation(sec: Section, default: str) -> str:
    name = sec.text("activation", default)
    if name not in ACTIVATIONS:
        raise sec.refuse(f"activation={name} is not supported (supported: {', '.join(ACTIVATIONS)})", "activation")
    return name


def _flag(sec: Section, key: str) -> bool:
    value = sec.integer(key, 0)
    if value not in (0, 1):
        raise sec.refuse(f"{key}={value} is not supported (0 or 1)", key)
    return value == 1


def _stride(sec: Section, default: int) -> int:
    stride = sec.integer("stride", default)
    for key in ("stride_x", "stride_y"):
        if sec.has(key) and sec.integer(key) != stride:
            raise sec.refuse(f"{key}= different from stride= is not supported", key)
    if stride < 1:
        raise sec.error(f"stride={stride} must be at least 1", "stride")
    return stride


def _resolve(sec: Section, key: str, index: int, ref: int) -> int:
    target = index + ref if ref < 0 else ref
    if not 0 <= target < index:
        raise sec.error(f"{key}={ref} is layer {target}; layer {index} can only read layers 0 to {index - 1}", key)
    return target


class _Builder:
    def __init__(self, cfg: Cfg) -> None:
        self.cfg = cfg
        self.layers: list[Layer] = []
        self.net_input = Shape(0, 0, 0)

    def shape_of(self, index: int) -> Shape:
        return self.net_input if index < 0 else self.layers[index].shape

    def net(self, sec: Section) -> Shape:
        dims = {}
        for key in ("width", "height", "channels"):
            if not sec.has(key):
                raise sec.error(f"needs {key}= (rkfarm builds a fixed-size image input from width, height, channels)")
            dims[key] = sec.integer(key)
            if dims[key] < 1:
                raise sec.error(f"{key}={dims[key]} must be positive", key)
        return Shape(dims["channels"], dims["height"], dims["width"])

    def build(self) -> Network:
        sections = self.cfg.sections
        self.net_input = self.net(sections[0])
        for sec in sections[1:]:
            if sec.name in ("net", "network"):
                raise ModelLoadError(f"{sec.where()}: a second [{sec.name}] section; [net] comes once, first")
            if sec.name in UNSUPPORTED:
                raise NotSupportedError(f"{sec.where()}: darknet layer [{sec.name}] is not supported by rkfarm")
            if sec.name not in ALIASES:
                raise ModelLoadError(f"{sec.where()}: unknown section [{sec.name}] (not a darknet layer)")
            index = len(self.layers)
            kind = ALIASES[sec.name]
            layer = getattr(self, kind)(sec, index)
            for i in layer.inputs:
                if i >= 0 and self.layers[i].kind in TERMINAL:
                    src = self.layers[i]
                    why = "its output is the training loss"
                    if src.kind != "cost":
                        why = "rkfarm leaves yolo/region outputs undecoded (raw heads), so nothing may read them"
                    raise NotSupportedError(
                        f"{sec.where()}: layer {index} [{sec.name}] reads the output of {src.describe()}; {why}"
                    )
            if kind not in (*TERMINAL, "dropout"):  # their keys steer training or decoding only
                sec.ignore(TRAINING_KEYS)
                for key in ("dontload", "dontloadscales", "clip"):
                    sec.only_default(key, ("0",))
                unknown = sec.unread()
                if unknown:
                    raise NotSupportedError(
                        f"{sec.where(unknown[0])}: [{sec.name}] {unknown[0]}= is not a key rkfarm's darknet frontend "
                        "knows; it refuses it rather than ignore what it may change"
                    )
            self.layers.append(layer)
        if not self.layers:
            raise ModelLoadError(f"{self.cfg.path}: the .cfg has [net] but no layers")
        outputs = [layer.inputs[0] for layer in self.layers if layer.kind in HEADS]
        last = self.layers[-1]
        while last.kind == "cost" and last.index > 0:  # darknet's network output: the last layer but [cost]
            last = self.layers[last.index - 1]
        if last.kind not in TERMINAL and last.index not in outputs:
            outputs.append(last.index)
        if not outputs:
            raise ModelLoadError(f"{self.cfg.path}: the .cfg has no layer whose output could be the model's output")
        if any(i < 0 for i in outputs):
            raise NotSupportedError(f"{self.cfg.path}: a yolo/region layer reads the network input directly")
        if len(set(outputs)) != len(outputs):
            raise NotSupportedError(f"{self.cfg.path}: two yolo/region layers read the same layer")
        return Network(self.net_input, tuple(self.layers), tuple(outputs))

    # -- one method per layer kind: parameters, inputs, output shape -------------------------------------
    def convolutional(self, sec: Section, index: int) -> Layer:
        src = self.shape_of(index - 1)
        filters = sec.integer("filters", 1)
        size = sec.integer("size", 1)
        stride = _stride(sec, 1)
        padding = sec.integer("padding", 0)
        if sec.integer("pad", 0):
            padding = size // 2
        groups = sec.integer("groups", 1)
        bn = sec.integer("batch_normalize", 0)
        if bn not in (0, 1) or sec.integer("cbn", 0):
            raise sec.refuse("only batch_normalize=0 or 1 is supported (cbn: no)", "batch_normalize")
        activation = _activation(sec, "logistic")
        if size != 1:
            sec.only_default("dilation", ("1",))
        else:
            sec.ignore(["dilation"])  # darknet ignores it for 1x1 kernels
        for key in ("binary", "xnor", "bin_output", "flipped", "antialiasing", "sway", "rotate", "stretch",
                    "stretch_sway", "dot"):  # fmt: skip
            sec.only_default(key, ("0",))
        sec.only_default("share_index", ())
        sec.ignore(["assisted_excitation", "angle"])  # training only; angle goes with the refused sway/rotate
        if filters < 1 or size < 1 or groups < 1 or padding < 0:
            raise sec.error("filters, size and groups must be positive and padding not negative")
        if src.c % groups or filters % groups:
            raise sec.error(f"groups={groups} must divide the input channels ({src.c}) and filters ({filters})")
        h = (src.h + 2 * padding - size) // stride + 1
        w = (src.w + 2 * padding - size) // stride + 1
        if src.h + 2 * padding < size or src.w + 2 * padding < size:
            raise sec.error(f"a {size}x{size} kernel does not fit the {src} input with padding {padding}")
        params = Conv(filters, size, stride, padding, groups, bool(bn), activation, src.c)
        return Layer(index, "convolutional", sec, (index - 1,), Shape(filters, h, w), params)

    def maxpool(self, sec: Section, index: int) -> Layer:
        src = self.shape_of(index - 1)
        stride = _stride(sec, 1)
        size = sec.integer("size", stride)
        padding = sec.integer("padding", size - 1)
        for key in ("maxpool_depth", "antialiasing"):
            sec.only_default(key, ("0",))
        sec.ignore(["out_channels"])  # used with maxpool_depth only
        if size < 1 or padding < 0:
            raise sec.error(f"size={size} must be positive and padding={padding} not negative")
        if padding - padding // 2 >= size:
            raise sec.refuse(f"padding={padding} leaves windows that see only padding (size={size})", "padding")
        h = (src.h + padding - size) // stride + 1
        w = (src.w + padding - size) // stride + 1
        if h < 1 or w < 1:
            raise sec.error(f"a {size}x{size} window does not fit the {src} input")
        return Layer(index, "maxpool", sec, (index - 1,), Shape(src.c, h, w), MaxPool(size, stride, padding))

    def avgpool(self, sec: Section, index: int) -> Layer:
        src = self.shape_of(index - 1)
        return Layer(index, "avgpool", sec, (index - 1,), Shape(src.c, 1, 1))

    def dropout(self, sec: Section, index: int) -> Layer:
        return Layer(index, "dropout", sec, (index - 1,), self.shape_of(index - 1))

    def cost(self, sec: Section, index: int) -> Layer:
        return Layer(index, "cost", sec, (index - 1,), self.shape_of(index - 1))

    def route(self, sec: Section, index: int) -> Layer:
        inputs = tuple(_resolve(sec, "layers", index, ref) for ref in sec.ints("layers"))
        groups = sec.integer("groups", 1)
        group_id = sec.integer("group_id", 0)
        if groups < 1 or not 0 <= group_id < groups:
            raise sec.error(f"groups={groups}, group_id={group_id}: need groups >= 1 and 0 <= group_id < groups")
        shapes = [self.shape_of(i) for i in inputs]
        first = shapes[0]
        for i, s in zip(inputs, shapes):
            if (s.h, s.w) != (first.h, first.w):
                raise sec.error(f"layer {i} is {s} but layer {inputs[0]} is {first}: route needs equal width, height")
            if s.c % groups:
                raise sec.refuse(f"groups={groups} does not divide the {s.c} channels of layer {i}", "groups")
        c = sum(s.c for s in shapes) // groups
        return Layer(index, "route", sec, inputs, Shape(c, first.h, first.w), Route(groups, group_id))

    def shortcut(self, sec: Section, index: int) -> Layer:
        froms = tuple(_resolve(sec, "from", index, ref) for ref in sec.ints("from"))
        activation = _activation(sec, "linear")
        for key in ("weights_type", "weights_normalization", "weights_normalizion"):
            sec.only_default(key, ("none",))
        for key in ("alpha", "beta"):
            sec.only_default(key, ("1", "1.0"))
        src = self.shape_of(index - 1)
        for i in froms:
            other = self.shape_of(i)
            if other != src:
                raise sec.refuse(f"adds layer {i} ({other}) to layer {index - 1} ({src}): shapes must match", "from")
        return Layer(index, "shortcut", sec, (index - 1, *froms), src, Shortcut(activation))

    def upsample(self, sec: Section, index: int) -> Layer:
        src = self.shape_of(index - 1)
        stride = sec.integer("stride", 2)
        if stride < 1:
            raise sec.refuse(f"stride={stride} (a downsampling upsample layer) is not supported", "stride")
        scale = sec.number("scale", 1.0)
        return Layer(index, "upsample", sec, (index - 1,), Shape(src.c, src.h * stride, src.w * stride),
                     Upsample(stride, scale))  # fmt: skip

    def connected(self, sec: Section, index: int) -> Layer:
        src = self.shape_of(index - 1)
        outputs = sec.integer("output", 1)
        if outputs < 1:
            raise sec.error(f"output={outputs} must be positive", "output")
        bn = _flag(sec, "batch_normalize")
        activation = _activation(sec, "logistic")
        params = Connected(outputs, src.size, bn, activation)
        return Layer(index, "connected", sec, (index - 1,), Shape(outputs, 1, 1), params)

    def softmax(self, sec: Section, index: int) -> Layer:
        src = self.shape_of(index - 1)
        groups = sec.integer("groups", 1)
        temperature = sec.number("temperature", 1.0)
        sec.only_default("spatial", ("0",))
        sec.only_default("tree", ())
        sec.ignore(["noloss"])
        if groups < 1 or src.size % groups:
            raise sec.error(f"groups={groups} must divide the {src.size} inputs", "groups")
        if temperature <= 0:
            raise sec.error(f"temperature={temperature} must be positive", "temperature")
        return Layer(index, "softmax", sec, (index - 1,), src, Softmax(groups, temperature))

    def yolo(self, sec: Section, index: int) -> Layer:
        src = self.shape_of(index - 1)
        classes = sec.integer("classes", 20)
        n = len(sec.ints("mask")) if sec.has("mask") else sec.integer("num", 1)
        if src.c != n * (classes + 5):
            raise sec.error(
                f"reads {src.c} channels but {n} anchors x (classes={classes} + 5) = {n * (classes + 5)}: "
                "filters= of the convolutional layer before does not match classes=/mask="
            )
        return Layer(index, "yolo", sec, (index - 1,), src)

    def region(self, sec: Section, index: int) -> Layer:
        src = self.shape_of(index - 1)
        classes, coords, num = sec.integer("classes", 20), sec.integer("coords", 4), sec.integer("num", 1)
        if src.c != num * (classes + coords + 1):
            raise sec.error(
                f"reads {src.c} channels but num={num} x (classes={classes} + coords={coords} + 1) = "
                f"{num * (classes + coords + 1)}: filters= of the layer before does not match"
            )
        return Layer(index, "region", sec, (index - 1,), src)


def network(cfg: Cfg) -> Network:
    """The layers of a parsed ``.cfg``, checked the way darknet checks them (and refusing what rkfarm cannot do)."""
    net = _Builder(cfg).build()
    log.debug("%s: %d layers, input %s, outputs %s", cfg.path, len(net.layers), net.input, net.outputs)
    return net
