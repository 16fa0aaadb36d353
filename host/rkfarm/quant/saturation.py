"""Saturating activations: the part of a tensor's range that its only readers ignore.

A tensor read only by one activation region (``plan``: element-wise ops of one tensor — HardSwish, HardSigmoid,
SiLU, Relu, Clip, spelled as ops or as Add/Clip/Mul/Div) often feeds a function that is flat beyond some value:
HardSwish is 0 for x <= -3, HardSigmoid (0.2, 0.5) is 0 below -2.5 and 1 above 2.5, ReLU6 is 0 below 0 and 6
above 6, and SiLU (``x * sigmoid(x)``) is within 0.02 of 0 below -5.5. Values beyond those points need no int8
levels: the region computes the same outputs (or outputs within an eighth of their own int8 step) whether they
are represented or saturated at the point. So the tensor's range is clamped there before its range is chosen, and
its 256 levels go to the part that matters. On the PP-OCR models a HardSwish input's calibrated minimum was -9.3
where HardSwish is flat below -3 (the vendor's toolkit clamps these too); on YOLOv8n a SiLU input ranged over
[-55.8, 39.0], its int8 step 0.37 where SiLU bends most.

The points are found by evaluating the region's ops in float64 (numpy, the ONNX definitions) on a fine grid over
the tensor's observed range: the clamp is the last grid point up to which every output the region hands on stays
within its tolerance of the output at the point. Regions with an op not written here, or a constant operand that
is not a scalar (one value per channel), are left alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

from rkfarm.quant.plan import QuantPlan

log = logging.getLogger(__name__)

GRID = 2**16 + 1  # points over the observed range: 256x finer than the int8 grid
TOLERANCE = 0.125  # of an output's int8 step over its observed range: how far clamping may move the output
Range = tuple[float, float]
Values = npt.NDArray[np.float64]


def _clip(x: Values, lo: Values | None, hi: Values | None) -> Values:
    out = x
    if lo is not None:
        out = np.maximum(out, lo)
    if hi is not None:
        out = np.minimum(out, hi)
    return out


def _hard_sigmoid(x: Values, alpha: float, beta: float) -> Values:
    out: Values = np.clip(alpha * x + beta, 0.0, 1.0)
    return out


def _sigmoid(x: Values) -> Values:
    out: Values = 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|
    return out


_UNARY: dict[str, Callable[[Values], Values]] = {
    "Relu": lambda x: np.maximum(x, 0.0),
    "Neg": lambda x: -x,
    "Abs": np.abs,
    "Sigmoid": _sigmoid,
    "Tanh": np.tanh,
    "Softplus": lambda x: np.logaddexp(0.0, x),
}
_BINARY: dict[str, Callable[[Values, Values], Values]] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
}


def _evaluate(node: onnx.NodeProto, args: list[Values | None]) -> Values | None:
    """One op on the grid; None if it is not written here."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    x = args[0]
    if x is None:
        return None
    if op in _UNARY:
        return _UNARY[op](x)
    if op in _BINARY and len(args) == 2 and args[1] is not None:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return _BINARY[op](x, args[1])
    if op == "Clip":
        lo = args[1] if len(args) > 1 else None
        hi = args[2] if len(args) > 2 else None
        if "min" in attrs or "max" in attrs:  # opset < 11
            lo = np.asarray(attrs.get("min", -np.inf), np.float64)
            hi = np.asarray(attrs.get("max", np.inf), np.float64)
        return _clip(x, lo, hi)
    if op == "HardSigmoid":
        return _hard_sigmoid(x, float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5)))
    if op == "HardSwish":
        return x * _hard_sigmoid(x, 1.0 / 6.0, 0.5)
    if op == "LeakyRelu":
        alpha = float(attrs.get("alpha", 0.01))
        out: Values = np.where(x >= 0, x, alpha * x)
        return out
    return None


def _scalar_constants(model: onnx.ModelProto) -> dict[str, Values]:
    out: dict[str, Values] = {}
    for init in model.graph.initializer:
        if int(np.prod(init.dims)) == 1 and init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            out[init.name] = numpy_helper.to_array(init).astype(np.float64).reshape(())
    return out


def flat_beyond(
    model: onnx.ModelProto,
    nodes: list[int],
    root: str,
    leaving: Mapping[str, float],
    lo: float,
    hi: float,
    constants: Mapping[str, Values] | None = None,
) -> Range:
    """``(a, b)``: for every value of ``root`` below ``a``, the region of ``nodes`` (a function of ``root``) gives
    outputs within their tolerance of its outputs at ``a``, and likewise above ``b``; ``(lo, hi)`` where it is flat
    nowhere. ``leaving``: the outputs the region hands on, each with its tolerance (0: exactly equal)."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return lo, hi
    constants = _scalar_constants(model) if constants is None else constants
    grid: Values = np.linspace(lo, hi, GRID, dtype=np.float64)
    values: dict[str, Values] = {root: grid}
    for index in nodes:
        node = model.graph.node[index]
        args: list[Values | None] = []
        for name in node.input:
            if not name:
                args.append(None)
            elif name in values:
                args.append(values[name])
            elif name in constants:
                args.append(constants[name])
            else:
                return lo, hi  # a per-channel constant, or an input the region does not compute
        result = _evaluate(node, args)
        if result is None or len(node.output) != 1:
            return lo, hi
        values[node.output[0]] = np.broadcast_to(result, grid.shape)
    if not leaving or any(name not in values for name in leaving):
        return lo, hi
    lower = np.ones(GRID, bool)  # lower[i]: clamping below grid[i] moves no output by more than its tolerance
    upper = np.ones(GRID, bool)
    for name, tolerance in leaving.items():
        v = values[name]
        if not np.all(np.isfinite(v)):
            return lo, hi
        lower &= (np.maximum.accumulate(v) - v <= tolerance) & (v - np.minimum.accumulate(v) <= tolerance)
        back_max = np.maximum.accumulate(v[::-1])[::-1]
        back_min = np.minimum.accumulate(v[::-1])[::-1]
        upper &= (back_max - v <= tolerance) & (v - back_min <= tolerance)
    first = int(np.flatnonzero(lower)[-1])  # lower[0] and upper[-1] always hold
    last = int(np.flatnonzero(upper)[0])
    if first >= last:
        return lo, hi  # flat (within tolerance) everywhere: nothing to gain, keep the observed range
    return float(grid[first]), float(grid[last])


def _tolerance(observed: Range | None) -> float:
    """How far an output may move when its region's input is clamped: an eighth of its int8 step over its
    observed range (the step ``normal`` gives it; 0 when the output was not observed)."""
    if observed is None or not all(np.isfinite(observed)):
        return 0.0
    span = max(observed[1], 0.0) - min(observed[0], 0.0)
    return TOLERANCE * span / 255.0


def saturation_bounds(model: onnx.ModelProto, plan: QuantPlan, observed: Mapping[str, Range]) -> dict[str, Range]:
    """Per parameter group whose every tensor feeds only a saturating region: the clamp ``(a, b)``, with
    ``a <= 0 <= b`` (an int8 range always holds 0); -inf / inf for an end that is not clamped. ``observed``: each
    collected tensor's min/max over the calibration set."""
    constants = _scalar_constants(model)
    bounds: dict[str, Range] = {}
    for rep, members in plan.groups.items():
        if not all(t in plan.saturating and t in observed for t in members):
            continue
        a, b = np.inf, -np.inf  # the loosest member's: the group may clamp only where every member is flat
        for t in members:
            lo, hi = observed[t]
            nodes, leaving = plan.saturating[t]
            tolerances = {name: _tolerance(observed.get(name)) for name in leaving}
            ta, tb = flat_beyond(model, nodes, t, tolerances, lo, hi, constants)
            a = min(a, ta if ta > lo else -np.inf)
            b = max(b, tb if tb < hi else np.inf)
        a, b = min(a, 0.0), max(b, 0.0)
        if np.isfinite(a) or np.isfinite(b):
            bounds[rep] = (float(a), float(b))
            log.debug("%s: its readers are flat outside [%.4g, %.4g]", rep, a, b)
    return bounds


CLAMPS_KEY = "rkfarm.clamps"  # metadata of a QDQ model: tensor -> the bounds its readers are flat beyond


def record_clamps(model: onnx.ModelProto, clamps: Mapping[str, Range]) -> None:
    """Write ``clamps`` into ``model``'s metadata (replacing any), so that whoever compares the model's tensors
    with the float model's (accuracy analysis, hybrid search) compares what the readers see."""
    entries = [p for p in model.metadata_props if p.key != CLAMPS_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(entries)
    if clamps:
        value = {t: [float(lo), float(hi)] for t, (lo, hi) in sorted(clamps.items())}
        model.metadata_props.add(key=CLAMPS_KEY, value=json.dumps(value))


def read_clamps(model: onnx.ModelProto) -> dict[str, Range]:
    """The clamps ``record_clamps`` wrote into ``model`` (none for a model without them)."""
    entry = next((p.value for p in model.metadata_props if p.key == CLAMPS_KEY), None)
    if entry is None:
        return {}
    return {t: (float(lo), float(hi)) for t, (lo, hi) in json.loads(entry).items()}
