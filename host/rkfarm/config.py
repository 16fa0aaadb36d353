"""The options of ``RKNN.config()``: the vendor's parameters and defaults, declared once, validated here."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rkfarm.errors import ConfigError, NotSupportedError
from rkfarm_proto.platforms import PLATFORMS, normalize_platform

QUANTIZED_DTYPES = {"w8a8": "w8a8", "asymmetric_quantized-8": "w8a8"}
QUANTIZED_ALGORITHMS = ("normal", "mmse", "kl_divergence")
QUANTIZED_METHODS = ("channel", "layer")
OPTIMIZATION_LEVELS = (0, 1, 2, 3)
FLOAT_DTYPES = ("float16", "float32")  # float32 is an rkfarm extension: the vendor's NPU has no fp32 mode
MAX_CUSTOM_STRING = 1024
# Values the vendor accepts that rkfarm does not implement, refused with the reason rather than mistaken for typos.
_VENDOR_ONLY_VALUES: dict[str, tuple[tuple[object, ...], str]] = {
    "quantized_dtype": (
        ("w8a16", "w16a16i", "w16a16i_dfp", "w4a16", "asymmetric_quantized-16", "dynamic_fixed_point-i8",
         "dynamic_fixed_point-i16"),
        "rkfarm implements w8a8 (also spelled 'asymmetric_quantized-8')",
    ),
    "quantized_algorithm": (("gdq",), "gdq is the vendor's algorithm for w4a16/w8a16, which rkfarm does not implement"),
    "float_dtype": (("bfloat16", "tfloat32"), "the payload computes in float16 or float32 on ONNX Runtime"),
}  # fmt: skip
# The vendor NPU compiler's own choices, with their default first: only the default is meaningful here.
MEMORY_PLAN_STRATEGIES = ("BestFit", "GreedyBySize", "GreedyByLifetime", "SlowPeakGrowth")
COMPUTE_ORDERS = ("WidthFirst", "DepthFirst")

# Vendor options that are valid but not implemented: the value that asks for them, and why not.
_NOT_SUPPORTED: dict[str, tuple[object, str]] = {
    "remove_weight": (True, "weight-less slave models are a vendor runtime feature with no ONNX equivalent"),
    "compress_weight": (True, "weight compression is specific to the vendor's .rknn format"),
    "sparse_infer": (True, "sparse inference needs the vendor NPU's sparse kernels"),
    "enable_flash_attention": (True, "flash attention is a vendor NPU kernel"),
    "remove_reshape": (True, "removing input/output Reshape is not implemented yet"),
    "mini_rknn": (True, "mini models are a format of the vendor's mini-runtime"),
}


@dataclass
class RknnConfig:
    """Every parameter of RKNN-Toolkit2 2.x ``config()``, with the vendor's defaults."""

    mean_values: list[list[float]] | None = None
    std_values: list[list[float]] | None = None
    quantized_dtype: str = "w8a8"
    quantized_algorithm: str = "normal"
    quantized_method: str = "channel"
    quantized_hybrid_level: int = 0
    target_platform: str | None = None
    quant_img_RGB2BGR: bool | list[bool] = False
    float_dtype: str = "float16"
    optimization_level: int = 3
    custom_string: str | None = None
    remove_weight: bool = False
    compress_weight: bool = False
    inputs_yuv_fmt: list[str] | None = None
    single_core_mode: bool = False
    dynamic_input: list[list[list[int]]] | None = None
    model_pruning: bool = False
    op_target: dict[str, str] | None = None
    quantize_weight: bool = False
    remove_reshape: bool = False
    sparse_infer: bool = False
    mini_rknn: bool = False
    enable_flash_attention: bool = False
    auto_hybrid_cos_thresh: float = 0.98
    auto_hybrid_euc_thresh: float | None = None
    memory_plan_strategy: str = MEMORY_PLAN_STRATEGIES[0]
    compute_order: str = COMPUTE_ORDERS[0]
    compiler_control_file: str | None = None
    extras: dict[str, Any] = field(default_factory=dict, repr=False)  # not a vendor parameter

    @classmethod
    def parameter_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "extras"]

    @classmethod
    def from_call(cls, base: RknnConfig | None, args: Sequence[Any], kwargs: dict[str, Any]) -> RknnConfig:
        """``config(*args, **kwargs)`` as the vendor takes it: positional arguments in the vendor's order."""
        names = cls.parameter_names()
        if len(args) > len(names):
            raise ConfigError(f"config() takes at most {len(names)} positional arguments, got {len(args)}")
        twice = [name for name in names[: len(args)] if name in kwargs]
        if twice:
            raise ConfigError(f"config() got {', '.join(map(repr, twice))} both by position and by name")
        return cls.from_kwargs(base, **dict(zip(names, args)), **kwargs)

    @classmethod
    def from_kwargs(cls, base: RknnConfig | None = None, **kwargs: Any) -> RknnConfig:
        """A validated config: ``base`` (or the defaults) updated with ``kwargs``."""
        names = cls.parameter_names()
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, names, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"unknown config parameter(s): {', '.join(hints)}")
        values = asdict(base) if base is not None else {}
        values.pop("extras", None)
        values.update(kwargs)
        try:
            cfg = cls(**values)
            cfg._validate()
        except (ConfigError, NotSupportedError):
            raise
        except (TypeError, ValueError) as exc:  # a value of the wrong type (often: positional arguments shifted)
            culprit = next((k for k in kwargs if _fails_alone(cls, k, kwargs[k])), None)
            what = f"{culprit}={kwargs[culprit]!r}" if culprit else "a parameter"
            raise ConfigError(
                f"config(): {what} is not a valid value ({exc}); positional arguments go in the vendor's order "
                f"({', '.join(names[:4])}, ...): pass them by name"
            ) from None
        return cfg

    def _validate(self) -> None:
        for name, (bad, why) in _NOT_SUPPORTED.items():
            if getattr(self, name) == bad:
                raise NotSupportedError(f"config({name}={bad!r}) is not supported by rkfarm: {why}")
        for name, (values, why) in _VENDOR_ONLY_VALUES.items():
            if getattr(self, name) in values:
                raise NotSupportedError(f"config({name}={getattr(self, name)!r}) is not supported by rkfarm: {why}")
        if isinstance(self.quantized_method, str) and self.quantized_method.startswith("group"):
            raise NotSupportedError(
                f"config(quantized_method={self.quantized_method!r}) is not supported by rkfarm: group quantization "
                "belongs to the vendor's w4a16, which rkfarm does not implement"
            )
        for name, choices in (("memory_plan_strategy", MEMORY_PLAN_STRATEGIES), ("compute_order", COMPUTE_ORDERS)):
            _one_of(name, getattr(self, name), choices)
            if getattr(self, name) != choices[0]:
                raise NotSupportedError(
                    f"config({name}={getattr(self, name)!r}) is not supported by rkfarm: it steers the vendor NPU "
                    f"compiler; ONNX Runtime plans and orders the payload itself (the default {choices[0]!r} is "
                    "accepted)"
                )
        if self.compiler_control_file is not None:
            raise NotSupportedError(
                "config(compiler_control_file=...) is not supported by rkfarm: it is a file for the vendor NPU compiler"
            )
        if not isinstance(self.single_core_mode, bool):
            raise ConfigError(f"single_core_mode must be True or False, got {self.single_core_mode!r}")
        self.mean_values = _per_input_numbers(self.mean_values, "mean_values")
        self.std_values = _per_input_numbers(self.std_values, "std_values")
        if self.std_values and any(v == 0 for row in self.std_values for v in row):
            raise ConfigError("std_values must not contain 0")
        if self.quantized_dtype not in QUANTIZED_DTYPES:
            raise NotSupportedError(
                f"quantized_dtype={self.quantized_dtype!r} is not supported; rkfarm implements w8a8 "
                "(also spelled 'asymmetric_quantized-8')"
            )
        self.quantized_dtype = QUANTIZED_DTYPES[self.quantized_dtype]
        _one_of("quantized_algorithm", self.quantized_algorithm, QUANTIZED_ALGORITHMS)
        _one_of("quantized_method", self.quantized_method, QUANTIZED_METHODS)
        if self.quantized_hybrid_level != 0:
            raise NotSupportedError(
                "quantized_hybrid_level is not supported; use hybrid_quantization_step1/step2 or auto_hybrid"
            )
        if self.target_platform is not None:
            platform = normalize_platform(str(self.target_platform))
            if platform is None:
                raise ConfigError(
                    f"target_platform {self.target_platform!r} is unknown; choose one of {', '.join(PLATFORMS)}"
                )
            self.target_platform = platform
        _one_of("float_dtype", self.float_dtype, FLOAT_DTYPES)
        if self.optimization_level not in OPTIMIZATION_LEVELS:
            raise ConfigError(f"optimization_level must be 0, 1, 2 or 3, got {self.optimization_level!r}")
        if self.custom_string is not None:
            if not isinstance(self.custom_string, str):
                raise ConfigError("custom_string must be a str")
            if len(self.custom_string) > MAX_CUSTOM_STRING:
                raise ConfigError(f"custom_string is longer than {MAX_CUSTOM_STRING} characters")
        if self.inputs_yuv_fmt is not None:
            raise NotSupportedError("inputs_yuv_fmt is not supported yet: convert YUV to RGB before inference")
        if self.dynamic_input is not None:
            self.dynamic_input = _shape_sets(self.dynamic_input)
        if self.op_target:
            raise NotSupportedError("op_target is not supported: an ONNX Runtime payload has no NPU/CPU split")
        if not 0.0 < float(self.auto_hybrid_cos_thresh) <= 1.0:
            raise ConfigError("auto_hybrid_cos_thresh must be in (0, 1]")
        if self.auto_hybrid_euc_thresh is not None and float(self.auto_hybrid_euc_thresh) <= 0:
            raise ConfigError("auto_hybrid_euc_thresh must be positive")

    def rgb2bgr_for(self, index: int) -> bool:
        flag = self.quant_img_RGB2BGR
        if isinstance(flag, (list, tuple)):
            return bool(flag[index]) if index < len(flag) else False
        return bool(flag)

    def as_record(self) -> dict[str, str]:
        """The non-default options as strings, recorded in the package header."""
        defaults = RknnConfig()
        return {
            name: repr(getattr(self, name))
            for name in self.parameter_names()
            if getattr(self, name) != getattr(defaults, name)
        }


def _fails_alone(cls: type[RknnConfig], name: str, value: Any) -> bool:
    """Whether ``name=value`` is refused by itself (to name the culprit of a failed config() call)."""
    try:
        values: dict[str, Any] = {name: value}
        cls(**values)._validate()
    except Exception:  # any refusal marks it
        return True
    return False


def _one_of(name: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is invalid; choose one of {', '.join(allowed)}")


def _per_input_numbers(value: object, name: str) -> list[list[float]] | None:
    """Accept the vendor's spellings: None, [m0, m1, m2] (one input) or [[...], [...]] (one list per input)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name} must be a list of numbers per input, e.g. [[123.675, 116.28, 103.53]]")
    rows = [value] if all(_is_number(v) for v in value) else value
    out: list[list[float]] = []
    for i, row in enumerate(rows):
        if isinstance(row, Mapping) or not isinstance(row, (list, tuple)) or not row:
            raise ConfigError(f"{name}[{i}] must be a non-empty list of numbers, got {row!r}")
        if not all(_is_number(v) and math.isfinite(float(v)) for v in row):
            raise ConfigError(f"{name}[{i}] must hold finite numbers, got {row!r}")
        out.append([float(v) for v in row])
    return out


def _shape_sets(value: object) -> list[list[list[int]]]:
    """``dynamic_input`` as the vendor writes it: ``[[in0_shape, in1_shape, ...], ...]``, one list per shape set
    with one shape per model input. Checked here: what needs no model (every set has as many shapes, each input
    the same rank in every set, positive int dims, no set twice). Against the model: at load_onnx and build."""
    example = "e.g. dynamic_input=[[[1, 3, 224, 224]], [[1, 3, 192, 192]]]"
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"dynamic_input must be a non-empty list of shape sets (one shape per input), {example}")
    sets: list[list[list[int]]] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, (list, tuple)) or not entry or not all(isinstance(s, (list, tuple)) for s in entry):
            raise ConfigError(
                f"dynamic_input[{index}] must be a list with one shape per model input, got {entry!r} ({example})"
            )
        shapes = []
        for shape in entry:
            if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
                raise ConfigError(f"dynamic_input[{index}]: shape {list(shape)!r} must be a list of positive ints")
            shapes.append([int(d) for d in shape])
        if sets and len(shapes) != len(sets[0]):
            raise ConfigError(
                f"dynamic_input[{index}] has {len(shapes)} shape(s) but dynamic_input[0] has {len(sets[0])}: "
                "every set gives one shape per model input"
            )
        for k, (shape, first) in enumerate(zip(shapes, sets[0] if sets else shapes)):
            if len(shape) != len(first):
                raise ConfigError(
                    f"dynamic_input[{index}]: input {k} has rank {len(shape)} ({shape}) but rank {len(first)} in "
                    f"dynamic_input[0] ({first}): only dim sizes may change between sets"
                )
        if shapes in sets:
            raise ConfigError(f"dynamic_input[{index}] repeats dynamic_input[{sets.index(shapes)}] ({shapes})")
        sets.append(shapes)
    return sets


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
