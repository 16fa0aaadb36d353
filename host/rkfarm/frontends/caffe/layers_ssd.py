"""SSD's Normalize and PriorBox, and the resize layers of the segmentation/YOLO forks (Interp, Upsample)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rkfarm.frontends.caffe.builder import LayerContext, Shape
from rkfarm.frontends.caffe.weights import BlobSpec


def normalize(ctx: LayerContext) -> None:
    """x / sqrt(sum(x^2) + eps) over C,H,W (across_spatial) or over C at each position, times a learned scale."""
    ctx.expect(1, 1)
    p = ctx.layer.norm_param
    shape = ctx.shape()
    rank = len(shape)
    if rank < 2:
        ctx.fail("needs an input with a channel axis (2-D or more)")
    c = shape[1]
    (factor,) = ctx.blobs([BlobSpec((1,) if p.channel_shared else (c,), "scale")])
    axes = list(range(1, rank)) if p.across_spatial else [1]
    norm_shape: Shape = (shape[0], *(1 if i in axes else d for i, d in enumerate(shape) if i > 0))
    sq = ctx.node("ReduceSumSquare", ctx.inputs, norm_shape, suffix="sumsq", axes=axes, keepdims=1)
    sq = ctx.node("Add", [sq, ctx.const("eps", np.float32(p.eps))], norm_shape, suffix="eps")
    norm = ctx.node("Sqrt", [sq], norm_shape, suffix="norm")
    y = ctx.node("Div", [ctx.inputs[0], norm], shape, suffix="div")
    fshape: Shape = (1,) if p.channel_shared else (c,) + (1,) * (rank - 2)
    ctx.node("Mul", [y, ctx.const("scale", factor.reshape(fshape))], shape, out=ctx.outputs[0])


def _aspect_ratios(values: list[float], flip: bool) -> list[np.float32]:
    """1, then each ratio not seen yet (and its inverse with flip), kept as float32 as Caffe keeps them."""
    ratios = [np.float32(1.0)]
    for ar in values:
        if any(abs(np.float32(ar) - r) < 1e-6 for r in ratios):  # float32 arithmetic, as Caffe
            continue
        ratios.append(np.float32(ar))
        if flip:
            ratios.append(np.float32(1.0 / ar))
    return ratios


def prior_boxes(ctx: LayerContext) -> np.ndarray[Any, Any]:
    """SSD's PriorBox as a constant [1, 2, H*W*priors*4]: boxes (xmin, ymin, xmax, ymax) / image, then variances."""
    p = ctx.layer.prior_box_param
    feat, img = ctx.shape(0), ctx.shape(1)
    if len(feat) != 4 or len(img) != 4:
        ctx.fail("needs 4-D bottoms (feature map, image)")
    min_sizes = [float(s) for s in p.min_size]
    max_sizes = [float(s) for s in p.max_size]
    if not min_sizes or any(s <= 0 for s in min_sizes):
        ctx.fail("min_size is required and must be positive")
    if max_sizes and (len(max_sizes) != len(min_sizes) or any(b <= a for a, b in zip(min_sizes, max_sizes))):
        ctx.fail("max_size needs one value per min_size, each larger than it")
    variance = [float(v) for v in p.variance] or [0.1]
    if len(variance) not in (1, 4) or any(v <= 0 for v in variance):
        ctx.fail(f"variance must be 1 or 4 positive values, not {variance}")
    if p.HasField("img_size") and (p.HasField("img_h") or p.HasField("img_w")):
        ctx.fail("give either img_size or img_h/img_w, not both")
    if p.HasField("step") and (p.HasField("step_h") or p.HasField("step_w")):
        ctx.fail("give either step or step_h/step_w, not both")
    img_h, img_w = (p.img_size, p.img_size) if p.HasField("img_size") else (p.img_h, p.img_w)
    if img_h == 0 or img_w == 0:
        img_h, img_w = img[2], img[3]
    step_h, step_w = (p.step, p.step) if p.HasField("step") else (p.step_h, p.step_w)
    layer_h, layer_w = feat[2], feat[3]
    f32 = np.float32
    if step_h == 0 or step_w == 0:
        step_h, step_w = float(f32(img_h) / f32(layer_h)), float(f32(img_w) / f32(layer_w))  # float32 values, exact
    ratios = _aspect_ratios([float(a) for a in p.aspect_ratio], p.flip)
    sizes: list[tuple[np.float32, np.float32]] = []  # (width, height) of each prior at a position, Caffe's order
    for i, ms in enumerate(min_sizes):
        m = f32(ms)
        sizes.append((m, m))
        if max_sizes:
            side = np.sqrt(m * f32(max_sizes[i]))
            sizes.append((side, side))
        sizes += [(m * np.sqrt(ar), m / np.sqrt(ar)) for ar in ratios if abs(ar - np.float32(1.0)) >= 1e-6]
    # centres in float32 as Caffe computes them; the box arithmetic in double, stored as float32
    cx = ((np.arange(layer_w, dtype=f32) + f32(p.offset)) * f32(step_w)).astype(np.float64)
    cy = ((np.arange(layer_h, dtype=f32) + f32(p.offset)) * f32(step_h)).astype(np.float64)
    wh = np.asarray(sizes, dtype=np.float32).astype(np.float64)  # [P, 2]
    ccx = cx[None, :, None]
    ccy = cy[:, None, None]
    boxes = np.stack(
        np.broadcast_arrays(
            (ccx - wh[None, None, :, 0] / 2.0) / img_w, (ccy - wh[None, None, :, 1] / 2.0) / img_h,
            (ccx + wh[None, None, :, 0] / 2.0) / img_w, (ccy + wh[None, None, :, 1] / 2.0) / img_h,
        ),
        axis=-1,
    ).astype(np.float32)  # fmt: skip
    if p.clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    flat = boxes.reshape(-1)
    var = np.tile(np.asarray(variance * (4 if len(variance) == 1 else 1), np.float32), flat.size // 4)
    return np.stack([flat, var])[np.newaxis]


def prior_box(ctx: LayerContext) -> None:
    ctx.expect(2, 1)
    from onnx import numpy_helper

    priors = prior_boxes(ctx)
    ctx.node("Constant", [], priors.shape, out=ctx.outputs[0], value=numpy_helper.from_array(priors))


def interp(ctx: LayerContext) -> None:
    """DeepLab/PSPNet's Interp: bilinear with aligned corners, to a size from zoom/shrink, height/width or bottom 1."""
    ctx.expect((1, 2), 1)
    p = ctx.layer.interp_param
    shape = ctx.shape()
    if len(shape) != 4:
        ctx.fail("needs a 4-D (NCHW) input")
    if p.pad_beg or p.pad_end:
        ctx.refuse("pad_beg/pad_end (cropping the input first)")
    n, c, h, w = shape
    zoom, shrink = p.HasField("zoom_factor"), p.HasField("shrink_factor")
    if (zoom and p.zoom_factor < 1) or (shrink and p.shrink_factor < 1):
        ctx.fail("zoom_factor and shrink_factor must be 1 or more")
    explicit = p.HasField("height") or p.HasField("width")
    if explicit and (zoom or shrink):
        ctx.fail("give the size as height/width or as zoom/shrink factors, not both")
    if len(ctx.inputs) == 2 and (explicit or zoom or shrink):
        ctx.fail("a second bottom gives the size; do not also give height/width or factors")
    if len(ctx.inputs) == 2:
        oh, ow = ctx.shape(1)[2], ctx.shape(1)[3]
    elif explicit:
        if not (p.HasField("height") and p.HasField("width")) or p.height <= 0 or p.width <= 0:
            ctx.fail("height and width must both be given and positive")
        oh, ow = p.height, p.width
    elif zoom or shrink:
        oh, ow = h, w
        if shrink:
            oh, ow = (oh - 1) // p.shrink_factor + 1, (ow - 1) // p.shrink_factor + 1
        if zoom:
            oh, ow = oh + (oh - 1) * (p.zoom_factor - 1), ow + (ow - 1) * (p.zoom_factor - 1)
    else:
        ctx.fail("give the output size: zoom_factor, shrink_factor, height and width, or a second bottom")
    sizes = ctx.int64s("sizes", [n, c, oh, ow])
    ctx.node(
        "Resize", [ctx.inputs[0], "", "", sizes], (n, c, oh, ow), out=ctx.outputs[0],
        mode="linear", coordinate_transformation_mode="align_corners",
    )  # fmt: skip


def upsample(ctx: LayerContext) -> None:
    """The YOLO ports' Upsample: nearest neighbour by an integer factor."""
    if len(ctx.inputs) != 1:
        ctx.refuse("Upsample with a second bottom (SegNet's max-unpooling)")
    ctx.expect(1, 1)
    p = ctx.layer.upsample_param
    if p.HasField("upsample_h") or p.HasField("upsample_w") or p.pad_out_h or p.pad_out_w:
        ctx.refuse("upsample_h/upsample_w/pad_out (an explicit output size)")
    shape = ctx.shape()
    if len(shape) != 4:
        ctx.fail("needs a 4-D (NCHW) input")
    if p.HasField("scale_h") or p.HasField("scale_w"):
        if p.HasField("scale") or not (p.HasField("scale_h") and p.HasField("scale_w")):
            ctx.fail("give either scale or both scale_h and scale_w")
        sh, sw = int(p.scale_h), int(p.scale_w)
    else:
        sh = sw = int(p.scale)
    if sh < 1 or sw < 1:
        ctx.fail("the scale must be a positive integer")
    n, c, h, w = shape
    scales = ctx.const("scales", np.asarray([1, 1, sh, sw], np.float32))
    ctx.node(
        "Resize", [ctx.inputs[0], "", scales], (n, c, h * sh, w * sw), out=ctx.outputs[0],
        mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor",
    )  # fmt: skip
