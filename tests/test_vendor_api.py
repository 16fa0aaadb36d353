"""The vendor's API surface, spelled as vendor scripts spell it: every RKNN method with RKNN-Toolkit2 2.5.0's
parameters, order and defaults; positional calls; flat and nested mean/std; data_format as a string or a list;
inputs as one array or a list; and every config() parameter either changing the build or refused out loud.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from vendor_fixtures import SIZE, example_folder, images, small_classifier

from rkfarm import RKNN
from rkfarm.errors import ConfigError, NotSupportedError
from rkfarm.quant import table_from_qdq
from rkfarm_proto.package import ModelPackage

_ = inspect.Parameter.empty
# RKNN-Toolkit2 2.5.0, rknn/api/rknn.py: each method's parameters and defaults, in order (`_`: required)
VENDOR_SIGNATURES: dict[str, list[tuple[str, Any]]] = {
    "__init__": [("verbose", False), ("verbose_file", None)],
    "load_tensorflow": [("tf_pb", _), ("inputs", _), ("input_size_list", _), ("outputs", _), ("input_is_nchw", False)],
    "load_caffe": [("model", _), ("blobs", None), ("input_name", None)],
    "load_tflite": [("model", _), ("input_is_nchw", False)],
    "load_onnx": [("model", _), ("inputs", None), ("input_size_list", None), ("input_initial_val", None),
                  ("outputs", None)],
    "load_darknet": [("model", _), ("weight", _)],
    "load_pytorch": [("model", _), ("input_size_list", _)],
    "build": [("do_quantization", True), ("dataset", None), ("rknn_batch_size", None), ("auto_hybrid", False)],
    "hybrid_quantization_step1": [("dataset", "dataset.txt"), ("rknn_batch_size", None), ("proposal", False),
                                  ("proposal_dataset_size", 1), ("custom_hybrid", None)],
    "hybrid_quantization_step2": [("model_input", _), ("data_input", _), ("model_quantization_cfg", _)],
    "export_rknn": [("export_path", _)],
    "load_rknn": [("path", _)],
    "accuracy_analysis": [("inputs", _), ("output_dir", "./snapshot"), ("target", None), ("device_id", None)],
    "init_runtime": [("target", None), ("device_id", None), ("perf_debug", False), ("eval_mem", False),
                     ("async_mode", False), ("core_mask", 0), ("fallback_prior_device", "cpu")],
    "inference": [("inputs", _), ("data_format", None), ("inputs_pass_through", None), ("get_frame_id", False)],
    "eval_perf": [("is_print", True), ("fix_freq", True)],
    "eval_memory": [("is_print", True)],
    "list_devices": [],
    "get_sdk_version": [],
    "reg_custom_op": [("custom_op", _)],
    "optimize_onnx": [("model", _), ("optimized_path", None), ("passes_enable", None), ("inputs_for_dump", None)],
    "codegen": [("output_path", _), ("inputs", None), ("overwrite", False)],
    "clear_op_cache": [],
    "release": [],
    # RKNN-Toolkit2 1.x; kept by scripts such as functions/npu_device_test
    "export_encrypted_rknn_model": [("input_model", _), ("output_model", None), ("crypt_level", 1)],
}  # fmt: skip
CONFIG_PARAMETERS = [
    ("mean_values", None), ("std_values", None), ("quantized_dtype", "w8a8"), ("quantized_algorithm", "normal"),
    ("quantized_method", "channel"), ("quantized_hybrid_level", 0), ("target_platform", None),
    ("quant_img_RGB2BGR", False), ("float_dtype", "float16"), ("optimization_level", 3), ("custom_string", None),
    ("remove_weight", False), ("compress_weight", False), ("inputs_yuv_fmt", None), ("single_core_mode", False),
    ("dynamic_input", None), ("model_pruning", False), ("op_target", None), ("quantize_weight", False),
    ("remove_reshape", False), ("sparse_infer", False), ("mini_rknn", False), ("enable_flash_attention", False),
    ("auto_hybrid_cos_thresh", 0.98), ("auto_hybrid_euc_thresh", None), ("memory_plan_strategy", "BestFit"),
    ("compute_order", "WidthFirst"), ("compiler_control_file", None),
]  # fmt: skip


@pytest.mark.parametrize("method", sorted(VENDOR_SIGNATURES))
def test_every_method_has_the_vendors_parameters(method: str) -> None:
    params = list(inspect.signature(getattr(RKNN, method)).parameters.values())[1:]
    vendor = [(p.name, p.default) for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert vendor == VENDOR_SIGNATURES[method]
    # rkfarm's own additions come after the vendor's, by keyword only, so no vendor call can reach them
    extra = [p for p in params if p.kind is not p.POSITIONAL_OR_KEYWORD]
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in extra), extra


def test_config_has_the_vendors_parameters_in_order() -> None:
    params = list(inspect.signature(RKNN.config).parameters.values())[1:]
    assert [(p.name, p.default) for p in params] == CONFIG_PARAMETERS


def test_npu_core_constants() -> None:
    cores = {"AUTO": 0x0, "0": 0x1, "1": 0x2, "2": 0x4, "0_1": 0x3, "0_1_2": 0x7, "ALL": 0xFFFF}
    assert {name: getattr(RKNN, f"NPU_CORE_{name}") for name in cores} == cores


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = example_folder(tmp_path_factory.mktemp("vendor_api"), count=6, seed=21)
    small_classifier(root / "dead.onnx", dead_channel=True)
    return root


def build(work: Path, model: str = "small.onnx", *args: Any, **config: Any) -> RKNN:
    """config(**config), load_onnx, build(*args) in the vendor's order; returns the object, built."""
    rknn = RKNN()
    assert rknn.config(**config) == 0, rknn.last_error
    assert rknn.load_onnx(str(work / model)) == 0, rknn.last_error
    assert rknn.build(*args) == 0, rknn.last_error
    return rknn


def package_of(rknn: RKNN) -> ModelPackage:
    assert rknn.package is not None
    return rknn.package


def payload_of(rknn: RKNN) -> onnx.ModelProto:
    return onnx.load_from_string(package_of(rknn).payload)


Check = Callable[[Path], None]
_MEAN = [[127.5] * 3]


def _inputs(work: Path, **config: Any) -> Any:
    return package_of(build(work, "small.onnx", False, **config)).header.inputs[0]


def _header(work: Path, *args: Any, **config: Any) -> Any:
    return package_of(build(work, "small.onnx", *args, **config)).header


def _scales(work: Path, **config: Any) -> dict[str, float]:
    table = table_from_qdq(payload_of(build(work, "small.onnx", True, str(work / "dataset.txt"), **config)))
    return {name: float(np.max(p.scale)) for name, p in table.items()}


def _largest_weight_scale(work: Path, **config: Any) -> int:
    """The most values any DequantizeLinear scale holds: 1 per tensor, the channel count per channel."""
    model = payload_of(build(work, "small.onnx", True, str(work / "dataset.txt"), **config))
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    return max(sizes.get(n.input[1], 1) for n in model.graph.node if n.op_type == "DequantizeLinear")


def _weight_types(work: Path, **config: Any) -> set[int]:
    return {t.data_type for t in payload_of(build(work, "small.onnx", False, **config)).graph.initializer}


def _ops(work: Path, **config: Any) -> set[str]:
    return {n.op_type for n in payload_of(build(work, "small.onnx", False, **config)).graph.node}


def _hybrid_layers(work: Path, **config: Any) -> int:
    rknn = build(work, "small.onnx", True, str(work / "dataset.txt"), None, True, **config)
    assert rknn.hybrid_result is not None
    return len(rknn.hybrid_result.float_layers)


# parameter -> how a non-default value changes the build (compared with the default build)
CHANGES: dict[str, Check] = {
    "mean_values": lambda w: _check(list(_inputs(w, mean_values=[1, 2, 3]).mean_values) == [1, 2, 3]),
    "std_values": lambda w: _check(list(_inputs(w, std_values=[[2, 4, 8]]).std_values) == [2, 4, 8]),
    "quantized_algorithm": lambda w: _check(_scales(w, quantized_algorithm="mmse") != _scales(w)),
    "quantized_method": lambda w: _check(
        _header(w, True, str(w / "dataset.txt"), quantized_method="layer").quantization.method == "layer"
        and _largest_weight_scale(w, quantized_method="layer") == 1 < _largest_weight_scale(w)
    ),
    "target_platform": lambda w: _check(_header(w, False, target_platform="rk3566").target_platform == "rk3566"),
    "quant_img_RGB2BGR": lambda w: _check(
        _header(w, False, quant_img_RGB2BGR=True).inputs[0].quant_img_rgb2bgr
        and _scales(w, mean_values=[0, 0, 0], std_values=[1, 2, 4], quant_img_RGB2BGR=True)["image"]
        != _scales(w, mean_values=[0, 0, 0], std_values=[1, 2, 4])["image"]
    ),
    "float_dtype": lambda w: _check(
        _weight_types(w, float_dtype="float32") == {onnx.TensorProto.FLOAT}
        and onnx.TensorProto.FLOAT16 in _weight_types(w)
    ),
    "optimization_level": lambda w: _check(
        "BatchNormalization" in _ops(w, optimization_level=0) and "BatchNormalization" not in _ops(w)
    ),
    "custom_string": lambda w: _check(_header(w, False, custom_string="board A").custom_string == "board A"),
    "single_core_mode": lambda w: _check(_header(w, False, single_core_mode=True).single_core),
    "model_pruning": lambda w: _check(
        package_of(build(w, "dead.onnx", False, model_pruning=True)).header.weight_bytes
        < package_of(build(w, "dead.onnx", False)).header.weight_bytes
    ),
    "quantize_weight": lambda w: _check(_header(w, False, quantize_weight=True).quantization.weights_only),
    "dynamic_input": lambda w: _check(
        [list(i.dims) for i in _header(w, False, dynamic_input=[[[1, 3, SIZE, SIZE]]]).shape_sets[0].inputs]
        == [[1, 3, SIZE, SIZE]]
    ),
    "auto_hybrid_cos_thresh": lambda w: _check(
        _hybrid_layers(w, auto_hybrid_cos_thresh=0.5) == 0 < _hybrid_layers(w, auto_hybrid_cos_thresh=1.0)
    ),
    "auto_hybrid_euc_thresh": lambda w: _check(
        _hybrid_layers(w, auto_hybrid_cos_thresh=0.5, auto_hybrid_euc_thresh=1e-9) > 0
    ),
}  # fmt: skip
# parameter -> a documented non-default value that rkfarm refuses (NotSupportedError says why)
REFUSED: dict[str, Any] = {
    "quantized_dtype": "w8a16",
    "quantized_hybrid_level": 1,
    "remove_weight": True,
    "compress_weight": True,
    "inputs_yuv_fmt": ["nv12"],
    "op_target": {"conv1": "cpu"},
    "remove_reshape": True,
    "sparse_infer": True,
    "mini_rknn": True,
    "enable_flash_attention": True,
    "memory_plan_strategy": "GreedyByLifetime",
    "compute_order": "DepthFirst",
    "compiler_control_file": "control.json",
}


def _check(ok: bool) -> None:
    assert ok


def test_every_config_parameter_is_covered() -> None:
    assert sorted([*CHANGES, *REFUSED]) == sorted(name for name, _ in CONFIG_PARAMETERS)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_config_parameter_changes_the_build(name: str, work: Path) -> None:
    CHANGES[name](work)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_config_parameter_is_refused(name: str) -> None:
    rknn = RKNN()
    assert rknn.config(**{name: REFUSED[name]}) == -1
    assert isinstance(rknn.last_error, NotSupportedError) and name in str(rknn.last_error)
    with pytest.raises(NotSupportedError, match=name):
        RKNN(raise_errors=True).config(**{name: REFUSED[name]})


def test_config_positional_as_the_vendor_allows(work: Path) -> None:
    rknn = RKNN()
    assert rknn.config([[1, 2, 3]], [[4, 5, 6]], "w8a8", "normal", "channel", 0, "RK3588") == 0
    assert rknn.load_onnx(str(work / "small.onnx")) == 0 and rknn.build(False) == 0
    header = package_of(rknn).header
    assert list(header.inputs[0].mean_values) == [1, 2, 3] and list(header.inputs[0].std_values) == [4, 5, 6]
    assert header.target_platform == "rk3588"
    assert rknn.config(None, None, target_platform="rk3566", mean_values=None) == -1  # given twice
    assert isinstance(rknn.last_error, ConfigError) and "mean_values" in str(rknn.last_error)


def test_flat_and_nested_mean_std_build_the_same(work: Path) -> None:
    flat = package_of(build(work, "small.onnx", False, mean_values=[1, 2, 3], std_values=[4, 5, 6]))
    nested = package_of(build(work, "small.onnx", False, mean_values=[[1, 2, 3]], std_values=[[4, 5, 6]]))
    assert flat.header.inputs == nested.header.inputs and flat.payload == nested.payload


def test_inference_spellings(work: Path) -> None:
    rknn = build(work, "small.onnx", False, mean_values=_MEAN, std_values=_MEAN)
    assert rknn.init_runtime(None, None, False, False) == 0
    image = images(1, seed=4)[0]
    want = rknn.inference(inputs=[image])
    assert want is not None
    batched = image[np.newaxis]
    nchw = np.ascontiguousarray(batched.transpose(0, 3, 1, 2))
    preprocessed = ((nchw.astype(np.float32) - 127.5) / 127.5).astype(np.float32)
    spellings: dict[str, list[np.ndarray] | None] = {
        "one array": rknn.inference(batched),
        "list, nhwc string": rknn.inference([batched], data_format="nhwc"),
        "list, nhwc list": rknn.inference([batched], data_format=["nhwc"]),
        "nchw": rknn.inference([nchw], data_format="nchw"),
        "nchw list": rknn.inference(inputs=[nchw], data_format=["nchw"]),
        "pass-through": rknn.inference([preprocessed], None, [1]),
        "positional, all four": rknn.inference([batched], None, None, False),
    }
    for spelling, got in spellings.items():
        assert got is not None, spelling
        np.testing.assert_allclose(got[0], want[0], atol=1e-6, err_msg=spelling)
    assert rknn.inference([image], "nwhc") is None  # a misspelt layout is an error, not a guess
    assert "data_format" in str(rknn.last_error)
    rknn.release()


def test_positional_calls_across_the_api(work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RKFARM_FARM_KEY_FILE", str(tmp_path / "farm.key"))
    rknn = RKNN(True, str(tmp_path / "log.txt"))
    assert rknn.config(_MEAN, _MEAN) == 0
    assert rknn.load_onnx(str(work / "small.onnx"), None, None, None, None) == 0
    assert rknn.build(True, str(work / "dataset.txt"), None, False) == 0
    assert rknn.accuracy_analysis(str(work / "cal0.png"), "./snap", None, None) == 0
    assert (tmp_path / "snap" / "golden" / "prob.txt").is_file()
    assert rknn.export_rknn("./m.rknn") == 0
    assert rknn.export_encrypted_rknn_model("./m.rknn", "./m.crypt.rknn", 2) == 0
    assert rknn.init_runtime(None, None, True, True, False, RKNN.NPU_CORE_0, "cpu") == 0
    assert rknn.eval_perf(False, True) is not None
    memory = rknn.eval_memory(False)
    assert memory is not None and {"weight_memory", "internal_memory", "total_memory"} <= set(memory)
    assert isinstance(rknn.get_sdk_version(), str)
    assert rknn.clear_op_cache() is None
    rknn.release()
    rknn.release()  # twice is harmless, as with the vendor
    assert (tmp_path / "log.txt").is_file()

    step = RKNN()
    assert step.config(mean_values=_MEAN, std_values=_MEAN) == 0
    assert step.load_onnx(str(work / "small.onnx")) == 0
    assert step.hybrid_quantization_step1(str(work / "dataset.txt"), None, False, 1, None) == 0
    two = RKNN()
    assert two.hybrid_quantization_step2("small.model", "small.data", "small.quantization.cfg") == 0
    assert two.accuracy_analysis([str(work / "cal1.png")], None) == 0
    assert two.export_rknn("./hybrid.rknn") == 0
    step.release()
    two.release()


@pytest.mark.parametrize(
    ("method", "args"),
    [("optimize_onnx", ("m.onnx",))],
)
def test_features_rkfarm_lacks_fail_with_the_reason(method: str, args: tuple[Any, ...]) -> None:
    rknn = RKNN()
    assert getattr(rknn, method)(*args) == -1
    assert isinstance(rknn.last_error, NotSupportedError) and "not supported" in str(rknn.last_error)


def test_a_failed_config_stops_the_build(work: Path) -> None:
    """The vendor raises from config(); rkfarm returns -1 and then refuses to build with the old settings."""
    rknn = RKNN()
    assert rknn.config(mean_values=_MEAN, std_values=_MEAN) == 0
    assert rknn.config(quantized_algorithm="mmes") == -1  # a typo
    assert rknn.load_onnx(str(work / "small.onnx")) == 0
    assert rknn.build(do_quantization=True, dataset=str(work / "dataset.txt")) == -1
    assert "config() call failed" in str(rknn.last_error) and "mmes" in str(rknn.last_error)
    assert rknn.config(quantized_algorithm="mmse") == 0
    assert rknn.build(do_quantization=True, dataset=str(work / "dataset.txt")) == 0
    assert package_of(rknn).header.quantization.algorithm == "mmse"
