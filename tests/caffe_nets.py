"""Caffe nets for tests/test_frontend_caffe.py: prototxt text, caffemodel bytes, and a PyTorch reference.

Each net is written twice by hand: as Caffe text, and as PyTorch code (torch.nn.functional) using the same
weights. The weights are drawn here, handed to PyTorch as tensors and serialized into the caffemodel with rkfarm's
caffe_pb2 (a NetParameter with one layer entry per weighted layer). PriorBox, whose output is a constant, is
checked against a plain-loop implementation written from the SSD paper's description, independent of rkfarm's.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the usual spelling)

from rkfarm.frontends.caffe import caffe_pb2

Blobs = dict[str, list[np.ndarray]]
Forward = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def caffemodel_bytes(blobs: Blobs, v1: bool = False, legacy_dims: bool = False, layers: Sequence[str] = ()) -> bytes:
    """A binary NetParameter holding ``blobs`` by layer name (V1 ``layers`` and/or legacy 4-D dims on request).

    As Caffe does, it lists every layer (``layers``, in order), those without weights with no blobs."""
    net = caffe_pb2.NetParameter(name="weights")
    for name in [*layers, *(n for n in blobs if n not in layers)]:
        arrays = blobs.get(name, [])
        entry = net.layers.add() if v1 else net.layer.add()
        entry.name = name
        for a in arrays:
            blob = entry.blobs.add()
            if legacy_dims or v1:
                dims = [1] * (4 - a.ndim) + list(a.shape)
                blob.num, blob.channels, blob.height, blob.width = dims
            else:
                blob.shape.dim.extend(a.shape)
            blob.data.extend(np.asarray(a, np.float32).ravel().tolist())
    return net.SerializeToString()


def layer(name: str, kind: str, bottom: str | Sequence[str], top: str | Sequence[str], body: str = "") -> str:
    bottoms = [bottom] if isinstance(bottom, str) else list(bottom)
    tops = [top] if isinstance(top, str) else list(top)
    lines = [f'  name: "{name}"', f'  type: "{kind}"']
    lines += [f'  bottom: "{b}"' for b in bottoms] + [f'  top: "{t}"' for t in tops]
    if body:
        lines.append(f"  {body}")
    return "layer {\n" + "\n".join(lines) + "\n}\n"


def header(inputs: dict[str, tuple[int, ...]], style: str = "input_shape") -> str:
    """The net's inputs as `input:` + input_shape, old-style input_dim, or Input layers."""
    text = 'name: "test"\n'
    for name, shape in inputs.items():
        dims = " ".join(f"dim: {d}" for d in shape)
        if style == "input_shape":
            text += f'input: "{name}"\ninput_shape {{ {dims} }}\n'
        elif style == "input_dim":
            text += f'input: "{name}"\n' + "".join(f"input_dim: {d}\n" for d in shape)
        else:
            text += layer(name, "Input", [], name, f"input_param {{ shape {{ {dims} }} }}")
    return text


@dataclass
class CaffeNet:
    prototxt: str
    inputs: dict[str, tuple[int, ...]]
    forward: Forward
    blobs: Blobs = field(default_factory=dict)
    v1: bool = False

    def write(self, folder: Path, stem: str = "net", legacy_dims: bool = False) -> tuple[Path, Path]:
        proto, model = folder / f"{stem}.prototxt", folder / f"{stem}.caffemodel"
        proto.write_text(self.prototxt)
        names = re.findall(r'^\s*(?:layers? \{ )?name: "([^"]+)"', self.prototxt, re.MULTILINE)[1:]
        model.write_bytes(caffemodel_bytes(self.blobs, v1=self.v1, legacy_dims=legacy_dims, layers=names))
        return proto, model

    def feeds(self, seed: int = 1) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {n: rng.standard_normal(s).astype(np.float32) for n, s in self.inputs.items()}

    def reference(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = self.forward({n: torch.from_numpy(a) for n, a in feeds.items()})
        return {n: t.numpy() for n, t in out.items()}


class Weights:
    """Random weights, kept both as torch tensors (for the reference) and as Caffe blobs (for the caffemodel)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.blobs: Blobs = {}

    def blob(self, layer_name: str, array: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(array, dtype=np.float32)
        self.blobs.setdefault(layer_name, []).append(a)
        return torch.from_numpy(a.copy())

    def normal(self, layer_name: str, shape: tuple[int, ...], std: float) -> torch.Tensor:
        return self.blob(layer_name, self.rng.standard_normal(shape) * std)

    def uniform(self, layer_name: str, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
        return self.blob(layer_name, self.rng.uniform(lo, hi, shape))

    def conv(self, name: str, cin: int, cout: int, kh: int, kw: int | None = None, group: int = 1,
             bias: bool = True, deconv: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        kw = kh if kw is None else kw
        shape = (cin, cout // group, kh, kw) if deconv else (cout, cin // group, kh, kw)
        w = self.normal(name, shape, math.sqrt(2.0 / (shape[1] * kh * kw)))
        return w, (self.normal(name, (cout,), 0.1) if bias else None)

    def bn(self, name: str, c: int, factor: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """BatchNorm blobs as Caffe stores them (sums times the moving-average factor); returns mean, var."""
        mean = self.rng.standard_normal(c) * 0.2
        var = self.rng.uniform(0.5, 2.0, c)
        self.blob(name, mean * factor)
        self.blob(name, var * factor)
        self.blob(name, np.asarray([factor]))
        return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(var.astype(np.float32))

    def scale(self, name: str, c: int, bias: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = self.uniform(name, (c,), 0.5, 1.5).view(1, c, 1, 1)
        return s, (self.normal(name, (c,), 0.1).view(1, c, 1, 1) if bias else None)


def bn_scale_relu(x: torch.Tensor, bn: tuple[torch.Tensor, torch.Tensor],
                  sc: tuple[torch.Tensor, torch.Tensor | None], eps: float = 1e-5) -> torch.Tensor:  # fmt: skip
    y = F.batch_norm(x, bn[0], bn[1], eps=eps) * sc[0]
    return torch.relu(y if sc[1] is None else y + sc[1])


# ---- Caffe's pooling, written out with loops (checks the torch reference on the pooling cases) --------------


def caffe_pool(x: np.ndarray, pool: str, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int],
               ceil: bool = True) -> np.ndarray:  # fmt: skip
    """Caffe's PoolingLayer::Forward_cpu for one NCHW array, straight from its description."""
    n, c, h, w = x.shape
    sizes = []
    for size, kk, ss, pp in zip((h, w), k, s, p):
        out = (math.ceil((size + 2 * pp - kk) / ss) if ceil else (size + 2 * pp - kk) // ss) + 1
        if pp and (out - 1) * ss >= size + pp:
            out -= 1
        sizes.append(out)
    y = np.zeros((n, c, *sizes), np.float64)
    for ph, pw in itertools.product(range(sizes[0]), range(sizes[1])):
        hs, ws = ph * s[0] - p[0], pw * s[1] - p[1]
        he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
        area = (he - hs) * (we - ws)
        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
        window = x[:, :, hs:he, ws:we]
        y[:, :, ph, pw] = window.max(axis=(2, 3)) if pool == "MAX" else window.sum(axis=(2, 3)) / area
    return y.astype(np.float32)


# ---- SSD priors, from the paper's description (plain loops, float64) ----------------------------------------


def ssd_priors(feat_hw: tuple[int, int], img_hw: tuple[int, int], min_sizes: Sequence[float],
               max_sizes: Sequence[float] = (), ratios: Sequence[float] = (), flip: bool = True,
               clip: bool = False, variance: Sequence[float] = (0.1,), step: float | None = None,
               offset: float = 0.5) -> np.ndarray:  # fmt: skip
    """[1, 2, H*W*P*4]: per cell, per min size: the square box, the sqrt(min*max) square, then each ratio."""
    fh, fw = feat_hw
    ih, iw = img_hw
    all_ratios: list[float] = []
    for r in ratios:
        if all(abs(r - q) >= 1e-6 for q in [1.0, *all_ratios]):
            all_ratios += [r, 1.0 / r] if flip else [r]
    step_y = step if step else ih / fh
    step_x = step if step else iw / fw
    boxes: list[float] = []
    for i, j in itertools.product(range(fh), range(fw)):
        cy, cx = (i + offset) * step_y, (j + offset) * step_x
        for n, m in enumerate(min_sizes):
            whs = [(m, m)]
            if max_sizes:
                whs.append((math.sqrt(m * max_sizes[n]),) * 2)
            whs += [(m * math.sqrt(r), m / math.sqrt(r)) for r in all_ratios]
            for bw, bh in whs:
                boxes += [(cx - bw / 2) / iw, (cy - bh / 2) / ih, (cx + bw / 2) / iw, (cy + bh / 2) / ih]
    b = np.asarray(boxes)
    if clip:
        b = np.clip(b, 0, 1)
    var = np.tile(np.asarray(list(variance) * (4 if len(variance) == 1 else 1)), len(b) // 4)
    return np.stack([b, var])[np.newaxis].astype(np.float32)


# ---- small nets, one feature each -----------------------------------------------------------------------------

CASES: dict[str, Callable[[], CaffeNet]] = {}
IN = (1, 4, 11, 13)


def _net(body: str, fwd: Forward, w: Weights, inputs: dict[str, tuple[int, ...]] | None = None,
         style: str = "input_shape") -> CaffeNet:  # fmt: skip
    inputs = inputs or {"data": IN}
    return CaffeNet(header(inputs, style) + body, inputs, fwd, w.blobs)


def _conv_case(params: str, k: tuple[int, int], s: tuple[int, int] = (1, 1), p: tuple[int, int] = (0, 0),
               d: tuple[int, int] = (1, 1), g: int = 1, bias: bool = True, cout: int = 6, deconv: bool = False,
               style: str = "input_shape") -> Callable[[], CaffeNet]:  # fmt: skip
    def make() -> CaffeNet:
        w = Weights()
        W, B = w.conv("conv", IN[1], cout, k[0], k[1], g, bias, deconv)
        extra = "" if bias else " bias_term: false"
        kind = "Deconvolution" if deconv else "Convolution"
        body = layer("conv", kind, "data", "conv", f"convolution_param {{ num_output: {cout} {params}{extra} }}")
        op = F.conv_transpose2d if deconv else F.conv2d
        return _net(body, lambda f: {"conv": op(f["data"], W, B, stride=s, padding=p, dilation=d, groups=g)}, w,
                    style=style)  # fmt: skip

    return make


CASES.update({
    "conv_k3_pad": _conv_case("kernel_size: 3 pad: 1", (3, 3), p=(1, 1)),
    "conv_hw_fields": _conv_case("kernel_h: 3 kernel_w: 5 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2", (3, 5), (2, 1),
                                 (1, 2)),
    "conv_repeated_pairs": _conv_case("kernel_size: 3 kernel_size: 5 stride: 1 stride: 2 pad: 0 pad: 1", (3, 5),
                                      (1, 2), (0, 1)),
    "conv_group_dilated": _conv_case("kernel_size: 3 stride: 2 pad: 2 dilation: 2 group: 2", (3, 3), (2, 2), (2, 2),
                                     (2, 2), g=2),
    "conv_pad_h_only": _conv_case("kernel_size: 3 pad_h: 2", (3, 3), p=(2, 0)),
    "conv_depthwise": _conv_case("kernel_size: 3 pad: 1 group: 4", (3, 3), p=(1, 1), g=4, cout=4),
    "conv_no_bias_input_dim": _conv_case("kernel_size: 1", (1, 1), bias=False, style="input_dim"),
    "conv_input_layer": _conv_case("kernel_size: 2 stride: 2", (2, 2), (2, 2), style="layer"),
    "deconv_k4_s2": _conv_case("kernel_size: 4 stride: 2 pad: 1", (4, 4), (2, 2), (1, 1), deconv=True),
    "deconv_group": _conv_case("kernel_size: 3 stride: 2 group: 2", (3, 3), (2, 2), g=2, deconv=True),
})  # fmt: skip

# (pool, kernel, stride, pad, input h/w, round_mode): odd and even sizes, stride 2, kernel 3, with and without pad
POOLS = [
    ("MAX", 3, 2, 0, (9, 10)), ("MAX", 3, 2, 1, (10, 9)), ("MAX", 2, 2, 0, (7, 7)), ("MAX", 3, 2, 1, (8, 11)),
    ("MAX", 2, 2, 1, (6, 7)), ("MAX", 3, 3, 1, (7, 8)), ("AVE", 3, 2, 0, (9, 10)), ("AVE", 3, 2, 1, (10, 9)),
    ("AVE", 2, 2, 0, (7, 7)), ("AVE", 3, 2, 1, (8, 11)), ("AVE", 2, 2, 1, (6, 7)), ("AVE", 3, 3, 1, (7, 8)),
    ("AVE", 3, 1, 1, (5, 6)), ("AVE", 4, 3, 2, (11, 10)),
]  # fmt: skip


def pool_case(pool: str, k: int | tuple[int, int], s: int | tuple[int, int], p: int | tuple[int, int],
              hw: tuple[int, int], ceil: bool = True) -> CaffeNet:  # fmt: skip
    kk, ss, pp = ((v, v) if isinstance(v, int) else v for v in (k, s, p))
    if isinstance(k, int) and isinstance(s, int) and isinstance(p, int):
        params = f"kernel_size: {k} stride: {s} pad: {p}"
    else:
        params = (f"kernel_h: {kk[0]} kernel_w: {kk[1]} stride_h: {ss[0]} stride_w: {ss[1]} "
                  f"pad_h: {pp[0]} pad_w: {pp[1]}")  # fmt: skip
    if not ceil:
        params += " round_mode: FLOOR"
    body = layer("pool", "Pooling", "data", "pool", f"pooling_param {{ pool: {pool} {params} }}")

    def fwd(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if pool == "MAX":
            return {"pool": F.max_pool2d(f["data"], kk, ss, pp, ceil_mode=ceil)}
        return {"pool": F.avg_pool2d(f["data"], kk, ss, pp, ceil_mode=ceil, count_include_pad=True)}

    return _net(body, fwd, Weights(), {"data": (1, 3, *hw)})


for _p in POOLS:
    CASES["pool_{}_k{}_s{}_p{}_{}x{}".format(*_p[:4], *_p[4])] = lambda _p=_p: pool_case(*_p)  # type: ignore[misc]
CASES["pool_MAX_hw_fields"] = lambda: pool_case("MAX", (3, 2), (2, 1), (1, 0), (9, 8))
CASES["pool_AVE_hw_fields"] = lambda: pool_case("AVE", (3, 2), (2, 3), (1, 1), (10, 9))
CASES["pool_AVE_floor"] = lambda: pool_case("AVE", 3, 2, 1, (10, 9), ceil=False)


def _global(pool: str) -> CaffeNet:
    body = layer("pool", "Pooling", "data", "pool", f"pooling_param {{ pool: {pool} global_pooling: true }}")
    fn = torch.amax if pool == "MAX" else torch.mean
    return _net(body, lambda f: {"pool": fn(f["data"], dim=(2, 3), keepdim=True)}, Weights())


CASES["pool_global_MAX"] = lambda: _global("MAX")
CASES["pool_global_AVE"] = lambda: _global("AVE")


def _ip(axis: int, transpose: bool, bias: bool = True) -> CaffeNet:
    w = Weights()
    k = math.prod(IN[axis:])
    W = w.normal("fc", (k, 7) if transpose else (7, k), 0.2)
    B = w.normal("fc", (7,), 0.1) if bias else None
    body = layer("fc", "InnerProduct", "data", "fc",
                 f"inner_product_param {{ num_output: 7 axis: {axis} transpose: {str(transpose).lower()} "
                 f"bias_term: {str(bias).lower()} }}")  # fmt: skip
    return _net(body, lambda f: {"fc": F.linear(f["data"].flatten(axis), W.T if transpose else W, B)}, w)


CASES["ip_axis1"] = lambda: _ip(1, False)
CASES["ip_transpose_no_bias"] = lambda: _ip(1, True, bias=False)
CASES["ip_axis2"] = lambda: _ip(2, False)


def _after_conv(kind: str, body: str, make: Callable[[Weights], Callable[[torch.Tensor], torch.Tensor]],
                in_place: bool = False) -> CaffeNet:  # fmt: skip
    """conv, then the layer under test; ``make(weights)`` gives its reference. In place: top == bottom."""
    w = Weights()
    W, B = w.conv("conv", IN[1], 6, 3)
    act = make(w)
    top = "conv" if in_place else "out"
    text = layer("conv", "Convolution", "data", "conv", "convolution_param { num_output: 6 kernel_size: 3 }")
    text += layer("act", kind, "conv", top, body)
    return _net(text, lambda f: {top: act(F.conv2d(f["data"], W, B))}, w)


def _fixed(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Weights], Callable[[torch.Tensor], torch.Tensor]]:
    return lambda w: fn


def _prelu(w: Weights) -> Callable[[torch.Tensor], torch.Tensor]:
    a = w.uniform("act", (6,), 0.05, 0.5)
    return lambda x: F.prelu(x, a)


def _prelu_shared(w: Weights) -> Callable[[torch.Tensor], torch.Tensor]:
    a = w.blob("act", np.asarray(0.3))  # Caffe's shared slope is a 0-D blob
    return lambda x: F.prelu(x, a.reshape(1))


def _normalize_per_position(w: Weights) -> Callable[[torch.Tensor], torch.Tensor]:
    s = w.uniform("act", (6,), 5.0, 20.0)
    return lambda x: x / torch.sqrt((x * x).sum(1, keepdim=True) + 1e-6) * s.view(1, 6, 1, 1)


def _normalize_across(w: Weights) -> Callable[[torch.Tensor], torch.Tensor]:
    s = w.uniform("act", (1,), 5.0, 20.0)
    return lambda x: x / torch.sqrt((x * x).sum((1, 2, 3), keepdim=True) + 1e-10) * s


CASES.update({
    "relu_in_place": lambda: _after_conv("ReLU", "", _fixed(torch.relu), in_place=True),
    "relu_negative_slope": lambda: _after_conv("ReLU", "relu_param { negative_slope: 0.1 }",
                                               _fixed(lambda x: F.leaky_relu(x, 0.1))),
    "prelu": lambda: _after_conv("PReLU", "", _prelu, in_place=True),
    "prelu_channel_shared": lambda: _after_conv("PReLU", "prelu_param { channel_shared: true }", _prelu_shared),
    "elu": lambda: _after_conv("ELU", "elu_param { alpha: 0.7 }", _fixed(lambda x: F.elu(x, 0.7))),
    "sigmoid": lambda: _after_conv("Sigmoid", "", _fixed(torch.sigmoid), in_place=True),
    "tanh": lambda: _after_conv("TanH", "", _fixed(torch.tanh)),
    "dropout_in_place": lambda: _after_conv("Dropout", "dropout_param { dropout_ratio: 0.3 }", _fixed(lambda x: x),
                                            in_place=True),
    "softmax_axis1": lambda: _after_conv("Softmax", "", _fixed(lambda x: torch.softmax(x, 1))),
    "softmax_axis_neg1": lambda: _after_conv("Softmax", "softmax_param { axis: -1 }",
                                             _fixed(lambda x: torch.softmax(x, -1))),
    "flatten": lambda: _after_conv("Flatten", "", _fixed(lambda x: x.flatten(1))),
    "flatten_axis2": lambda: _after_conv("Flatten", "flatten_param { axis: 2 end_axis: -1 }",
                                         _fixed(lambda x: x.flatten(2))),
    "flatten_axis1_end2": lambda: _after_conv("Flatten", "flatten_param { axis: 1 end_axis: 2 }",
                                              _fixed(lambda x: x.flatten(1, 2))),
    "reshape_zero_minus1": lambda: _after_conv("Reshape", "reshape_param { shape { dim: 0 dim: -1 dim: 3 } }",
                                               _fixed(lambda x: x.reshape(1, -1, 3))),
    "reshape_axis_num_axes": lambda: _after_conv(
        "Reshape", "reshape_param { shape { dim: 2 dim: -1 } axis: 1 num_axes: 1 }",
        _fixed(lambda x: x.reshape(1, 2, 3, *x.shape[2:]))),
    "permute_nhwc": lambda: _after_conv("Permute", "permute_param { order: 0 order: 2 order: 3 order: 1 }",
                                        _fixed(lambda x: x.permute(0, 2, 3, 1))),
    "permute_partial_order": lambda: _after_conv("Permute", "permute_param { order: 0 order: 3 }",
                                                 _fixed(lambda x: x.permute(0, 3, 1, 2))),
    "normalize_ssd": lambda: _after_conv(
        "Normalize", "norm_param { across_spatial: false channel_shared: false eps: 1e-6 }", _normalize_per_position),
    "normalize_across_spatial": lambda: _after_conv(
        "Normalize", "norm_param { across_spatial: true channel_shared: true }", _normalize_across),
    "upsample_scale2": lambda: _after_conv("Upsample", "upsample_param { scale: 2 }",
                                           _fixed(lambda x: F.interpolate(x, scale_factor=2, mode="nearest"))),
    "upsample_scale_hw": lambda: _after_conv("Upsample", "upsample_param { scale_h: 2 scale_w: 3 }",
                                             _fixed(lambda x: F.interpolate(x, scale_factor=(2, 3)))),
})  # fmt: skip


def _interp(params: str, size: Callable[[int, int], tuple[int, int]]) -> CaffeNet:
    body = layer("interp", "Interp", "data", "interp", f"interp_param {{ {params} }}")
    return _net(body, lambda f: {"interp": F.interpolate(f["data"], size=size(*f["data"].shape[2:]), mode="bilinear",
                                                         align_corners=True)}, Weights())  # fmt: skip


CASES.update({
    "interp_zoom2": lambda: _interp("zoom_factor: 2", lambda h, w: (2 * h - 1, 2 * w - 1)),
    "interp_height_width": lambda: _interp("height: 8 width: 23", lambda h, w: (8, 23)),
    "interp_shrink2": lambda: _interp("shrink_factor: 2", lambda h, w: ((h - 1) // 2 + 1, (w - 1) // 2 + 1)),
    "interp_shrink_zoom": lambda: _interp("shrink_factor: 2 zoom_factor: 3",
                                          lambda h, w: (((h - 1) // 2) * 3 + 1, ((w - 1) // 2) * 3 + 1)),
})  # fmt: skip


def _bn_scale(factor: float, eps: float) -> CaffeNet:
    w = Weights()
    W, _ = w.conv("conv", IN[1], 6, 3, bias=False)
    bn = w.bn("bn", 6, factor)
    sc = w.scale("scale", 6)
    text = layer("conv", "Convolution", "data", "conv", "convolution_param { num_output: 6 kernel_size: 3 "
                 "bias_term: false }")  # fmt: skip
    text += layer("bn", "BatchNorm", "conv", "conv", f"batch_norm_param {{ use_global_stats: true eps: {eps} }}")
    text += layer("scale", "Scale", "conv", "conv", "scale_param { bias_term: true }")
    text += layer("relu", "ReLU", "conv", "conv")
    if factor == 0:
        bn = (bn[0] * 0, bn[1] * 0)  # Caffe: a zero factor scales the statistics to zero
    return _net(text, lambda f: {"conv": bn_scale_relu(F.conv2d(f["data"], W), bn, sc, eps)}, w)


CASES["batchnorm_scale_relu_in_place"] = lambda: _bn_scale(2.5, 1e-3)
CASES["batchnorm_zero_factor"] = lambda: _bn_scale(0.0, 1e-5)


def _scale_axes() -> CaffeNet:
    w = Weights()
    s = w.uniform("scale", (4, 11), 0.5, 1.5)
    b = w.normal("scale", (4, 11), 0.1)
    body = layer("scale", "Scale", "data", "out", "scale_param { axis: 1 num_axes: 2 bias_term: true }")
    return _net(body, lambda f: {"out": f["data"] * s.view(1, 4, 11, 1) + b.view(1, 4, 11, 1)}, w)


def _scale_scalar() -> CaffeNet:
    w = Weights()
    s = w.blob("scale", np.asarray(1.7))
    return _net(layer("scale", "Scale", "data", "out", "scale_param { num_axes: 0 }"),
                lambda f: {"out": f["data"] * s}, w)  # fmt: skip


def _scale_two_bottoms() -> CaffeNet:
    """Squeeze-excitation style: the input scaled by its own pooled channels (a second bottom, axis 0)."""
    text = layer("gap", "Pooling", "data", "gap", "pooling_param { pool: AVE global_pooling: true }")
    text += layer("squeeze", "Flatten", "gap", "squeeze")
    text += layer("excite", "Sigmoid", "squeeze", "squeeze")
    text += layer("scale", "Scale", ["data", "squeeze"], "out", "scale_param { axis: 0 }")
    return _net(text, lambda f: {"out": f["data"] * torch.sigmoid(f["data"].mean((2, 3), keepdim=True))}, Weights())


CASES["scale_axis1_num_axes2"] = _scale_axes
CASES["scale_scalar"] = _scale_scalar
CASES["scale_two_bottoms"] = _scale_two_bottoms


def _two_convs(tail: str, fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
               cout: int = 6) -> CaffeNet:  # fmt: skip
    """Three convs of the input (a, b, c), then ``tail`` reading them; ``fn(a, b, c)`` is the reference."""
    w = Weights()
    convs = {n: w.conv(n, IN[1], cout, 3) for n in "abc"}
    text = "".join(
        layer(n, "Convolution", "data", n, f"convolution_param {{ num_output: {cout} kernel_size: 3 pad: 1 }}")
        for n in "abc"
    )
    unread = [n for n in "abc" if f'bottom: "{n}"' not in tail]  # outputs of the net as they are

    def fwd(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outs = {n: F.conv2d(f["data"], *convs[n], padding=1) for n in "abc"}
        return {**fn(*outs.values()), **{n: outs[n] for n in unread}}

    return _net(text + tail, fwd, w)


CASES.update({
    "eltwise_sum_coeff": lambda: _two_convs(
        layer("sum", "Eltwise", ["a", "b"], "sum", "eltwise_param { operation: SUM coeff: 1 coeff: -0.5 }"),
        lambda a, b, c: {"sum": a - 0.5 * b}),
    "eltwise_sum3": lambda: _two_convs(layer("sum", "Eltwise", ["a", "b", "c"], "sum"),
                                       lambda a, b, c: {"sum": a + b + c}),
    "eltwise_prod": lambda: _two_convs(layer("p", "Eltwise", ["a", "b", "c"], "p", "eltwise_param { operation: PROD }"),
                                       lambda a, b, c: {"p": a * b * c}),
    "eltwise_max": lambda: _two_convs(layer("m", "Eltwise", ["a", "b", "c"], "m", "eltwise_param { operation: MAX }"),
                                      lambda a, b, c: {"m": torch.maximum(torch.maximum(a, b), c)}),
    "concat_axis1": lambda: _two_convs(layer("cat", "Concat", ["a", "b", "c"], "cat"),
                                       lambda a, b, c: {"cat": torch.cat([a, b, c], 1)}),
    "concat_dim2": lambda: _two_convs(layer("cat", "Concat", ["a", "b"], "cat", "concat_param { concat_dim: 2 }"),
                                      lambda a, b, c: {"cat": torch.cat([a, b], 2)}),
    "concat_axis_neg1": lambda: _two_convs(layer("cat", "Concat", ["c", "a"], "cat", "concat_param { axis: -1 }"),
                                           lambda a, b, c: {"cat": torch.cat([c, a], -1)}),
    "slice_points": lambda: _two_convs(
        layer("sl", "Slice", "a", ["s0", "s1", "s2"], "slice_param { axis: 1 slice_point: 1 slice_point: 4 }"),
        lambda a, b, c: {"s0": a[:, :1], "s1": a[:, 1:4], "s2": a[:, 4:]}),
    "slice_dim_equal": lambda: _two_convs(layer("sl", "Slice", "a", ["left", "right"], "slice_param { slice_dim: 1 }"),
                                          lambda a, b, c: {"left": a[:, :2], "right": a[:, 2:]}, cout=4),
    "split_copies": lambda: _two_convs(
        layer("split", "Split", "a", ["a1", "a2", "a3"])
        + layer("sum", "Eltwise", ["a1", "b"], "sum") + layer("prod", "Eltwise", ["a2", "c"], "prod",
                                                               "eltwise_param { operation: PROD }"),
        lambda a, b, c: {"sum": a + b, "prod": a * c, "a3": a}),
    "crop_offsets": lambda: _two_convs(
        layer("small", "Pooling", "b", "small", "pooling_param { pool: MAX kernel_size: 3 stride: 1 }")
        + layer("small2", "Pooling", "small", "small2", "pooling_param { pool: MAX kernel_size: 3 stride: 1 }")
        + layer("crop", "Crop", ["a", "small2"], "crop", "crop_param { axis: 2 offset: 2 offset: 3 }"),
        lambda a, b, c: {"crop": a[:, :, 2:9, 3:12]}),
    "crop_single_offset_axis1": lambda: _two_convs(
        layer("small", "Pooling", "b", "small", "pooling_param { pool: MAX kernel_size: 3 stride: 1 }")
        + layer("few", "Slice", "small", ["few", "rest"], "slice_param { slice_point: 4 }")
        + layer("crop", "Crop", ["a", "few"], "crop", "crop_param { axis: 1 offset: 1 }"),
        lambda a, b, c: {"crop": a[:, 1:5, 1:10, 1:12], "rest": F.max_pool2d(b, 3, 1)[:, 4:]}),
    "interp_second_bottom": lambda: _two_convs(
        layer("small", "Pooling", "b", "small", "pooling_param { pool: AVE kernel_size: 3 stride: 2 }")
        + layer("up", "Interp", ["small", "a"], "up"),
        lambda a, b, c: {"up": F.interpolate(F.avg_pool2d(b, 3, 2, ceil_mode=True), size=a.shape[2:],
                                             mode="bilinear", align_corners=True)}),
})  # fmt: skip


def _priorbox(params: str, ref: Callable[[], np.ndarray]) -> CaffeNet:
    w = Weights()
    W, B = w.conv("feat", IN[1], 6, 3, 3)
    text = layer("feat", "Convolution", "data", "feat", "convolution_param { num_output: 6 kernel_size: 3 stride: 2 }")
    text += layer("priors", "PriorBox", ["feat", "data"], "priors", f"prior_box_param {{ {params} }}")
    text += layer("relu", "ReLU", "feat", "feat")
    priors = torch.from_numpy(ref())
    return _net(text, lambda f: {"priors": priors, "feat": torch.relu(F.conv2d(f["data"], W, B, stride=2))}, w,
                {"data": (1, 4, 23, 29)})  # fmt: skip


CASES.update({
    "priorbox_ssd_head": lambda: _priorbox(
        "min_size: 30 max_size: 60 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: false "
        "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2",
        lambda: ssd_priors((11, 14), (23, 29), [30], [60], [2, 3], variance=(0.1, 0.1, 0.2, 0.2))),
    "priorbox_fixed_size_step": lambda: _priorbox(
        "min_size: 8 min_size: 16 aspect_ratio: 2 aspect_ratio: 2 flip: false clip: true img_size: 40 step: 3.5 "
        "offset: 0.25 variance: 0.2",
        lambda: ssd_priors((11, 14), (40, 40), [8, 16], [], [2], flip=False, clip=True, variance=(0.2,), step=3.5,
                           offset=0.25)),
})  # fmt: skip


def v1_net() -> CaffeNet:
    """The deprecated `layers { type: CONVOLUTION }` form with input_dim, V1 caffemodel with legacy 4-D blob dims."""
    w = Weights()
    W, B = w.conv("conv1", 3, 5, 3)
    Wf = w.normal("fc", (4, 5 * 4 * 4), 0.2)
    Bf = w.normal("fc", (4,), 0.1)
    text = 'name: "v1"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 10\ninput_dim: 10\n'
    text += """layers { name: "data" type: DATA top: "data" top: "label" include { phase: TRAIN }
  data_param { source: "train_lmdb" backend: LMDB batch_size: 64 } transform_param { mirror: true } }
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" blobs_lr: 1 blobs_lr: 2
  convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "gaussian" std: 0.01 } } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool1" top: "fc" inner_product_param { num_output: 4 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "fc" bottom: "label" include { phase: TRAIN } }
"""

    def fwd(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = F.max_pool2d(torch.relu(F.conv2d(f["data"], W, B)), 3, 2, ceil_mode=True)
        return {"prob": torch.softmax(F.linear(x.flatten(1), Wf, Bf), 1)}

    return CaffeNet(text, {"data": (1, 3, 10, 10)}, fwd, w.blobs, v1=True)


CASES["v1_layers_input_dim"] = v1_net


# ---- real-world-sized nets ------------------------------------------------------------------------------------


class SeqNet:
    """A prototxt and its PyTorch twin, written side by side one layer at a time."""

    def __init__(self, inputs: dict[str, tuple[int, ...]], seed: int) -> None:
        self.inputs = inputs
        self.text = header(inputs)
        self.w = Weights(seed)
        self.steps: list[Callable[[dict[str, torch.Tensor]], None]] = []

    def add(self, text: str, step: Callable[[dict[str, torch.Tensor]], None]) -> None:
        self.text += text
        self.steps.append(step)

    def conv(self, name: str, bottom: str, cin: int, cout: int, k: int, s: int = 1, p: int = 0, group: int = 1,
             bn: bool = True) -> str:  # fmt: skip
        """Convolution; with ``bn``: bias-free, then BatchNorm + Scale + ReLU in place (MobileNet's block)."""
        W, B = self.w.conv(name, cin, cout, k, group=group, bias=not bn)
        params = f"num_output: {cout} kernel_size: {k} stride: {s} pad: {p} group: {group}"
        if not bn:
            self.add(layer(name, "Convolution", bottom, name, f"convolution_param {{ {params} }}"),
                     lambda e: e.update({name: F.conv2d(e[bottom], W, B, s, p, 1, group)}))  # fmt: skip
            return name
        stats = self.w.bn(f"{name}/bn", cout, factor=0.999)
        sc = self.w.scale(f"{name}/scale", cout)
        text = layer(
            name,
            "Convolution",
            bottom,
            name,
            f'convolution_param {{ {params} bias_term: false weight_filler {{ type: "msra" }} }}',
        )
        text += layer(f"{name}/bn", "BatchNorm", name, name, "batch_norm_param { use_global_stats: true }")
        text += layer(f"{name}/scale", "Scale", name, name, "scale_param { bias_term: true }")
        text += layer(f"{name}/relu", "ReLU", name, name)  # fmt: skip
        self.add(text, lambda e: e.update({name: bn_scale_relu(F.conv2d(e[bottom], W, None, s, p, 1, group), stats,
                                                                sc)}))  # fmt: skip
        return name

    def net(self, outputs: Sequence[str]) -> CaffeNet:
        def fwd(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            env = dict(f)
            for step in self.steps:
                step(env)
            return {o: env[o] for o in outputs}

        return CaffeNet(self.text, self.inputs, fwd, self.w.blobs)


def _mobilenet_v1(n: SeqNet, size: int, width: float = 1.0, blocks: int = 13) -> dict[str, tuple[str, int]]:
    """MobileNet v1 (depthwise 3x3 + pointwise 1x1 blocks); returns block name -> (top, channels)."""
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    c = int(32 * width)
    top = n.conv("conv0", "data", 3, c, 3, 2, 1)
    found = {"conv0": (top, c)}
    for i, (full, stride) in enumerate(plan[:blocks], start=1):
        out = int(full * width)
        n.conv(f"conv{i}/dw", top, c, c, 3, stride, 1, group=c)
        top = n.conv(f"conv{i}", f"conv{i}/dw", c, out, 1)
        c = out
        found[f"conv{i}"] = (top, c)
    return found


Step = Callable[[dict[str, torch.Tensor]], None]


def _nhwc_flat(head: str) -> Step:
    return lambda e: e.update({f"{head}_flat": e[head].permute(0, 2, 3, 1).flatten(1)})


def _priors(top: str, src: str, size: int, min_size: float, max_size: float | None, ratios: list[float]) -> Step:
    def step(e: dict[str, torch.Tensor]) -> None:
        fh, fw = e[src].shape[2:]
        boxes = ssd_priors((fh, fw), (size, size), [min_size], [max_size] if max_size else [], ratios,
                           variance=(0.1, 0.1, 0.2, 0.2))  # fmt: skip
        e[top] = torch.from_numpy(boxes)

    return step


def _concat(top: str, parts: list[str], axis: int) -> Step:
    return lambda e: e.update({top: torch.cat([e[p] for p in parts], axis)})


SSD_CLASSES = 21
# (source, min_size, max_size, aspect ratios): MobileNet-SSD's six heads at 300x300
SSD_HEADS = [
    ("conv11_norm", 60.0, None, [2.0]), ("conv13", 105.0, 150.0, [2.0, 3.0]), ("conv14_2", 150.0, 195.0, [2.0, 3.0]),
    ("conv15_2", 195.0, 240.0, [2.0, 3.0]), ("conv16_2", 240.0, 285.0, [2.0, 3.0]),
    ("conv17_2", 285.0, 300.0, [2.0, 3.0]),
]  # fmt: skip


def mobilenet_ssd(size: int = 300) -> CaffeNet:
    """MobileNet-SSD as its deploy prototxt has it (plus an SSD Normalize on the first head, as VGG-SSD has),
    ending in DetectionOutput, which rkfarm drops: the outputs are mbox_loc, mbox_conf_flatten, mbox_priorbox."""
    n = SeqNet({"data": (1, 3, size, size)}, seed=3)
    feats = _mobilenet_v1(n, size)
    chans = {"conv11_norm": 512, "conv13": 1024}
    top, c = feats["conv13"]
    for i, mid, out in ((14, 256, 512), (15, 128, 256), (16, 128, 256), (17, 64, 128)):
        n.conv(f"conv{i}_1", top, c, mid, 1)
        top, c = n.conv(f"conv{i}_2", f"conv{i}_1", mid, out, 3, 2, 1), out
        chans[top] = c
    norm_scale = n.w.uniform("conv11_norm", (512,), 10.0, 30.0)
    n.add(layer("conv11_norm", "Normalize", "conv11", "conv11_norm", "norm_param { across_spatial: false "
                'channel_shared: false scale_filler { type: "constant" value: 20 } }'),
          lambda e: e.update(conv11_norm=e["conv11"] / torch.sqrt((e["conv11"] ** 2).sum(1, keepdim=True) + 1e-10)
                             * norm_scale.view(1, -1, 1, 1)))  # fmt: skip
    locs: list[str] = []
    confs: list[str] = []
    priors: list[str] = []
    for src, min_size, max_size, ratios in SSD_HEADS:
        num = 1 + (max_size is not None) + 2 * len(ratios)
        for kind, per in (("loc", 4), ("conf", SSD_CLASSES)):
            head = n.conv(f"{src}_mbox_{kind}", src, chans[src], num * per, 1, bn=False)
            n.add(layer(f"{head}_perm", "Permute", head, f"{head}_perm", "permute_param { order: 0 order: 2 order: 3 "
                        "order: 1 }") + layer(f"{head}_flat", "Flatten", f"{head}_perm", f"{head}_flat"),
                  _nhwc_flat(head))  # fmt: skip
            (locs if kind == "loc" else confs).append(f"{head}_flat")
        params = f"min_size: {min_size} " + (f"max_size: {max_size} " if max_size else "")
        params += "".join(f"aspect_ratio: {r} " for r in ratios)
        params += "flip: true clip: false variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 offset: 0.5"
        pb = f"{src}_mbox_priorbox"
        n.add(layer(pb, "PriorBox", [src, "data"], pb, f"prior_box_param {{ {params} }}"),
              _priors(pb, src, size, min_size, max_size, ratios))  # fmt: skip
        priors.append(pb)
    for name, parts, axis in (("mbox_loc", locs, 1), ("mbox_conf", confs, 1), ("mbox_priorbox", priors, 2)):
        n.add(layer(name, "Concat", parts, name, f"concat_param {{ axis: {axis} }}"), _concat(name, parts, axis))
    n.add(
        layer(
            "mbox_conf_reshape",
            "Reshape",
            "mbox_conf",
            "mbox_conf_reshape",
            f"reshape_param {{ shape {{ dim: 0 dim: -1 dim: {SSD_CLASSES} }} }}",
        )
        + layer("mbox_conf_softmax", "Softmax", "mbox_conf_reshape", "mbox_conf_softmax", "softmax_param { axis: 2 }")
        + layer("mbox_conf_flatten", "Flatten", "mbox_conf_softmax", "mbox_conf_flatten", "flatten_param { axis: 1 }")
        + layer(
            "detection_out",
            "DetectionOutput",
            ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"],
            "detection_out",
            f"include {{ phase: TEST }} detection_output_param {{ num_classes: {SSD_CLASSES} "
            "share_location: true background_label_id: 0 nms_param { nms_threshold: 0.45 top_k: 100 } "
            "code_type: CENTER_SIZE keep_top_k: 100 confidence_threshold: 0.25 }",
        ),
        lambda e: e.update(mbox_conf_flatten=torch.softmax(e["mbox_conf"].reshape(1, -1, SSD_CLASSES), 2).flatten(1)),
    )
    return n.net(["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"])


def mobilenet_classifier(size: int = 96, classes: int = 10) -> CaffeNet:
    """A MobileNet v1 (half width, first 7 blocks) classifier ending in InnerProduct logits, for int8 builds."""
    n = SeqNet({"data": (1, 3, size, size)}, seed=5)
    top, c = _mobilenet_v1(n, size, width=0.5, blocks=7)["conv7"]
    n.add(layer("pool", "Pooling", top, "pool", "pooling_param { pool: AVE global_pooling: true }"),
          lambda e: e.update(pool=e[top].mean((2, 3), keepdim=True)))  # fmt: skip
    W = n.w.normal("fc", (classes, c), math.sqrt(1.0 / c))
    B = n.w.normal("fc", (classes,), 0.1)
    n.add(layer("fc", "InnerProduct", "pool", "fc", f"inner_product_param {{ num_output: {classes} }}"),
          lambda e: e.update(fc=F.linear(e["pool"].flatten(1), W, B)))  # fmt: skip
    return n.net(["fc"])
