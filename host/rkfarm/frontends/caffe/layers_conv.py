"""Convolution, Deconvolution, Pooling and InnerProduct, with Caffe's sizes reproduced exactly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rkfarm.frontends.caffe import caffe_pb2
from rkfarm.frontends.caffe.builder import LayerContext, Shape
from rkfarm.frontends.caffe.weights import BlobSpec

P = caffe_pb2.PoolingParameter


def _pair(
    ctx: LayerContext, what: str, values: Sequence[int], h: int | None, w: int | None, default: int | None,
    one_sided: bool = False,
) -> tuple[int, int]:  # fmt: skip
    """A 2-D size given as one value, two values, or *_h/*_w (never mixed), as Caffe's convolution reads it.

    ``one_sided``: *_h alone or *_w alone is allowed, the other taking ``default`` (Caffe's pad_h/pad_w)."""
    if h is not None or w is not None:
        if values:
            ctx.fail(f"give either {what} or {what}_h/{what}_w, not both")
        if one_sided and default is not None:
            return (default if h is None else h), (default if w is None else w)
        if h is None or w is None:
            ctx.fail(f"{what}_h and {what}_w must both be given")
        return h, w
    if not values:
        if default is None:
            ctx.fail(f"{what} is required")
        return default, default
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    ctx.fail(f"{what} has {len(values)} values; a 2-D layer takes 1 or 2")


def _opt(msg: caffe_pb2.ConvolutionParameter | caffe_pb2.PoolingParameter, field: str) -> int | None:
    return int(getattr(msg, field)) if msg.HasField(field) else None


def _conv_geometry(ctx: LayerContext) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    p = ctx.layer.convolution_param
    if p.axis != 1:
        ctx.refuse(f"convolution_param.axis {p.axis} (channels not on axis 1)")
    if len(ctx.shape()) != 4:
        ctx.refuse(f"a {len(ctx.shape())}-D input (only 2-D convolution, NCHW)")
    kernel = _pair(ctx, "kernel", list(p.kernel_size), _opt(p, "kernel_h"), _opt(p, "kernel_w"), None)
    stride = _pair(ctx, "stride", list(p.stride), _opt(p, "stride_h"), _opt(p, "stride_w"), 1)
    pad = _pair(ctx, "pad", list(p.pad), _opt(p, "pad_h"), _opt(p, "pad_w"), 0, one_sided=True)
    dilation = _pair(ctx, "dilation", list(p.dilation), None, None, 1)
    if min(kernel) <= 0 or min(stride) <= 0 or min(dilation) <= 0:
        ctx.fail(f"kernel {kernel}, stride {stride} and dilation {dilation} must be positive")
    return kernel, stride, pad, dilation


def _conv_common(ctx: LayerContext, deconv: bool) -> None:
    ctx.expect(1, 1)
    p = ctx.layer.convolution_param
    kernel, stride, pad, dilation = _conv_geometry(ctx)
    n, c, h, w = ctx.shape()
    out_c, group = int(p.num_output), int(p.group)
    if out_c <= 0:
        ctx.fail("num_output must be positive")
    if group <= 0 or c % group or out_c % group:
        ctx.fail(f"group {group} must divide the input channels ({c}) and num_output ({out_c})")
    extent = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
    if deconv:
        spatial = [s * (x - 1) + e - 2 * q for x, s, e, q in zip((h, w), stride, extent, pad)]
        weight_shape: Shape = (c, out_c // group, *kernel)
    else:
        spatial = [(x + 2 * q - e) // s + 1 for x, s, e, q in zip((h, w), stride, extent, pad)]
        weight_shape = (out_c, c // group, *kernel)
    if min(spatial) <= 0 or (not deconv and any(x + 2 * q < e for x, q, e in zip((h, w), pad, extent))):
        ctx.fail(f"the {kernel} kernel (dilation {dilation}, pad {pad}) does not fit the {h}x{w} input")
    specs = [BlobSpec(weight_shape, "weight")]
    if p.bias_term:
        specs.append(BlobSpec((out_c,), "bias"))
    blobs = ctx.blobs(specs)
    inputs = [ctx.inputs[0], ctx.const("weight", blobs[0])]
    if p.bias_term:
        inputs.append(ctx.const("bias", blobs[1]))
    ctx.node(
        "ConvTranspose" if deconv else "Conv", inputs, (n, out_c, *spatial), out=ctx.outputs[0],
        kernel_shape=list(kernel), strides=list(stride), pads=[pad[0], pad[1], pad[0], pad[1]],
        dilations=list(dilation), group=group,
    )  # fmt: skip


def convolution(ctx: LayerContext) -> None:
    _conv_common(ctx, deconv=False)


def deconvolution(ctx: LayerContext) -> None:
    _conv_common(ctx, deconv=True)


def _pooled(ctx: LayerContext, size: int, k: int, s: int, p: int, ceil: bool) -> tuple[int, int]:
    """Caffe's pooled size along one axis and the extra end padding that makes ONNX's floor rounding match."""
    span = size + 2 * p - k
    if span < 0:
        ctx.fail(f"the kernel {k} (pad {p}) is larger than the input ({size})")
    out = (-(-span // s) if ceil else span // s) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1  # Caffe drops a last window that would start in the padding
    if (out - 1) * s - p >= size:
        # only without padding and kernel < stride: Caffe computes that window over nothing (-FLT_MAX or 0/0)
        ctx.fail(f"the last window (kernel {k}, stride {s}) lies outside the input ({size}): Caffe outputs garbage")
    extra = max(0, (out - 1) * s + k - (size + 2 * p))
    if (size + 2 * p + extra - k) // s + 1 != out:
        raise AssertionError("pooling size")
    return out, extra


def pooling(ctx: LayerContext) -> None:
    ctx.expect(1, 1)
    p = ctx.layer.pooling_param
    if len(ctx.shape()) != 4:
        ctx.refuse(f"pooling a {len(ctx.shape())}-D input (only NCHW)")
    n, c, h, w = ctx.shape()
    if p.pool == P.STOCHASTIC:
        ctx.refuse("STOCHASTIC pooling")
    if p.global_pooling:
        if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
            ctx.fail("global_pooling takes no kernel size")
        if p.pad or p.pad_h or p.pad_w or p.stride != 1 or p.stride_h > 1 or p.stride_w > 1:
            ctx.fail("global_pooling needs pad 0 and stride 1")
        op = "GlobalMaxPool" if p.pool == P.MAX else "GlobalAveragePool"
        ctx.node(op, [ctx.inputs[0]], (n, c, 1, 1), out=ctx.outputs[0])
        return
    if p.HasField("kernel_size") == (p.HasField("kernel_h") or p.HasField("kernel_w")):
        ctx.fail("give the kernel as kernel_size or as kernel_h and kernel_w")
    if p.HasField("kernel_size"):
        kernel = (int(p.kernel_size),) * 2
    else:
        kernel = _pair(ctx, "kernel", [], _opt(p, "kernel_h"), _opt(p, "kernel_w"), None)
    if p.HasField("pad") and (p.HasField("pad_h") or p.HasField("pad_w")):
        ctx.fail("give either pad or pad_h/pad_w, not both")
    if p.HasField("pad_h") != p.HasField("pad_w"):
        ctx.fail("pad_h and pad_w must both be given")
    pad = (int(p.pad), int(p.pad)) if p.HasField("pad") else (int(p.pad_h), int(p.pad_w))
    if p.HasField("stride_h") or p.HasField("stride_w"):
        if p.HasField("stride"):
            ctx.fail("give either stride or stride_h/stride_w, not both")
        stride = _pair(ctx, "stride", [], _opt(p, "stride_h"), _opt(p, "stride_w"), None)
    else:
        stride = (int(p.stride), int(p.stride))
    if min(kernel) <= 0 or min(stride) <= 0:
        ctx.fail(f"kernel {kernel} and stride {stride} must be positive")
    if any(q >= k for q, k in zip(pad, kernel)):
        ctx.fail(f"pad {pad} must be smaller than the kernel {kernel}")
    ceil = True
    if p.HasField("round_mode"):
        ceil = p.round_mode == P.CEIL
    if p.HasField("ceil_mode"):
        if p.HasField("round_mode") and p.ceil_mode != ceil:
            ctx.fail("round_mode and ceil_mode disagree")
        ceil = p.ceil_mode
    (oh, eh), (ow, ew) = (_pooled(ctx, x, k, s, q, ceil) for x, k, s, q in zip((h, w), kernel, stride, pad))
    out_shape = (n, c, oh, ow)
    attrs: dict[str, Any] = {"kernel_shape": list(kernel), "strides": list(stride)}
    x = ctx.inputs[0]
    if p.pool == P.MAX:
        pads = [pad[0], pad[1], pad[0] + eh, pad[1] + ew]
        ctx.node("MaxPool", [x], out_shape, out=ctx.outputs[0], pads=pads, **attrs)
        return
    # AVE: Caffe divides by the window clipped to the padded input [-pad, size + pad): padding counts, the
    # extra area ceil rounding adds beyond it does not.
    if eh == 0 and ew == 0:
        pads, include = [pad[0], pad[1], pad[0], pad[1]], 1
    elif pad == (0, 0):
        pads, include = [0, 0, eh, ew], 0
    else:
        zero_pads = ctx.int64s("pads", [0, 0, pad[0], pad[1], 0, 0, pad[0], pad[1]])
        x = ctx.node("Pad", [x, zero_pads], (n, c, h + 2 * pad[0], w + 2 * pad[1]), suffix="pad", mode="constant")
        pads, include = [0, 0, eh, ew], 0
    ctx.node("AveragePool", [x], out_shape, out=ctx.outputs[0], pads=pads, count_include_pad=include, **attrs)


def inner_product(ctx: LayerContext) -> None:
    ctx.expect(1, 1)
    p = ctx.layer.inner_product_param
    shape = ctx.shape()
    axis = ctx.axis(p.axis)
    num_out = int(p.num_output)
    if num_out <= 0:
        ctx.fail("num_output must be positive")
    m, k = math.prod(shape[:axis]), math.prod(shape[axis:])
    specs = [BlobSpec((k, num_out) if p.transpose else (num_out, k), "weight")]
    if p.bias_term:
        specs.append(BlobSpec((num_out,), "bias"))
    blobs = ctx.blobs(specs)
    x = ctx.inputs[0]
    if shape != (m, k):
        x = ctx.node("Flatten", [x], (m, k), suffix="flatten", axis=axis)
    inputs = [x, ctx.const("weight", blobs[0])]
    if p.bias_term:
        inputs.append(ctx.const("bias", np.asarray(blobs[1])))
    out_shape = (*shape[:axis], num_out)
    if out_shape == (m, num_out):
        ctx.node("Gemm", inputs, out_shape, out=ctx.outputs[0], transB=0 if p.transpose else 1)
    else:
        y = ctx.node("Gemm", inputs, (m, num_out), suffix="gemm", transB=0 if p.transpose else 1)
        ctx.reshape(y, out_shape, out=ctx.outputs[0])
