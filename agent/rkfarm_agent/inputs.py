"""Turn user input arrays into what a model's payload takes, exactly as the vendor runtime does.

Per input, unless pass-through is requested:
  * 4-D image inputs arrive NHWC by default (``data_format='nhwc'``) and are transposed to the payload's NCHW;
    ``data_format='nchw'`` means they already are. A 3-D HWC array is taken as a batch of one.
  * values are cast to the payload's dtype, then ``(x - mean) / std`` is applied per channel.
Pass-through inputs skip layout and normalisation: they must already have the payload's shape.

A package built with ``config(dynamic_input=...)`` has symbolic dims and a list of shape sets: the converted
inputs (all of them together, in the payload's layout) must be one of those sets, as the vendor runtime takes only
the shapes the model was built for; anything else is refused with the sets listed.

The host simulator and the agent both call this module, so a model sees the same numbers on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rkfarm_proto.errors import InputError
from rkfarm_proto.tensors import shape_str, to_numpy_dtype
from rkfarm_proto.v1 import common_pb2, package_pb2

Array = npt.NDArray[np.generic]
_ACCEPTED_KINDS = "biuf"  # bool, signed, unsigned, float


@dataclass(frozen=True)
class _InputPlan:
    name: str
    shape: tuple[int, ...]  # payload shape; -1 for a dynamic dim
    dtype: np.dtype[np.generic]
    nchw: bool
    nhwc: bool  # a 4-D input the payload itself takes NHWC (TensorFlow, TFLite): arrays arrive as they are
    mean: Array | None  # shaped (C, 1, 1) for NCHW, else broadcastable on the last axis
    std: Array | None

    def matches(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(e < 0 or e == g for e, g in zip(self.shape, shape))

    @property
    def nhwc_shape(self) -> tuple[int, ...]:
        n, c, h, w = self.shape
        return (n, h, w, c)


def _channel_vector(values: Sequence[float], channels: int, name: str, what: str) -> Array | None:
    if not values:
        return None
    vec = np.asarray(values, dtype=np.float32)
    if vec.size not in (1, channels) and channels > 0:
        raise InputError(f"input {name!r}: {what} has {vec.size} values for {channels} channels")
    if np.all(vec == (0.0 if what == "mean_values" else 1.0)):
        return None  # identity: skip the arithmetic
    return vec


class InputAdapter:
    """Prepared per-model conversion; build once per loaded model, call for every inference."""

    def __init__(self, specs: Sequence[package_pb2.InputSpec], shape_sets: Sequence[package_pb2.ShapeSet] = ()) -> None:
        plans = []
        for spec in specs:
            t = spec.tensor
            shape = tuple(int(d) for d in t.shape)
            nchw = t.layout == common_pb2.LAYOUT_NCHW and len(shape) == 4
            nhwc = t.layout == common_pb2.LAYOUT_NHWC and len(shape) == 4
            channels = shape[1] if nchw else (shape[-1] if shape else 1)
            mean = _channel_vector(spec.mean_values, channels, t.name, "mean_values")
            std = _channel_vector(spec.std_values, channels, t.name, "std_values")
            if std is not None and np.any(std == 0):
                raise InputError(f"input {t.name!r}: std_values contains 0")
            if nchw:
                mean = None if mean is None else mean.reshape(-1, 1, 1)
                std = None if std is None else std.reshape(-1, 1, 1)
            plans.append(_InputPlan(t.name, shape, to_numpy_dtype(t.dtype), nchw, nhwc, mean, std))
        self._plans = plans
        self._sets = [tuple(tuple(int(d) for d in shape.dims) for shape in s.inputs) for s in shape_sets]
        for index, allowed in enumerate(self._sets):
            if len(allowed) != len(plans) or not all(p.matches(shape) for p, shape in zip(plans, allowed)):
                raise InputError(
                    f"shape set {index} {[list(s) for s in allowed]} does not fit the inputs "
                    f"{[shape_str(p.shape) for p in plans]}: the package header is inconsistent"
                )

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._plans]

    def __call__(
        self,
        arrays: Sequence[npt.ArrayLike],
        data_format: str | Sequence[str | None] | None = None,
        pass_through: Sequence[int | bool] | None = None,
    ) -> list[Array]:
        if len(arrays) != len(self._plans):
            raise InputError(f"model takes {len(self._plans)} input(s) ({', '.join(self.names)}), got {len(arrays)}")
        formats = per_input(data_format, len(self._plans), "data_format")
        formats = [f.lower() if isinstance(f, str) else f for f in formats]  # 'NCHW' as 'nchw', like target names
        passes = per_input(pass_through, len(self._plans), "inputs_pass_through")
        feeds = [
            self._prepare(plan, arr, fmt, bool(pt)) for plan, arr, fmt, pt in zip(self._plans, arrays, formats, passes)
        ]
        if self._sets:
            self._check_set(feeds)
        return feeds

    @property
    def shape_sets(self) -> list[tuple[tuple[int, ...], ...]]:
        """The input shapes the model runs (config(dynamic_input)), in the payload's layout; empty: static."""
        return list(self._sets)

    def _check_set(self, feeds: Sequence[Array]) -> None:
        given = tuple(tuple(int(d) for d in f.shape) for f in feeds)
        if given in self._sets:
            return
        shown = "; ".join(
            f"set {i}: " + ", ".join(self._user_shape(p, s) for p, s in zip(self._plans, allowed))
            for i, allowed in enumerate(self._sets)
        )
        raise InputError(
            f"input shape(s) {', '.join(self._user_shape(p, s) for p, s in zip(self._plans, given))} are not one of "
            f"the model's dynamic_input sets ({shown}); the model runs only the shapes it was built for"
        )

    @staticmethod
    def _user_shape(plan: _InputPlan, shape: tuple[int, ...]) -> str:
        """A payload shape as the user passes it: NCHW image inputs take NHWC arrays by default."""
        if plan.nchw and len(shape) == 4:
            n, c, h, w = shape
            return f"{plan.name!r} {shape_str((n, h, w, c))} (NHWC; {shape_str(shape)} NCHW)"
        return f"{plan.name!r} {shape_str(shape)}"

    def _prepare(self, plan: _InputPlan, value: npt.ArrayLike, fmt: object, pass_through: bool) -> Array:
        arr = np.asarray(value)
        if arr.dtype.kind not in _ACCEPTED_KINDS:
            raise InputError(
                f"input {plan.name!r}: dtype {arr.dtype} is not supported; give numbers "
                f"(uint8 images or {plan.dtype.name} data)"
            )
        if pass_through:
            if not plan.matches(arr.shape):
                raise InputError(
                    f"input {plan.name!r} (pass-through): expected shape {shape_str(plan.shape)}, "
                    f"got {shape_str(arr.shape)}"
                )
            return np.ascontiguousarray(arr, dtype=plan.dtype)
        if fmt is not None and fmt not in ("nhwc", "nchw"):
            raise InputError(f"input {plan.name!r}: data_format must be 'nhwc' or 'nchw', got {fmt!r}")
        try:
            if plan.nchw:
                arr = self._to_nchw(plan, arr, fmt)
            elif plan.nhwc:
                arr = self._to_nhwc(plan, arr, fmt)
            elif not plan.matches(arr.shape):
                raise InputError(
                    f"input {plan.name!r}: expected shape {shape_str(plan.shape)}, got {shape_str(arr.shape)}"
                )
        except InputError as exc:
            batch = plan.shape[0] if plan.shape else 1
            if batch > 1 and (arr.ndim < len(plan.shape) or arr.shape[0] != batch):
                raise InputError(
                    f"{exc}: the model takes a batch of {batch} samples per run (as build(rknn_batch_size={batch}) "
                    f"makes it); stack {batch} samples along dim 0 (np.stack / np.concatenate)"
                ) from None
            raise
        if plan.mean is None and plan.std is None:
            return np.ascontiguousarray(arr, dtype=plan.dtype)
        out = arr.astype(np.float32, order="C")  # a fresh C-ordered copy we may modify in place
        if plan.mean is not None:
            np.subtract(out, plan.mean, out=out)
        if plan.std is not None:
            np.divide(out, plan.std, out=out)
        return out.astype(plan.dtype, copy=False)

    @staticmethod
    def _to_nchw(plan: _InputPlan, arr: Array, fmt: object) -> Array:
        nhwc = plan.nhwc_shape
        if arr.ndim == 3 and plan.shape[0] in (1, -1):
            arr = arr[np.newaxis]
        if fmt == "nchw":
            if not plan.matches(arr.shape):
                raise InputError(
                    f"input {plan.name!r} (nchw): expected shape {shape_str(plan.shape)}, got {shape_str(arr.shape)}"
                )
            return arr
        if arr.ndim == 4 and all(e < 0 or e == g for e, g in zip(nhwc, arr.shape)):
            transposed: Array = arr.transpose(0, 3, 1, 2)
            return transposed
        if fmt is None and plan.matches(tuple(arr.shape)):
            return arr  # unambiguously NCHW already: accept it as the vendor's runtime does
        raise InputError(
            f"input {plan.name!r}: expected shape {shape_str(nhwc)} (NHWC, the default data_format) or "
            f"{shape_str(plan.shape)} with data_format='nchw', got {shape_str(arr.shape)}"
        )

    @staticmethod
    def _to_nhwc(plan: _InputPlan, arr: Array, fmt: object) -> Array:
        """An NHWC payload takes NHWC arrays as they are; ``data_format='nchw'`` arrays are transposed to it."""
        given = arr.shape
        if arr.ndim == 3 and plan.shape[0] in (1, -1):
            arr = arr[np.newaxis]
        if fmt == "nchw" and arr.ndim == 4:
            arr = arr.transpose(0, 2, 3, 1)
        if not plan.matches(arr.shape):
            n, h, w, c = plan.shape
            raise InputError(
                f"input {plan.name!r}: expected shape {shape_str(plan.shape)} (NHWC, the model's own layout) or "
                f"{shape_str((n, c, h, w))} with data_format='nchw', got {shape_str(given)}"
            )
        return arr


def per_input(value: object, count: int, what: str) -> list[object]:
    if value is None or isinstance(value, (str, int, bool)):
        return [value] * count
    if not isinstance(value, Sequence):
        raise InputError(f"{what} must be a value or a list with one per input, got {type(value).__name__}")
    if len(value) != count:
        raise InputError(f"{what} has {len(value)} entries for {count} input(s)")
    return list(value)
