"""config(): every vendor parameter accepted, values validated, unsupported ones refused out loud."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from conftest import CLS_SIZE
from rkfarm import RKNN
from rkfarm.config import RknnConfig
from rkfarm.errors import ConfigError, NotSupportedError

VENDOR_PARAMETERS = [
    "mean_values",
    "std_values",
    "quantized_dtype",
    "quantized_algorithm",
    "quantized_method",
    "quantized_hybrid_level",
    "target_platform",
    "quant_img_RGB2BGR",
    "float_dtype",
    "optimization_level",
    "custom_string",
    "remove_weight",
    "compress_weight",
    "inputs_yuv_fmt",
    "single_core_mode",
    "dynamic_input",
    "model_pruning",
    "op_target",
    "quantize_weight",
    "remove_reshape",
    "sparse_infer",
    "mini_rknn",
    "enable_flash_attention",
    "auto_hybrid_cos_thresh",
    "auto_hybrid_euc_thresh",
    "memory_plan_strategy",
    "compute_order",
    "compiler_control_file",
]  # fmt: skip  (RKNN-Toolkit2 2.5.0's config(), in its order)


def test_signature_lists_every_vendor_parameter_with_vendor_defaults() -> None:
    sig = inspect.signature(RKNN.config)
    assert [p for p in sig.parameters if p != "self"] == VENDOR_PARAMETERS
    assert sig.parameters["quantized_dtype"].default == "w8a8"
    assert sig.parameters["float_dtype"].default == "float16"
    assert sig.parameters["optimization_level"].default == 3
    assert sig.parameters["auto_hybrid_cos_thresh"].default == 0.98


def test_defaults_are_accepted() -> None:
    with RKNN(raise_errors=True) as rknn:
        defaults = RknnConfig()
        assert rknn.config(**{name: getattr(defaults, name) for name in VENDOR_PARAMETERS}) == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"target_platform": "rk9999"}, ConfigError, "rk9999.*is unknown.*rk3588"),
        ({"mean_valus": [1]}, ConfigError, "did you mean 'mean_values'"),
        ({"quantized_algorithm": "magic"}, ConfigError, "normal, mmse, kl_divergence"),
        ({"quantized_dtype": "w16a16i"}, NotSupportedError, "w8a8"),
        ({"quantized_dtype": "int3"}, NotSupportedError, "w8a8"),
        ({"quantized_method": "group32"}, NotSupportedError, "w4a16"),
        ({"quantized_method": "tensor"}, ConfigError, "channel, layer"),
        ({"quantized_algorithm": "gdq"}, NotSupportedError, "gdq"),
        ({"float_dtype": "bfloat16"}, NotSupportedError, "bfloat16"),
        ({"float_dtype": "float64"}, ConfigError, "float16, float32"),
        ({"mini_rknn": True}, NotSupportedError, "mini"),
        ({"memory_plan_strategy": "GreedyBySize"}, NotSupportedError, "vendor NPU compiler"),
        ({"memory_plan_strategy": "Greedy"}, ConfigError, "BestFit, GreedyBySize"),
        ({"compute_order": "DepthFirst"}, NotSupportedError, "vendor NPU compiler"),
        ({"compute_order": "sideways"}, ConfigError, "WidthFirst, DepthFirst"),
        ({"compiler_control_file": "ctl.json"}, NotSupportedError, "compiler_control_file"),
        ({"single_core_mode": "yes"}, ConfigError, "True or False"),
        ({"optimization_level": 7}, ConfigError, "0, 1, 2 or 3"),
        ({"std_values": [[1, 0, 1]]}, ConfigError, "must not contain 0"),
        ({"mean_values": [["a"]]}, ConfigError, "finite numbers"),
        ({"remove_weight": True}, NotSupportedError, "remove_weight"),
        ({"compress_weight": True}, NotSupportedError, "compress_weight"),
        ({"dynamic_input": [[[1, 3, 224, 224]], [[1, 3, 224]]]}, ConfigError, "dynamic_input"),
        ({"op_target": {"1": "cpu"}}, NotSupportedError, "op_target"),
        ({"inputs_yuv_fmt": ["nv12"]}, NotSupportedError, "inputs_yuv_fmt"),
        ({"custom_string": "x" * 2000}, ConfigError, "longer than 1024"),
    ],
)
def test_bad_values_fail_clearly(kwargs: dict[str, object], error: type[Exception], pattern: str) -> None:
    with RKNN(raise_errors=True) as rknn, pytest.raises(error, match=pattern):
        rknn.config(**kwargs)
    with RKNN() as quiet:
        assert quiet.config(**kwargs) == -1


def test_vendor_spellings_are_normalised() -> None:
    cfg = RknnConfig.from_kwargs(
        mean_values=[0, 0, 0],
        std_values=[255, 255, 255],
        target_platform="RK3588",
        quantized_dtype="asymmetric_quantized-8",
    )
    assert cfg.mean_values == [[0.0, 0.0, 0.0]]
    assert cfg.std_values == [[255.0, 255.0, 255.0]]
    assert cfg.target_platform == "rk3588"
    assert cfg.quantized_dtype == "w8a8"


def test_config_calls_accumulate() -> None:
    cfg = RknnConfig.from_kwargs(target_platform="rk3566")
    cfg = RknnConfig.from_kwargs(cfg, float_dtype="float32")
    assert (cfg.target_platform, cfg.float_dtype) == ("rk3566", "float32")


def test_mean_std_checked_against_the_model(cls_onnx: Path) -> None:
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=[[1, 2, 3, 4]])
        rknn.load_onnx(str(cls_onnx), input_size_list=[CLS_SIZE])
        with pytest.raises(ConfigError, match=r"mean_values\[0\] has 4 values but input 'x'.*3 channels"):
            rknn.build(do_quantization=False)
        rknn.config(mean_values=[[1, 2, 3], [1, 2, 3]])
        with pytest.raises(ConfigError, match="2 entries but the model has 1 input"):
            rknn.build(do_quantization=False)


def test_custom_string_and_platform_reach_the_package(cls_onnx: Path) -> None:
    with RKNN(raise_errors=True) as rknn:
        rknn.config(target_platform="rk3566", custom_string="made by test")
        rknn.load_onnx(str(cls_onnx), input_size_list=[CLS_SIZE])
        rknn.build(do_quantization=False)
        assert rknn.package is not None
        assert rknn.package.header.target_platform == "rk3566"
        assert rknn.package.header.custom_string == "made by test"
        assert "custom_string" in rknn.package.header.build_options
