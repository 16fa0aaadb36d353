"""Darknet test models written by the test: ``.cfg`` text, ``.weights`` bytes, and a torch reference of each.

A net is a list of ``Sec`` (a cfg section and its options). ``Reference`` walks that list itself (it shares no
code with rkfarm's frontend): it makes random weights, runs the layers with torch ops in float64 as darknet
defines them, and writes the weights in darknet's file layout. Batch-norm statistics are measured on a
calibration image while the weights are made, so activations stay in a realistic range even in yolov3's 107
layers (random statistics would blow up or vanish).

The architectures of yolov3-tiny, yolov4-tiny and yolov3 follow their published .cfg layer layouts
(written out here from the known architectures; the weights are random).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as fn

Tensor = torch.Tensor


@dataclass
class Sec:
    name: str
    opts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Net:
    name: str
    width: int
    height: int
    channels: int
    layers: list[Sec]
    net_extra: dict[str, Any] = field(default_factory=dict)


def section(name: str, **opts: Any) -> Sec:
    return Sec(name, opts)


# -- cfg text --------------------------------------------------------------------------------------------
def _value(v: Any, messy: bool) -> str:
    if isinstance(v, (list, tuple)):
        return (" , " if messy else ",").join(str(x) for x in v)
    return str(v)


def render_cfg(net: Net, messy: bool = False) -> str:
    """The .cfg text; ``messy`` adds comments, blank lines, odd spacing, tabs and CRLF line ends."""
    head = {"batch": 64, "subdivisions": 16, "width": net.width, "height": net.height, "channels": net.channels,
            "momentum": 0.9, "decay": 0.0005, "learning_rate": 0.001, **net.net_extra}  # fmt: skip
    lines = ["# written by tests/darknet_nets.py", "[net]"] if messy else ["[net]"]
    lines += [f"{k}={_value(v, messy)}" for k, v in head.items()]
    for i, sec in enumerate(net.layers):
        lines.append("")
        if messy:
            lines.append(f"; layer {i}")
            lines.append(f"  [ {sec.name} ]  # section {i}" if i % 3 == 0 else f"[{sec.name}]")
        else:
            lines.append(f"[{sec.name}]")
        for j, (k, v) in enumerate(sec.opts.items()):
            if messy and j % 2:
                lines.append(f"\t{k} = {_value(v, messy)}   # {k}")
            elif messy:
                lines.append(f"{k}= {_value(v, messy)}")
            else:
                lines.append(f"{k}={_value(v, messy)}")
    return ("\r\n" if messy else "\n").join(lines) + "\n"


# -- the torch reference ---------------------------------------------------------------------------------
def activate(x: Tensor, name: str) -> Tensor:
    if name == "leaky":
        return fn.leaky_relu(x, 0.1)
    if name == "linear":
        return x
    if name == "logistic":
        return torch.sigmoid(x)
    if name == "relu":
        return torch.relu(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "mish":
        return x * torch.tanh(fn.softplus(x))
    if name == "swish":
        return x * torch.sigmoid(x)
    raise ValueError(name)


def darknet_bn(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    """Darknet's (AlexeyAB's) inference batch norm: (x - mean) / sqrt(var + .00001), times scales, plus biases."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    x = (x - p["rolling_mean"].view(shape)) / torch.sqrt(p["rolling_variance"].view(shape) + 1e-5)
    return x * p["scales"].view(shape) + p["biases"].view(shape)


class Reference:
    """Random weights for ``net`` and its forward pass in torch (float64)."""

    def __init__(self, net: Net, seed: int) -> None:
        self.net = net
        self.gen = torch.Generator().manual_seed(seed)
        self.params: list[dict[str, Tensor]] = []  # per layer, float32 values as stored in the file
        calibration = torch.rand(1, net.channels, net.height, net.width, generator=self.gen, dtype=torch.float64)
        self._run(calibration, build=True)

    def _randn(self, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=self.gen, dtype=torch.float64)

    def _uniform(self, lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=self.gen, dtype=torch.float64)

    def _bn_params(self, y: Tensor, n: int) -> dict[str, Tensor]:
        """Statistics near the ones ``y`` (the pre-norm output) really has, with random scales and biases."""
        dims = [0, *range(2, y.dim())]
        mean = y.mean(dims) + 0.05 * self._randn(n)
        var = (y.var(dims, unbiased=False) if y[0, 0].numel() > 1 else torch.ones(n)) * self._uniform(0.7, 1.3, n)
        return {"scales": self._uniform(0.6, 1.4, n), "rolling_mean": mean, "rolling_variance": var + 1e-3,
                "biases": 0.2 * self._randn(n)}  # fmt: skip

    def _f32(self, p: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.to(torch.float32).to(torch.float64) for k, v in p.items()}

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in self._run(torch.from_numpy(x).to(torch.float64), build=False)]

    def _run(self, x: Tensor, build: bool) -> list[Tensor]:
        outs: list[Tensor] = []
        heads: list[Tensor] = []
        for i, sec in enumerate(self.net.layers):
            o = sec.opts
            prev = outs[-1] if outs else x
            kind = {"conv": "convolutional", "max": "maxpool", "avg": "avgpool", "conn": "connected",
                    "soft": "softmax"}.get(sec.name, sec.name)  # fmt: skip
            if kind == "convolutional":
                y = self._conv(prev, o, i, build)
            elif kind == "maxpool":
                stride = int(o.get("stride", 1))
                size = int(o.get("size", stride))
                padding = int(o.get("padding", size - 1))
                before = padding // 2
                padded = fn.pad(prev, (before, padding - before, before, padding - before), value=-float("inf"))
                y = fn.max_pool2d(padded, size, stride)
            elif kind == "avgpool":
                y = prev.mean(dim=(2, 3), keepdim=True)
            elif kind == "connected":
                y = self._connected(prev, o, i, build)
            elif kind in ("dropout", "yolo", "region", "cost"):
                y = prev
                if kind in ("yolo", "region"):
                    heads.append(prev)
            elif kind == "route":
                refs = _ints(o["layers"])
                groups, gid = int(o.get("groups", 1)), int(o.get("group_id", 0))
                picked = [outs[r if r >= 0 else i + r] for r in refs]
                y = torch.cat([t.chunk(groups, dim=1)[gid] for t in picked], dim=1)
            elif kind == "shortcut":
                y = prev
                for r in _ints(o["from"]):
                    y = y + outs[r if r >= 0 else i + r]
                y = activate(y, o.get("activation", "linear"))
            elif kind == "upsample":
                s = int(o.get("stride", 2))
                y = prev.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3) * float(o.get("scale", 1))
            elif kind == "softmax":
                groups, temp = int(o.get("groups", 1)), float(o.get("temperature", 1))
                y = torch.softmax(prev.reshape(1, groups, -1) / temp, dim=-1).reshape(prev.shape)
            else:
                raise ValueError(sec.name)
            outs.append(y)
        if not heads or self.net.layers[-1].name not in ("yolo", "region"):
            heads.append(outs[-1])  # the last layer's output ([cost] passes its input on)
        return heads

    def _conv(self, x: Tensor, o: dict[str, Any], i: int, build: bool) -> Tensor:
        n, size = int(o.get("filters", 1)), int(o.get("size", 1))
        stride, groups = int(o.get("stride", 1)), int(o.get("groups", 1))
        padding = size // 2 if int(o.get("pad", 0)) else int(o.get("padding", 0))
        bn = int(o.get("batch_normalize", 0))
        if build:
            fan_in = x.shape[1] // groups * size * size
            p = {"weights": self._randn(n, x.shape[1] // groups, size, size) * (1.5 / fan_in) ** 0.5}
            if bn:
                raw = fn.conv2d(x, p["weights"], None, stride, padding, 1, groups)
                p.update(self._bn_params(raw, n))
            else:
                p["biases"] = 0.2 * self._randn(n)
            self.params.append(self._f32(p))
        p = self._layer_params(i)
        y = fn.conv2d(x, p["weights"], None if bn else p["biases"], stride, padding, 1, groups)
        return activate(darknet_bn(y, p) if bn else y, o.get("activation", "logistic"))

    def _connected(self, x: Tensor, o: dict[str, Any], i: int, build: bool) -> Tensor:
        n, bn = int(o.get("output", 1)), int(o.get("batch_normalize", 0))
        flat = x.reshape(1, -1)
        if build:
            p = {"weights": self._randn(n, flat.shape[1]) * (1.5 / flat.shape[1]) ** 0.5}
            if bn:
                p.update(self._bn_params(flat @ p["weights"].T, n))
            else:
                p["biases"] = 0.2 * self._randn(n)
            self.params.append(self._f32(p))
        p = self._layer_params(i)
        y = flat @ p["weights"].T
        y = darknet_bn(y, p) if bn else y + p["biases"]
        return activate(y, o.get("activation", "logistic")).reshape(1, n, 1, 1)

    def _layer_params(self, i: int) -> dict[str, Tensor]:
        weighted = [j for j, s in enumerate(self.net.layers) if s.name in ("convolutional", "conv", "connected",
                                                                             "conn")]  # fmt: skip
        return self.params[weighted.index(i)]

    def weights_bytes(self, major: int = 0, minor: int = 2, revision: int = 0, seen: int = 32013312) -> bytes:
        """The .weights file: header, then each weighted layer's arrays in darknet's order."""
        out = [struct.pack("<3i", major, minor, revision)]
        out.append(struct.pack("<q" if major * 10 + minor >= 2 else "<i", seen))
        weighted = [s for s in self.net.layers if s.name in ("convolutional", "conv", "connected", "conn")]
        for sec, p in zip(weighted, self.params):
            bn = ["scales", "rolling_mean", "rolling_variance"] if int(sec.opts.get("batch_normalize", 0)) else []
            connected = sec.name in ("connected", "conn")
            order = ["biases", "weights", *bn] if connected else ["biases", *bn, "weights"]
            out += [p[k].to(torch.float32).numpy().astype("<f4").tobytes() for k in order]
        return b"".join(out)


def _ints(v: Any) -> list[int]:
    return [int(x) for x in (v if isinstance(v, (list, tuple)) else [v])]


def write(folder: Path, net: Net, seed: int = 0, messy: bool = False, **header: int) -> tuple[Path, Path, Reference]:
    """``<name>.cfg`` and ``<name>.weights`` in ``folder``, and the reference that made the weights."""
    ref = Reference(net, seed)
    cfg = folder / f"{net.name}.cfg"
    cfg.write_bytes(render_cfg(net, messy).encode())
    weights = folder / f"{net.name}.weights"
    weights.write_bytes(ref.weights_bytes(**header))
    return cfg, weights, ref


# -- small nets covering every layer and option ----------------------------------------------------------
def conv(filters: int, size: int = 3, stride: int = 1, bn: bool = True, act: str | None = "leaky", **kw: Any) -> Sec:
    opts: dict[str, Any] = {"batch_normalize": 1} if bn else {}
    opts.update(filters=filters, size=size, stride=stride, pad=1 if size > 1 else 0)
    if act is not None:
        opts["activation"] = act
    opts.update(kw)
    return Sec("convolutional", opts)


YOLO_KEYS = {"jitter": 0.3, "ignore_thresh": 0.7, "truth_thresh": 1, "random": 1, "scale_x_y": 1.05,
             "iou_thresh": 0.213, "cls_normalizer": 1.0, "iou_normalizer": 0.07, "iou_loss": "ciou",
             "nms_kind": "greedynms", "beta_nms": 0.6}  # fmt: skip
COCO_ANCHORS = [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319]
V3_ANCHORS = [10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326]


def zoo() -> Net:
    """Every layer kind and option on a non-square 26x30 input; three raw heads (yolo, region, yolo)."""
    small = {"anchors": [1, 2, 3, 4, 5, 6, 7, 8], "classes": 3, "num": 4, **YOLO_KEYS}
    layers = [
        conv(16, 3, 1, act="leaky"),  # 0: 16x26x30
        Sec("conv", {"batch_normalize": 1, "filters": 16, "size": 3, "stride": 2, "pad": 1, "activation": "mish"}),
        section("max", size=2, stride=1),  # 2: darknet pads 0 before, 1 after
        conv(24, 1, groups=2, act="swish"),  # 3: grouped 1x1
        section("convolutional", filters=24, size=3, padding=1, groups=8, activation="relu"),  # 4: no bn, padding=
        section("shortcut", **{"from": -2}, activation="leaky"),  # 5: 3 + 4
        section("route", layers=[-1, 1]),  # 6: 40x13x15
        section("route", layers=-1, groups=2, group_id=1),  # 7: 20x13x15
        section("convolutional", filters=10, size=5, stride=1),  # 8: valid 5x5, default activation (logistic)
        section("upsample", stride=2),  # 9: 10x18x22
        section("maxpool", size=3, stride=2),  # 10: 10x9x11
        conv(10, 3, act="tanh"),  # 11
        section("shortcut", **{"from": [-2, 8]}, activation="relu"),  # 12: 11 + 10 + 8
        section("maxpool", size=5, stride=1),  # 13: SPP-style
        section("maxpool", size=3, stride=1, padding=0),  # 14: 10x7x9
        conv(12, 3, 2, act="linear"),  # 15: 12x4x5
        section("upsample", stride=3, scale=0.5),  # 16: 12x12x15
        section("route", layers=-1, groups=3, group_id=2),  # 17: 4x12x15
        section("dropout", probability=0.3),  # 18
        conv(16, 1, bn=False, act="linear"),  # 19: head
        section("yolo", mask=[0, 1], **small),  # 20
        section("route", layers=12),  # 21: absolute index
        conv(14, 1, bn=False, act="linear"),  # 22: region head, 2 x (2 + 4 + 1)
        section("region", anchors=[1, 1, 2, 2], classes=2, coords=4, num=2, softmax=1, jitter=0.2, rescore=1),  # 23
        section("route", layers=13),  # 24
        section("maxpool", size=2, stride=2),  # 25: odd input, darknet's extra row/column: 10x5x6
        conv(16, 3, bn=False, act="linear"),  # 26: head
        section("yolo", mask=[2, 3], **small),  # 27
    ]
    return Net("zoo", 30, 26, 3, layers)


def classifier() -> Net:
    """Connected layers (with and without batch norm, default activation), conv after connected, softmax groups."""
    layers = [
        conv(8, 3, 2),  # 8x9x10
        section("maxpool", size=2, stride=2),  # 8x5x5
        section("connected", output=24, batch_normalize=1, activation="mish"),
        section("dropout", probability=0.5),
        section("connected", output=12),  # default activation: logistic
        conv(12, 1, act="swish"),  # 12x1x1
        section("softmax", groups=3, temperature=2),
        section("cost", type="sse"),  # darknet classifier cfgs end so; the output is the softmax's
    ]
    return Net("classifier", 19, 17, 3, layers)


def gap() -> Net:
    """Global average pool, a linear connected layer, plain softmax; one input channel."""
    layers = [conv(10, 3, act="relu"), section("avg"), section("conn", output=10, activation="linear"), section("soft")]
    return Net("gap", 16, 16, 1, layers)


# -- the published architectures -------------------------------------------------------------------------
def _yolo(mask: list[int], anchors: list[int], num: int) -> Sec:
    return section("yolo", mask=mask, anchors=anchors, classes=80, num=num, **YOLO_KEYS)


def _upsampled(filters: int, skip: int) -> list[Sec]:
    """Back to the layer 4 before a yolo head, 1x1 conv, upsample x2, concat with an earlier layer."""
    return [section("route", layers=-4), conv(filters, 1), section("upsample", stride=2),
            section("route", layers=[-1, skip])]  # fmt: skip


def yolov3_tiny() -> Net:
    layers: list[Sec] = []
    for f in (16, 32, 64, 128, 256):
        layers += [conv(f), section("maxpool", size=2, stride=2)]
    layers += [conv(512), section("maxpool", size=2, stride=1), conv(1024)]  # 10, 11, 12
    layers += [conv(256, 1), conv(512), conv(255, 1, bn=False, act="linear"), _yolo([3, 4, 5], COCO_ANCHORS, 6)]
    layers += _upsampled(128, 8)
    layers += [conv(256), conv(255, 1, bn=False, act="linear"), _yolo([1, 2, 3], COCO_ANCHORS, 6)]
    return Net("yolov3-tiny", 416, 416, 3, layers)


def yolov4_tiny() -> Net:
    layers = [conv(32, 3, 2), conv(64, 3, 2)]  # 0, 1
    for f in (64, 128, 256):  # CSP blocks: 2-9, 10-17, 18-25
        layers += [conv(f), section("route", layers=-1, groups=2, group_id=1), conv(f // 2), conv(f // 2),
                   section("route", layers=[-1, -2]), conv(f, 1), section("route", layers=[-6, -1]),
                   section("maxpool", size=2, stride=2)]  # fmt: skip
    layers += [conv(512), conv(256, 1), conv(512), conv(255, 1, bn=False, act="linear")]  # 26-29
    layers += [_yolo([3, 4, 5], COCO_ANCHORS, 6)]  # 30
    layers += _upsampled(128, 23)
    layers += [conv(256), conv(255, 1, bn=False, act="linear"), _yolo([1, 2, 3], COCO_ANCHORS, 6)]  # 35-37
    return Net("yolov4-tiny", 416, 416, 3, layers)


def yolov3() -> Net:
    layers = [conv(32)]
    for f, blocks in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):  # darknet-53
        layers.append(conv(f, 3, 2))
        for _ in range(blocks):
            layers += [conv(f // 2, 1), conv(f), section("shortcut", **{"from": -3}, activation="linear")]
    assert len(layers) == 75
    for f, mask, skip in ((512, [6, 7, 8], None), (256, [3, 4, 5], 61), (128, [0, 1, 2], 36)):
        if skip is not None:
            layers += _upsampled(f, skip)
        layers += [conv(f, 1), conv(f * 2), conv(f, 1), conv(f * 2), conv(f, 1), conv(f * 2)]
        layers += [conv(255, 1, bn=False, act="linear"), _yolo(mask, V3_ANCHORS, 9)]
    assert len(layers) == 107
    return Net("yolov3", 416, 416, 3, layers)


NETS: dict[str, Callable[[], Net]] = {
    "zoo": zoo, "classifier": classifier, "gap": gap, "yolov3-tiny": yolov3_tiny, "yolov4-tiny": yolov4_tiny,
    "yolov3": yolov3,
}  # fmt: skip
