"""config(model_pruning=True): remove channels that cannot change a model's outputs.

A channel goes only when that is provably exact for every finite input. Each pass tracks, per channel of
every tensor reachable from a Conv/Gemm/MatMul with constant weights, bounds on its value: a channel is
constant when the producer's weights into it are zero (it equals the bias), or when every weight into it
meets an input channel that is itself constant (without padding, or zero); its sign is known when every
term has one sign (ReLU output through non-positive weights and bias, then ReLU -> 0). Element-wise ops,
depthwise convs, BatchNormalization, pools, Flatten and Concat carry the bounds along a channel. A channel is
removed -- from its producers, the ops along it and its consumers -- when every consumer can do without it:
a consumer Conv/Gemm/MatMul whose weights for it are zero, or that sees it as the constant 0 (zero padding
keeps it 0), or a constant k folded into the consumer's bias (Gemm, or a Conv without padding). Anything
else reading the channel (model outputs, Reshape, Softmax, a Conv with padding seeing k != 0, ...) keeps it.
Passes repeat until nothing changes, since removing an input can leave a producer's weights all zero.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

from rkfarm import graph
from rkfarm.errors import BuildError

log = logging.getLogger(__name__)

Floats = npt.NDArray[np.float64]
Bounds = tuple[Floats, Floats]
_MAX_PASSES = 8
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
_POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
_BINARY = ("Add", "Sub", "Mul", "Div")


def prune_dead_channels(model: onnx.ModelProto, *, zero_weight_abs: float = 0.0) -> onnx.ModelProto:
    """A copy of ``model`` without the channels that cannot affect its outputs (the input is not changed).

    ``zero_weight_abs`` > 0 also treats weights with ``|w| <= zero_weight_abs`` as zero: no longer exact, but
    what the vendor does (about 1e-8 reproduces its choices on PP-OCRv4, whose SE blocks hold weights of 1e-20).
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    weights_before, bytes_before = _weight_count(work), graph.weight_bytes(work)
    layers: dict[str, list[int]] = {}
    for _ in range(_MAX_PASSES):
        changed = _Pass(work, zero_weight_abs).run()
        for name, (before, after) in changed.items():
            layers.setdefault(name, [before, after])[1] = after
        if not changed:
            break
    if not layers:
        log.info("model_pruning: nothing to prune (no channel is dead or constant), %d weights kept", weights_before)
        return work
    _drop_unused_initializers(work)
    result = graph.infer_shapes(work)
    try:
        onnx.checker.check_model(result)
    except onnx.checker.ValidationError as exc:  # a bug here, not in the user's model
        raise BuildError(f"model_pruning produced an invalid model ({exc}); build without model_pruning") from None
    for name, (before, after) in layers.items():
        log.debug("model_pruning: %s: %d -> %d channels", name, before, after)
    removed, removed_bytes = weights_before - _weight_count(result), bytes_before - graph.weight_bytes(result)
    log.info(
        "model_pruning results: %d channels in %d layer(s), -%d weights (-%.5f MB, -%.1f%%)",
        sum(b - a for b, a in layers.values()), len(layers), removed, removed_bytes / 2**20,
        100.0 * removed / max(weights_before, 1),
    )  # fmt: skip
    return result


@dataclass
class _Chan:
    """A tensor whose channels may go: channel c is element ``base + c``; value bounds per channel."""

    base: int
    count: int
    axis: int
    rank: int
    lo: Floats
    hi: Floats


@dataclass
class _Lin:
    """A Conv/Gemm/MatMul with constant weights: where output rows and input columns sit in its weight."""

    node: int
    out_axis: int
    in_axis: int
    scale: float  # Gemm alpha
    bias_slot: int | None  # Conv B / Gemm C, present in node.input or not
    bias_scale: float  # Gemm beta
    padded: bool


@dataclass
class _Sink:
    """A _Lin reading a prunable tensor; ``fold`` is the constant to move into its bias per removed channel."""

    lin: _Lin
    tensor: str
    fold: Floats


class _Pass:
    """One analysis over ``model`` followed by the edits it allows, in place."""

    def __init__(self, model: onnx.ModelProto, zero_weight_abs: float) -> None:
        self.g = model.graph
        self.tol = zero_weight_abs
        inferred = graph.infer_shapes(model)
        values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        self.dims = {v.name: graph.dims_of(v) for v in values if v.type.tensor_type.HasField("shape")}
        inputs = {i.name for i in self.g.input}
        self.inits = {t.name: t for t in self.g.initializer if t.name not in inputs}
        self.reads = Counter(_all_reads(self.g))
        self.arrays: dict[tuple[int, int], npt.NDArray[np.generic]] = {}
        self.chans: dict[str, _Chan] = {}
        self.parent: list[int] = []
        self.bad: set[int] = set()
        self.roots: list[tuple[_Lin, str]] = []
        self.sinks: list[_Sink] = []
        self.params: list[tuple[int, int, str, int]] = []  # node, slot, tensor, axis in the param to slice
        self.groups: list[tuple[int, str]] = []  # depthwise convs whose group follows the channel count

    # -- constants and elements -------------------------------------------------------------------------------
    def array(self, node: int, slot: int) -> npt.NDArray[np.generic] | None:
        """The (possibly already edited) constant in input ``slot`` of node ``node``, None if not constant."""
        if (node, slot) in self.arrays:
            return self.arrays[(node, slot)]
        inputs = self.g.node[node].input
        t = self.inits.get(inputs[slot]) if slot < len(inputs) else None
        return numpy_helper.to_array(t) if t is not None else None

    def floats(self, node: int, slot: int) -> Floats | None:
        t = self.inits.get(self.g.node[node].input[slot]) if slot < len(self.g.node[node].input) else None
        a = self.array(node, slot)
        return a.astype(np.float64) if a is not None and t is not None and t.data_type in _FLOAT_TYPES else None

    def new(self, name: str, count: int, axis: int, rank: int, bounds: Bounds, base: int | None = None) -> _Chan:
        if base is None:
            base = len(self.parent)
            self.parent.extend(range(base, base + count))
        chan = _Chan(base, count, axis, rank, bounds[0], bounds[1])
        self.chans[name] = chan
        return chan

    def find(self, e: int) -> int:
        while self.parent[e] != e:
            self.parent[e] = self.parent[self.parent[e]]
            e = self.parent[e]
        return e

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)

    def block(self, names: Iterable[str]) -> None:
        for name in names:
            if name in self.chans:
                c = self.chans[name]
                self.bad.update(range(c.base, c.base + c.count))

    # -- analysis ---------------------------------------------------------------------------------------------
    def run(self) -> dict[str, tuple[int, int]]:
        for index, node in enumerate(self.g.node):
            claimed = self.visit(index, node)
            self.block(x for x in node.input if x not in claimed)
            for attr in node.attribute:
                for sub in [attr.g, *attr.graphs]:
                    self.block(_all_reads(sub))
        self.block(o.name for o in self.g.output)
        return self.apply()

    def visit(self, i: int, node: onnx.NodeProto) -> set[str]:
        """Record what ``node`` does to channels; return the inputs it can follow a pruning of."""
        op, ins, out = node.op_type, list(node.input), node.output[0] if node.output else ""
        x = self.chans.get(ins[0]) if ins else None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if op == "Conv" and attrs.get("group", 1) != 1:
            W, b = self.floats(i, 1), self.floats(i, 2) if len(ins) > 2 and ins[2] else None
            if x is None or W is None or W.shape[:2] != (x.count, 1) or attrs["group"] != x.count or x.axis != 1:
                return set()
            if len(ins) > 2 and ins[2] and b is None:
                return set()
            diag = _linear_bounds(W.reshape(x.count, 1, -1), b, x.lo[:, None], x.hi[:, None], _padded(attrs), self.tol)
            self.new(out, x.count, 1, x.rank, diag, x.base)
            self.params += [(i, s, out, 0) for s in (1, 2) if s < len(ins) and ins[s]]
            self.groups.append((i, out))
            return {ins[0]}
        if op in ("Conv", "Gemm", "MatMul"):
            return self.linear(i, node, attrs, x)
        if x is None or len(node.output) != 1:
            return set()
        if op in _BINARY:
            return self.binary(i, node)
        if op == "Concat":
            parts = [self.chans.get(n) for n in ins]
            axis = attrs.get("axis", 0)
            if not all(p is not None and p.axis == axis % p.rank and p.rank == x.rank for p in parts):
                return set()
            chans = [p for p in parts if p is not None]
            c = self.new(out, sum(p.count for p in chans), x.axis, x.rank, _cat(chans))
            offset = 0
            for p in chans:
                for k in range(p.count):
                    self.union(p.base + k, c.base + offset + k)
                offset += p.count
            return set(ins)
        bounds = self.channelwise(i, node, attrs, x)
        if bounds is None:
            return set()
        if op in ("Flatten", "Reshape"):
            self.new(out, x.count, 1, 2, bounds, x.base)
        else:
            self.new(out, x.count, x.axis, x.rank, bounds, x.base)
        return {ins[0]}

    def linear(self, i: int, node: onnx.NodeProto, attrs: dict[str, Any], x: _Chan | None) -> set[str]:
        """Conv (group 1), Gemm, MatMul with constant weights: a producer of channels, maybe a consumer too."""
        op, ins = node.op_type, list(node.input)
        W = self.floats(i, 1)
        if W is None or W.ndim < (3 if op == "Conv" else 2) or (op == "Gemm" and W.ndim != 2):
            return set()
        if len(ins) > 2 and ins[2] and self.floats(i, 2) is None:
            return set()
        rank, beta = W.ndim, 1.0
        if op == "Conv":
            lin = _Lin(i, 0, 1, 1.0, 2, 1.0, _padded(attrs))
            axis_in = 1
        elif op == "Gemm":
            trans = bool(attrs.get("transB", 0))
            beta = float(attrs.get("beta", 1.0))
            lin = _Lin(i, 0 if trans else 1, 1 if trans else 0, float(attrs.get("alpha", 1.0)), 2, beta, False)
            axis_in = 1 if not attrs.get("transA", 0) else -1
        else:
            rank = x.rank if x is not None else len(self.dims.get(ins[0], []))
            if W.ndim != 2 or rank < 2:
                return set()
            lin = _Lin(i, 1, 0, 1.0, None, 1.0, False)
            axis_in = rank - 1
        M = self.matrix(lin)
        claimed: set[str] = set()
        in_lo: npt.NDArray[Any] = np.full(M.shape[1], -np.inf)
        in_hi: npt.NDArray[Any] = np.full(M.shape[1], np.inf)
        if x is not None and x.axis == axis_in and x.count == M.shape[1]:
            claimed.add(ins[0])
            in_lo, in_hi = x.lo, x.hi
            zero, ignored = (x.lo == 0) & (x.hi == 0), ~(np.abs(M) > self.tol).any(axis=(0, 2))
            const = (x.lo == x.hi) & ~zero & ~ignored
            foldable = lin.bias_slot is not None and not lin.padded and beta != 0
            keep = ~(ignored | zero | (const & foldable))
            self.bad.update(x.base + int(c) for c in np.flatnonzero(keep))
            self.sinks.append(_Sink(lin, ins[0], np.where(const, x.lo, 0.0)))
        bounds = _linear_bounds(M, self.bias(lin, M.shape[0]), in_lo[None, :], in_hi[None, :], lin.padded, self.tol)
        out_axis = rank - 1 if op == "MatMul" else 1
        self.new(node.output[0], M.shape[0], out_axis, 2 if op == "Gemm" else rank, bounds)
        self.roots.append((lin, node.output[0]))
        return claimed

    def matrix(self, lin: _Lin) -> Floats:
        """The weight as [out, in, taps], times Gemm's alpha."""
        W = self.floats(lin.node, 1)
        assert W is not None
        W = np.moveaxis(W, (lin.out_axis, lin.in_axis), (0, 1))
        return W.reshape(W.shape[0], W.shape[1], -1) * lin.scale

    def bias(self, lin: _Lin, count: int) -> Floats | None:
        """The bias per output channel (zeros if absent), None if it varies along another axis (Gemm C [M, N])."""
        if lin.bias_slot is None:
            return np.zeros(count)
        b = self.floats(lin.node, lin.bias_slot)
        if b is None:
            return np.zeros(count)
        b = b.reshape(-1, b.shape[-1]) if b.ndim else b.reshape(1, 1)
        if b.shape[1] not in (1, count) or not (b == b[:1]).all():
            return None
        return np.broadcast_to(b[0] * lin.bias_scale, (count,)).astype(np.float64)

    def binary(self, i: int, node: onnx.NodeProto) -> set[str]:
        op, (a, b), out = node.op_type, node.input[:2], node.output[0]
        ca, cb = self.chans.get(a), self.chans.get(b)
        if ca is not None and cb is not None:
            if (ca.count, ca.axis, ca.rank) != (cb.count, cb.axis, cb.rank):
                return set()
            for k in range(ca.count):
                self.union(ca.base + k, cb.base + k)
            bounds = _binary(op, (ca.lo, ca.hi), (cb.lo, cb.hi))
            self.new(out, ca.count, ca.axis, ca.rank, bounds, ca.base)
            return {a, b}
        chan, slot = (ca, 1) if ca is not None else (cb, 0)
        assert chan is not None
        p = self.floats(i, slot)
        vec = _per_channel(p, chan.rank, chan.axis, chan.count) if p is not None else None
        if p is None or vec is None:
            return set()
        pair = ((chan.lo, chan.hi), (vec, vec))
        self.new(out, chan.count, chan.axis, chan.rank, _binary(op, *(pair if slot == 1 else pair[::-1])), chan.base)
        self.param(i, slot, out, p, chan)
        return {node.input[1 - slot]}

    def param(self, i: int, slot: int, tensor: str, p: npt.NDArray[np.generic], chan: _Chan) -> None:
        axis = chan.axis - (chan.rank - p.ndim)
        if axis >= 0 and p.shape[axis] == chan.count > 1:
            self.params.append((i, slot, tensor, axis))

    def channelwise(self, i: int, node: onnx.NodeProto, attrs: dict[str, Any], x: _Chan) -> Bounds | None:
        """Bounds of a one-input op that maps channel c to channel c (None: not such an op, or unknown)."""
        op, ins = node.op_type, list(node.input)
        lo, hi = x.lo, x.hi
        if op in ("Relu", "Identity", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "LeakyRelu"):
            alpha = float(attrs.get("alpha", {"LeakyRelu": 0.01, "HardSigmoid": 0.2}.get(op, 0.0)))
            beta = float(attrs.get("beta", 0.5))
            fn, kinks = _UNARY[op](alpha, beta)
            return _image(fn, lo, hi, kinks)
        if op == "Clip":
            bounds = [attrs.get("min", -np.inf), attrs.get("max", np.inf)]
            for k in (1, 2):
                if k < len(ins) and ins[k]:
                    v = self.floats(i, k)
                    if v is None or v.size != 1:
                        return None
                    bounds[k - 1] = float(v.reshape(()))
            mn, mx = (float(v) for v in bounds)
            return _image(lambda v: np.clip(v, mn, mx), lo, hi)
        if op == "PRelu":
            p = self.floats(i, 1)
            slope = _per_channel(p, x.rank, x.axis, x.count) if p is not None else None
            if p is None or slope is None:
                return None
            self.param(i, 1, node.output[0], p, x)
            return _image(lambda v: np.where(v >= 0, v, slope * v), lo, hi, (0.0,))
        if op == "BatchNormalization" and x.axis == 1:
            bn = [self.floats(i, k) for k in (1, 2, 3, 4)]
            if any(v is None or v.shape != (x.count,) for v in bn):
                return None
            scale, shift, mean, var = (v for v in bn if v is not None)
            a = scale / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
            self.params += [(i, k, node.output[0], 0) for k in (1, 2, 3, 4)]
            return _binary("Add", _binary("Mul", (lo, hi), (a, a)), (shift - mean * a, shift - mean * a))
        if op in _POOLS and x.axis == 1:
            if op == "AveragePool" and attrs.get("count_include_pad", 0) and _padded(attrs):
                return np.minimum(lo, 0.0), np.maximum(hi, 0.0)  # padding averages zeros in at the borders
            return lo, hi
        dims = self.dims.get(ins[0])
        if op in ("Flatten", "Reshape") and x.axis == 1 and dims and all(d == 1 for d in dims[2:]):
            if op == "Flatten" and attrs.get("axis", 1) == 1:
                return lo, hi
            shape = self.inits.get(ins[1]) if op == "Reshape" else None
            target = numpy_helper.to_array(shape).tolist() if shape is not None else None
            if target is not None and len(target) == 2 and target[0] in (0, dims[0]) and target[1] == -1:
                return lo, hi
        return None

    # -- edits ------------------------------------------------------------------------------------------------
    def apply(self) -> dict[str, tuple[int, int]]:
        """Remove every channel whose class is free of bad elements (keeping one per tensor); edit in place."""
        bad = {self.find(e) for e in self.bad}
        roots = {n: np.array([self.find(c.base + k) for k in range(c.count)]) for n, c in self.chans.items()}
        keep = {n: np.isin(r, np.array(sorted(bad))) for n, r in roots.items()}
        while empty := [n for n, mask in keep.items() if not mask.any()]:
            bad.update(int(roots[n][0]) for n in empty)
            keep = {n: np.isin(r, np.array(sorted(bad))) for n, r in roots.items()}
        if all(mask.all() for mask in keep.values()):
            return {}
        changed: dict[str, tuple[int, int]] = {}
        for lin, out in self.roots:
            mask = keep[out]
            if not mask.all():
                W = self.array(lin.node, 1)
                assert W is not None
                self.arrays[(lin.node, 1)] = np.compress(mask, W, axis=lin.out_axis)
                b = self.array(lin.node, 2) if lin.bias_slot is not None else None
                if b is not None and b.ndim and b.shape[-1] == mask.size:
                    self.arrays[(lin.node, 2)] = np.compress(mask, b, axis=-1)
                changed[_layer_name(self.g.node[lin.node])] = (mask.size, int(mask.sum()))
        for sink in self.sinks:
            mask = keep[sink.tensor]
            if not mask.all():
                self.fold(sink.lin, np.where(mask, 0.0, sink.fold))
                W = self.array(sink.lin.node, 1)
                assert W is not None
                self.arrays[(sink.lin.node, 1)] = np.compress(mask, W, axis=sink.lin.in_axis)
        for node, slot, tensor, axis in self.params:
            p = self.array(node, slot)
            if p is not None and not keep[tensor].all():
                self.arrays[(node, slot)] = np.compress(keep[tensor], p, axis=axis)
        for node, tensor in self.groups:
            n = self.g.node[node]
            for attr in n.attribute:
                if attr.name == "group":
                    attr.i = int(keep[tensor].sum())
            if not keep[tensor].all():
                changed[_layer_name(n)] = (keep[tensor].size, int(keep[tensor].sum()))
        self.write()
        return changed

    def fold(self, lin: _Lin, values: Floats) -> None:
        """Add the contribution of constant input channels (``values``, 0 elsewhere) to the bias."""
        if not values.any():
            return
        M = self.matrix(lin)
        delta = M.sum(axis=2) @ values / lin.bias_scale
        assert lin.bias_slot is not None
        b = self.array(lin.node, lin.bias_slot)
        W = self.array(lin.node, 1)
        assert W is not None
        dtype = W.dtype if b is None else b.dtype
        self.arrays[(lin.node, lin.bias_slot)] = (delta if b is None else b.astype(np.float64) + delta).astype(dtype)

    def write(self) -> None:
        """Store the edited constants: in place when nothing else reads them, else under a new name."""
        names = {t.name for t in self.g.initializer}
        for (index, slot), value in self.arrays.items():
            node = self.g.node[index]
            old = node.input[slot] if slot < len(node.input) else ""
            tensor = numpy_helper.from_array(np.ascontiguousarray(value), old)
            if old and self.reads[old] == 1 and old in self.inits:
                self.inits[old].CopyFrom(tensor)
                continue
            base = f"{old or _layer_name(node) + '_bias'}_pruned"
            name, k = base, 1
            while name in names:
                name, k = f"{base}{k}", k + 1
            names.add(name)
            tensor.name = name
            self.g.initializer.append(tensor)
            while len(node.input) <= slot:
                node.input.append("")
            node.input[slot] = name


def _linear_bounds(M: Floats, b: Floats | None, lo: Floats, hi: Floats, padded: bool, tol: float) -> Bounds:
    """Bounds per output row of ``b + sum(M[o, j, t] * x_j)`` for x_j in [lo_j, hi_j] (lo/hi broadcast [O, J]).

    Only exact facts: a row is constant when every input its weights touch is 0 (or constant, without
    padding); its upper bound is b when no term can be positive (the float sum of terms <= 0 stays <= 0).
    """
    rows = M.shape[0]
    if b is None:
        return np.full(rows, -np.inf), np.full(rows, np.inf)
    pos, neg = (tol < M).any(axis=2), (-tol > M).any(axis=2)
    zero, const = (lo == 0) & (hi == 0), lo == hi
    can_pos = ((pos & (hi > 0)) | (neg & (lo < 0))).any(axis=1)
    can_neg = ((pos & (lo < 0)) | (neg & (hi > 0))).any(axis=1)
    out_lo, out_hi = np.where(can_neg, -np.inf, b), np.where(can_pos, np.inf, b)
    if not padded:
        active = (pos | neg) & ~zero
        fixed = ~(active & ~const).any(axis=1)
        terms = np.where(active & const, M.sum(axis=2) * np.where(const, lo, 0.0), 0.0)
        value = b + terms.sum(axis=1)
        out_lo, out_hi = np.where(fixed, value, out_lo), np.where(fixed, value, out_hi)
    return out_lo, out_hi


def _image(fn: Callable[[Floats], Floats], lo: Floats, hi: Floats, kinks: Iterable[float] = ()) -> Bounds:
    """Bounds of fn over [lo, hi], for fn monotone between its ``kinks`` (extremes are at ends or kinks)."""
    with np.errstate(all="ignore"):
        values = np.stack([fn(lo), fn(hi), *(fn(np.clip(np.full_like(lo, k), lo, hi)) for k in kinks)])
    unknown = np.isnan(values).any(axis=0)
    return np.where(unknown, -np.inf, values.min(axis=0)), np.where(unknown, np.inf, values.max(axis=0))


def _hardswish(v: Floats) -> Floats:
    return np.where(v <= -3, 0.0, np.where(v >= 3, v, v * (v + 3) / 6))


_UNARY: dict[str, Callable[[float, float], tuple[Callable[[Floats], Floats], tuple[float, ...]]]] = {
    "Relu": lambda a, b: (lambda v: np.maximum(v, 0.0), ()),
    "Identity": lambda a, b: (lambda v: v, ()),
    "Sigmoid": lambda a, b: (lambda v: 1.0 / (1.0 + np.exp(-v)), ()),
    "Tanh": lambda a, b: (np.tanh, ()),
    "HardSigmoid": lambda a, b: (lambda v: np.clip(a * v + b, 0.0, 1.0), ()),
    "HardSwish": lambda a, b: (_hardswish, (-3.0, -1.5, 3.0)),
    "LeakyRelu": lambda a, b: (lambda v: np.where(v >= 0, v, a * v), (0.0,)),
}


def _binary(op: str, a: Bounds, b: Bounds) -> Bounds:
    """Interval arithmetic; 0 * inf counts as 0 (the values are finite)."""
    if op == "Add":
        return a[0] + b[0], a[1] + b[1]
    if op == "Sub":
        return a[0] - b[1], a[1] - b[0]
    if op == "Div":
        if not ((b[0] == b[1]) & (b[0] != 0)).all():
            return np.full_like(a[0], -np.inf), np.full_like(a[0], np.inf)
        b = (1.0 / b[0], 1.0 / b[0])
    with np.errstate(invalid="ignore"):
        products = np.stack([a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]])
    products = np.where(np.isnan(products), 0.0, products)
    return products.min(axis=0), products.max(axis=0)


def _per_channel(p: Floats, rank: int, axis: int, count: int) -> Floats | None:
    """A constant operand's value per channel, None if it varies along another axis or outranks the tensor."""
    if p.ndim > rank:
        return None
    full = p.reshape((1,) * (rank - p.ndim) + p.shape)
    if full.shape[axis] not in (1, count):
        return None
    flat = np.moveaxis(full, axis, 0).reshape(full.shape[axis], -1)
    if flat.shape[1] and not (flat == flat[:, :1]).all():
        return None
    return np.broadcast_to(flat[:, 0], (count,)).astype(np.float64)


def _cat(parts: list[_Chan]) -> Bounds:
    return np.concatenate([p.lo for p in parts]), np.concatenate([p.hi for p in parts])


def _padded(attrs: dict[str, Any]) -> bool:
    pads = attrs.get("pads", [])
    auto = attrs.get("auto_pad", b"NOTSET")
    return any(int(p) for p in pads) or auto not in (b"NOTSET", b"VALID")


def _layer_name(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}->{node.output[0]}"


def _all_reads(g: onnx.GraphProto) -> list[str]:
    """Every name read by the nodes of ``g`` and of their subgraphs."""
    names = [x for n in g.node for x in n.input if x]
    for n in g.node:
        for attr in n.attribute:
            for sub in [attr.g, *attr.graphs]:
                names += _all_reads(sub)
    return names


def _weight_count(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer if t.data_type in _FLOAT_TYPES)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = set(_all_reads(model.graph)) | {o.name for o in model.graph.output}
    kept = [t for t in model.graph.initializer if t.name in used]
    if len(kept) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)


__all__ = ["prune_dead_channels"]
