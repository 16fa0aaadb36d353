"""The arithmetic of RKNN's ``w8a8``: asymmetric int8 activations, symmetric int8 weights, int32 biases.

Activations, per tensor: the calibrated range is widened to include 0, then
``scale = (max - min) / 255`` and ``zero_point = round(-min / scale) - 128``, so real 0 is exactly
representable (zero padding, ReLU) and the 256 levels span the range.

Weights, per output channel (``quantized_method='channel'``) or per tensor (``'layer'``): symmetric,
``scale = max|w| / 127`` (``mmse``: ``clip / 127`` for the clip that minimises the channel's squared error),
zero point 0, levels -127..127. Symmetric because ONNX Runtime's integer
convolution and matmul kernels take one weight zero point (a per-channel zero point must be the same for every
channel, so only 0 is usable), and a zero weight offset keeps the int32 accumulation free of a correction term —
which is also how the NPU's int8 MAC arrays are fed. The activation side carries the asymmetry.

Biases: int32 at ``scale = s_in * s_w`` (per channel with the weights), zero point 0, as the integer
convolution adds them to its int32 accumulator.

Every ``QuantParams`` records the range its grid covers — ``[(-128 - zp) * s, (127 - zp) * s]`` for
activations — so min/max, scale and zero point always satisfy the formulas above exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_LEVEL = 127  # symmetric weights use -127..127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MIN_SPAN = 1e-6  # an all-zero tensor still gets a usable scale
QTYPE = "asymmetric_quantized"  # the vendor's name for the w8a8 scheme, used for every entry

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class QuantParams:
    """How one tensor is quantized: one entry per tensor, or one per channel along ``axis``."""

    dtype: str  # "int8" | "int32"
    scale: FloatArray  # float32, shape (1,) per tensor or (C,) per channel
    zero_point: npt.NDArray[np.int64]
    qmin: int  # the integer levels used: -128..127 for activations, -127..127 for weights
    qmax: int
    axis: int | None = None  # None: per tensor

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def qmethod(self) -> str:
        return "channel" if self.per_channel else "layer"

    @property
    def min(self) -> npt.NDArray[np.float64]:
        """The lowest real value of the grid, per entry."""
        levels = (self.qmin - self.zero_point).astype(np.float64)
        return levels * self.scale.astype(np.float64)

    @property
    def max(self) -> npt.NDArray[np.float64]:
        levels = (self.qmax - self.zero_point).astype(np.float64)
        return levels * self.scale.astype(np.float64)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantParams):
            return NotImplemented
        return (
            (self.dtype, self.qmin, self.qmax, self.axis) == (other.dtype, other.qmin, other.qmax, other.axis)
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )

    __hash__ = None  # type: ignore[assignment]


def activation_params(lo: float, hi: float) -> QuantParams:
    """Asymmetric int8 parameters for a calibrated range ``[lo, hi]``."""
    lo = min(float(lo), 0.0)
    hi = max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"cannot quantize a tensor with range [{lo}, {hi}]")
    if hi - lo < MIN_SPAN:
        hi = lo + MIN_SPAN
    exact_scale = (hi - lo) / 255.0  # the zero point comes from the exact scale; the stored one is float32
    zero_point = int(np.clip(np.round(-lo / exact_scale) - 128, INT8_MIN, INT8_MAX))
    scale = np.float32(exact_scale)
    return QuantParams("int8", np.array([scale], np.float32), np.array([zero_point], np.int64), INT8_MIN, INT8_MAX)


def weight_params(weight: npt.NDArray[np.floating], axis: int | None) -> QuantParams:
    """Symmetric int8 parameters for a weight, per channel along ``axis`` or per tensor (``axis=None``)."""
    w = np.abs(np.asarray(weight, np.float64))
    if axis is None:
        absmax = np.array([w.max(initial=0.0)])
    else:
        others = tuple(i for i in range(w.ndim) if i != axis)
        absmax = w.max(axis=others, initial=0.0).reshape(-1)
    return weight_params_from_absmax(absmax, axis)


WEIGHT_CANDIDATES = 48  # clipping levels tried per channel by weight_params_mse
WEIGHT_MIN_CLIP = 0.5  # the smallest, as a fraction of the channel's largest |w|


def weight_params_mse(weight: npt.NDArray[np.floating], axis: int | None) -> QuantParams:
    """Symmetric int8 parameters whose clipping level minimises the squared rounding and clipping error of the
    weight, per channel along ``axis`` (``mmse``): a channel with one outlying weight gives up that weight's
    exactness for finer levels for all the others. Candidates run from max|w| down to half of it."""
    w = np.asarray(weight, np.float64)
    rows = w.reshape(1, -1) if axis is None else np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    absmax = np.maximum(np.abs(rows).max(axis=1, initial=0.0), MIN_SPAN)
    best, best_err = absmax.copy(), np.full(absmax.shape, np.inf)
    for fraction in np.linspace(1.0, WEIGHT_MIN_CLIP, WEIGHT_CANDIDATES):
        clip = absmax * fraction
        scale = (clip / WEIGHT_LEVEL).astype(np.float32).astype(np.float64)[:, None]
        q = np.clip(np.round(rows / scale), -WEIGHT_LEVEL, WEIGHT_LEVEL)
        err = ((rows - q * scale) ** 2).sum(axis=1)
        better = err < best_err
        best[better], best_err[better] = clip[better], err[better]
    return weight_params_from_absmax(best, axis)


def weight_params_from_absmax(absmax: npt.NDArray[np.float64], axis: int | None) -> QuantParams:
    absmax = np.maximum(np.asarray(absmax, np.float64), MIN_SPAN)
    scale = (absmax / WEIGHT_LEVEL).astype(np.float32)
    return QuantParams("int8", scale, np.zeros(scale.shape, np.int64), -WEIGHT_LEVEL, WEIGHT_LEVEL, axis)


def bias_params(input_scale: np.float32, weight: QuantParams) -> QuantParams:
    """int32 bias parameters at ``s_in * s_w``, computed in float32 as the integer kernels do.

    A bias is 1-D, one entry per output channel: per-channel weights give a per-channel bias along axis 0."""
    scale = (np.float32(input_scale) * weight.scale).astype(np.float32)
    axis = None if weight.axis is None else 0
    return QuantParams("int32", scale, np.zeros(scale.shape, np.int64), INT32_MIN, INT32_MAX, axis)


def _broadcast(values: npt.NDArray[np.float64], params: QuantParams, ndim: int) -> npt.NDArray[np.float64]:
    """Per-tensor values as a scalar, per-channel values shaped to broadcast along ``params.axis``."""
    if params.axis is None or ndim == 0:
        return values.reshape(()) if values.size == 1 else values
    shape = [1] * ndim
    shape[params.axis] = -1
    return values.reshape(shape)


def quantize_array(x: npt.ArrayLike, params: QuantParams) -> npt.NDArray[np.signedinteger[Any]]:
    """Round to the grid (half to even, like QuantizeLinear) and saturate; int8 or int32."""
    arr = np.asarray(x, np.float64)
    scale = _broadcast(params.scale.astype(np.float64), params, arr.ndim)
    zp = _broadcast(params.zero_point.astype(np.float64), params, arr.ndim)
    q = np.clip(np.round(arr / scale) + zp, params.qmin, params.qmax)
    out: npt.NDArray[np.signedinteger[Any]] = q.astype(np.int32 if params.dtype == "int32" else np.int8)
    return out


def dequantize_array(q: npt.ArrayLike, params: QuantParams) -> npt.NDArray[np.float32]:
    arr = np.asarray(q, np.float64)
    scale = _broadcast(params.scale.astype(np.float64), params, arr.ndim)
    zp = _broadcast(params.zero_point.astype(np.float64), params, arr.ndim)
    out: npt.NDArray[np.float32] = ((arr - zp) * scale).astype(np.float32)
    return out
