"""Activations, normalisation, element-wise and shape layers."""

from __future__ import annotations

import itertools
import math

import numpy as np

from rkfarm.frontends.caffe import caffe_pb2
from rkfarm.frontends.caffe.builder import LayerContext, Shape
from rkfarm.frontends.caffe.weights import BlobSpec

E = caffe_pb2.EltwiseParameter


def relu(ctx: LayerContext) -> None:
    ctx.expect(1, 1)
    slope = ctx.layer.relu_param.negative_slope
    if slope:
        ctx.node("LeakyRelu", ctx.inputs, ctx.shape(), out=ctx.outputs[0], alpha=float(slope))
    else:
        ctx.node("Relu", ctx.inputs, ctx.shape(), out=ctx.outputs[0])


def prelu(ctx: LayerContext) -> None:
    ctx.expect(1, 1)
    shape = ctx.shape()
    if len(shape) < 2:
        ctx.fail("needs an input with a channel axis (2-D or more)")
    if ctx.layer.prelu_param.channel_shared:
        (slope,) = ctx.blobs([BlobSpec((), "slope")])
        slope_shape: Shape = (1,)
    else:
        (slope,) = ctx.blobs([BlobSpec((shape[1],), "slope")])
        slope_shape = (shape[1],) + (1,) * (len(shape) - 2)
    s = ctx.const("slope", slope.reshape(slope_shape))
    ctx.node("PRelu", [ctx.inputs[0], s], shape, out=ctx.outputs[0])


def elu(ctx: LayerContext) -> None:
    ctx.expect(1, 1)
    ctx.node("Elu", ctx.inputs, ctx.shape(), out=ctx.outputs[0], alpha=float(ctx.layer.elu_param.alpha))


def sigmoid(ctx: LayerContext) -> None:
    ctx.expect(1, 1)
    ctx.node("Sigmoid", ctx.inputs, ctx.shape(), out=ctx.outputs[0])


def tanh(ctx: LayerContext) -> None:
    ctx.expect(1, 1)
    ctx.node("Tanh", ctx.inputs, ctx.shape(), out=ctx.outputs[0])


def identity(ctx: LayerContext) -> None:
    """Dropout at inference (Caffe scales at training time only), and Split: one copy per top."""
    ctx.expect(1, (1, 1024) if ctx.layer.type == "Split" else 1)
    for i, out in enumerate(ctx.outputs):
        ctx.node("Identity", ctx.inputs, ctx.shape(), out=out, suffix=None if i == 0 else f"copy{i}")


def batch_norm(ctx: LayerContext) -> None:
    """Caffe's BatchNorm: stored mean and variance, each divided by the moving-average factor (third blob)."""
    ctx.expect(1, 1)
    p = ctx.layer.batch_norm_param
    if p.HasField("use_global_stats") and not p.use_global_stats:
        ctx.refuse("use_global_stats: false (statistics of the batch at inference)")
    shape = ctx.shape()
    if len(shape) < 2:
        ctx.fail("needs an input with a channel axis (2-D or more)")
    c = shape[1]
    mean, var, factor = ctx.blobs([BlobSpec((c,), "mean"), BlobSpec((c,), "variance"), BlobSpec((1,), "factor")])
    f = float(factor.reshape(-1)[0])
    scale = 0.0 if f == 0 else 1.0 / f
    inputs = [
        ctx.inputs[0], ctx.const("gamma", np.ones(c)), ctx.const("beta", np.zeros(c)),
        ctx.const("mean", mean * scale), ctx.const("variance", var * scale),
    ]  # fmt: skip
    ctx.node("BatchNormalization", inputs, shape, out=ctx.outputs[0], epsilon=float(p.eps))


def scale(ctx: LayerContext) -> None:
    """Caffe's Scale: multiply by a learned blob (or a second bottom) over axes [axis, axis+num_axes), plus bias."""
    ctx.expect((1, 2), 1)
    p = ctx.layer.scale_param
    shape = ctx.shape()
    rank = len(shape)
    if len(ctx.inputs) == 1:
        axis = ctx.axis(p.axis)
        if p.num_axes < -1:
            ctx.fail(f"num_axes {p.num_axes} must be -1 or more")
        end = rank if p.num_axes == -1 else axis + p.num_axes
        if end > rank:
            ctx.fail(f"axis {p.axis} + num_axes {p.num_axes} goes past the {rank}-D input")
        factor_shape = shape[axis:end]
        specs = [BlobSpec(factor_shape, "scale")] + ([BlobSpec(factor_shape, "bias")] if p.bias_term else [])
        blobs = ctx.blobs(specs)
        bshape = factor_shape + (1,) * (rank - end)
        factor = ctx.const("scale", blobs[0].reshape(bshape))
        bias = ctx.const("bias", blobs[1].reshape(bshape)) if p.bias_term else None
    else:
        factor_shape = ctx.shape(1)
        axis = 0 if not factor_shape else ctx.axis(p.axis)
        end = axis + len(factor_shape)
        if shape[axis:end] != factor_shape:
            ctx.fail(f"the second bottom {list(factor_shape)} does not match the input {list(shape)} at axis {axis}")
        bshape = factor_shape + (1,) * (rank - end)
        factor = ctx.inputs[1] if bshape == factor_shape else ctx.reshape(ctx.inputs[1], bshape, suffix="scale_shape")
        bias = None
        if p.bias_term:
            (b,) = ctx.blobs([BlobSpec(factor_shape, "bias")])
            bias = ctx.const("bias", b.reshape(bshape))
    if bias is None:
        ctx.node("Mul", [ctx.inputs[0], factor], shape, out=ctx.outputs[0])
    else:
        y = ctx.node("Mul", [ctx.inputs[0], factor], shape, suffix="mul")
        ctx.node("Add", [y, bias], shape, out=ctx.outputs[0])


def eltwise(ctx: LayerContext) -> None:
    ctx.expect((2, 1024), 1)
    p = ctx.layer.eltwise_param
    shape = ctx.shape()
    for i in range(1, len(ctx.inputs)):
        if ctx.shape(i) != shape:
            ctx.fail(f"bottom {i} has shape {list(ctx.shape(i))}, bottom 0 {list(shape)}; Eltwise needs equal shapes")
    terms = list(ctx.inputs)
    if p.coeff:
        if p.operation != E.SUM:
            ctx.fail("coeff applies to operation SUM only")
        if len(p.coeff) != len(terms):
            ctx.fail(f"{len(p.coeff)} coeff value(s) for {len(terms)} bottoms")
        terms = [
            t if c == 1 else ctx.node("Mul", [t, ctx.const(f"coeff{i}", np.float32(c))], shape, suffix=f"coeff{i}")
            for i, (t, c) in enumerate(zip(terms, p.coeff))
        ]
    if p.operation == E.MAX:
        ctx.node("Max", terms, shape, out=ctx.outputs[0])
        return
    op = "Add" if p.operation == E.SUM else "Mul"
    acc = terms[0]
    for i, t in enumerate(terms[1:], start=1):
        last = i == len(terms) - 1
        acc = ctx.node(op, [acc, t], shape, out=ctx.outputs[0] if last else None, suffix=None if last else f"{op}{i}")


def _axis_or_dim(ctx: LayerContext, msg: caffe_pb2.ConcatParameter | caffe_pb2.SliceParameter, dim_field: str) -> int:
    if msg.HasField("axis") and msg.HasField(dim_field):
        ctx.fail(f"give either axis or {dim_field}, not both")
    if msg.HasField(dim_field):
        return ctx.axis(int(getattr(msg, dim_field)), what=dim_field)
    return ctx.axis(msg.axis)


def concat(ctx: LayerContext) -> None:
    ctx.expect((1, 4096), 1)
    axis = _axis_or_dim(ctx, ctx.layer.concat_param, "concat_dim")
    shape = ctx.shape()
    for i in range(1, len(ctx.inputs)):
        other = ctx.shape(i)
        if len(other) != len(shape) or any(a != b for k, (a, b) in enumerate(zip(shape, other)) if k != axis):
            ctx.fail(f"bottom {i} {list(other)} does not fit bottom 0 {list(shape)} outside axis {axis}")
    total = sum(ctx.shape(i)[axis] for i in range(len(ctx.inputs)))
    out_shape = (*shape[:axis], total, *shape[axis + 1 :])
    if len(ctx.inputs) == 1:
        ctx.node("Identity", ctx.inputs, out_shape, out=ctx.outputs[0])
    else:
        ctx.node("Concat", ctx.inputs, out_shape, out=ctx.outputs[0], axis=axis)


def softmax(ctx: LayerContext) -> None:
    ctx.expect(1, 1)
    axis = ctx.axis(ctx.layer.softmax_param.axis)
    ctx.node("Softmax", ctx.inputs, ctx.shape(), out=ctx.outputs[0], axis=axis)


def flatten(ctx: LayerContext) -> None:
    ctx.expect(1, 1)
    p = ctx.layer.flatten_param
    shape = ctx.shape()
    start = ctx.axis(p.axis)
    end = ctx.axis(p.end_axis, what="end_axis")
    if end < start:
        ctx.fail(f"end_axis {p.end_axis} comes before axis {p.axis}")
    out_shape = (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])
    ctx.reshape(ctx.inputs[0], out_shape, out=ctx.outputs[0], suffix=None)


def reshape(ctx: LayerContext) -> None:
    """Caffe's Reshape: dims [axis, axis+num_axes) replaced; 0 copies the input dim there, one -1 is inferred."""
    ctx.expect(1, 1)
    p = ctx.layer.reshape_param
    shape = ctx.shape()
    rank = len(shape)
    start = p.axis + rank + 1 if p.axis < 0 else p.axis
    if not 0 <= start <= rank:
        ctx.fail(f"axis {p.axis} is out of range for a {rank}-D input")
    if p.num_axes < -1:
        ctx.fail(f"num_axes {p.num_axes} must be -1 or more")
    end = rank if p.num_axes == -1 else start + p.num_axes
    if end > rank:
        ctx.fail(f"axis {p.axis} + num_axes {p.num_axes} goes past the {rank}-D input")
    dims = [int(d) for d in p.shape.dim]
    middle: list[int] = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= rank:
                ctx.fail(f"dim {i} is 0 (copy) but the input has no axis {start + i}")
            middle.append(shape[start + i])
        elif d < -1:
            ctx.fail(f"dim {d} is invalid (only -1 is inferred)")
        else:
            middle.append(d)
    if middle.count(-1) > 1:
        ctx.fail("more than one dim is -1")
    out = [*shape[:start], *middle, *shape[end:]]
    total = math.prod(shape)
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            ctx.fail(f"cannot infer the -1 dim: {total} values into {dims}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        ctx.fail(f"shape {dims} holds {math.prod(out)} values, the input {list(shape)} {total}")
    ctx.reshape(ctx.inputs[0], tuple(out), out=ctx.outputs[0], suffix=None)


def permute(ctx: LayerContext) -> None:
    """SSD's Permute: the given axis order, then the axes it leaves out, in order."""
    ctx.expect(1, 1)
    shape = ctx.shape()
    rank = len(shape)
    order = [int(o) for o in ctx.layer.permute_param.order]
    if any(o >= rank for o in order) or len(set(order)) != len(order):
        ctx.fail(f"order {order} is not a permutation of the {rank} input axes")
    order += [i for i in range(rank) if i not in order]
    ctx.node("Transpose", ctx.inputs, tuple(shape[o] for o in order), out=ctx.outputs[0], perm=order)


def slice_(ctx: LayerContext) -> None:
    ctx.expect(1, (1, 4096))
    p = ctx.layer.slice_param
    axis = _axis_or_dim(ctx, p, "slice_dim")
    shape = ctx.shape()
    size, tops = shape[axis], len(ctx.outputs)
    points = [int(x) for x in p.slice_point]
    if points:
        if len(points) != tops - 1:
            ctx.fail(f"{len(points)} slice_point(s) for {tops} tops (needs {tops - 1})")
        bounds = [0, *points, size]
        if any(b <= a for a, b in itertools.pairwise(bounds)):
            ctx.fail(f"slice_point {points} must increase strictly inside the axis ({size})")
        sizes = [b - a for a, b in itertools.pairwise(bounds)]
    else:
        if size % tops:
            ctx.fail(f"axis {axis} ({size}) does not split evenly into {tops} tops")
        sizes = [size // tops] * tops
    if tops == 1:
        ctx.node("Identity", ctx.inputs, shape, out=ctx.outputs[0])
        return
    shapes = [(*shape[:axis], s, *shape[axis + 1 :]) for s in sizes]
    split = ctx.int64s("split", sizes)
    ctx.b.add("Split", [ctx.inputs[0], split], ctx.outputs, shapes, ctx.name, axis=axis)


def crop(ctx: LayerContext) -> None:
    """Caffe's Crop: bottom 0 cut to bottom 1's dims from ``axis`` on, starting at ``offset``."""
    ctx.expect(2, 1)
    p = ctx.layer.crop_param
    shape, ref = ctx.shape(0), ctx.shape(1)
    if len(shape) != len(ref):
        ctx.fail(f"bottoms of different ranks ({list(shape)}, {list(ref)})")
    start = ctx.axis(p.axis)
    n = len(shape) - start
    offsets = [int(o) for o in p.offset]
    if len(offsets) not in (0, 1, n):
        ctx.fail(f"{len(offsets)} offset(s) for {n} cropped axes (give 0, 1 or {n})")
    axes, starts, ends = [], [], []
    for i in range(start, len(shape)):
        off = 0 if not offsets else offsets[0] if len(offsets) == 1 else offsets[i - start]
        if off + ref[i] > shape[i]:
            ctx.fail(f"offset {off} + size {ref[i]} exceeds axis {i} of the input ({shape[i]})")
        axes.append(i)
        starts.append(off)
        ends.append(off + ref[i])
    out_shape = (*shape[:start], *ref[start:])
    inputs = [ctx.inputs[0], ctx.int64s("starts", starts), ctx.int64s("ends", ends), ctx.int64s("axes", axes)]
    ctx.node("Slice", inputs, out_shape, out=ctx.outputs[0])
