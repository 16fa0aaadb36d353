"""reg_custom_op (issue 13, item 1): the vendor's custom-op classes run in the simulator, through quantization
and analysis, and on an agent only from a module installed there and named at start-up."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from agent_fixtures import AgentProcess
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model
from quant_fixtures import cosine, write_dataset
from test_lite import run_agent_only

from rkfarm import RKNN
from rkfarm.custom_op import get_node_attr
from rkfarm.errors import ModelLoadError, RemoteError, RkfarmError
from rkfarm_agent.backends.onnxruntime import custom_ops
from rkfarm_proto.custom_ops import CUSTOM_OP_DOMAIN
from rkfarm_proto.package import pack

ALPHA = 0.5
SHAPE = [1, 3, 8, 8]
RNG = np.random.default_rng(0)
W = (RNG.standard_normal((3, 3, 3, 3)) * 0.4).astype(np.float32)


class cstDualResidual:  # noqa: N801 - the vendor's example names its classes after the op type
    op_type = "cstDualResidual"

    def shape_infer(self, node: Any, in_shapes: list[list[int]], in_dtypes: list[Any]) -> tuple[list[Any], list[Any]]:
        return in_shapes.copy(), in_dtypes.copy()

    def compute(self, node: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x, y = inputs
        alpha = get_node_attr(node, "alpha")
        return [x * alpha - y, y * alpha - x]


class CountingSigmoid:
    """Replaces ONNX's Sigmoid; counts its calls so the test sees that it, not ONNX Runtime's kernel, ran."""

    op_type = "Sigmoid"
    calls = 0

    def compute(self, node: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
        CountingSigmoid.calls += 1
        return [1.0 / (1.0 + np.exp(-inputs[0].astype(np.float64)))]


def _model(path: Path) -> Path:
    """x -> Conv -> a; cstDualResidual(a, x) -> (p, q); Sigmoid(p) + q -> y."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("cstDualResidual", ["a", "x"], ["p", "q"], name="dual", alpha=ALPHA),
        helper.make_node("Sigmoid", ["p"], ["s"], name="sig"),
        helper.make_node("Add", ["s", "q"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)], [numpy_helper.from_array(W, "w")],
    )  # fmt: skip
    model = make_model(graph, 17)
    onnx.save(model, str(path))  # as the vendor's example writes it: the cst node in the default domain
    return path


def _conv(x: np.ndarray) -> np.ndarray:
    """The model's 3x3 convolution (pad 1) in numpy, written out."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    a = np.zeros(x.shape)
    for i in range(8):
        for j in range(8):
            a[:, :, i, j] = np.einsum("bchw,ochw->bo", xp[:, :, i : i + 3, j : j + 3], W)
    return a


def _reference(x: np.ndarray) -> np.ndarray:
    """The same network in numpy, written out."""
    a = _conv(x)
    p, q = a * ALPHA - x, x * ALPHA - a
    return (1 / (1 + np.exp(-p)) + q).astype(np.float32)


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return _model(tmp_path / "custom.onnx")


def _images(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(count)]


def _normalised(image: np.ndarray) -> np.ndarray:
    return ((image.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[np.newaxis]


def _configured(model: Path, *ops: Any, **config: Any) -> RKNN:
    rknn = RKNN(raise_errors=True)
    rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3588", **config)
    for op in ops:
        assert rknn.reg_custom_op(op) == 0
    assert rknn.load_onnx(str(model)) == 0
    return rknn


def test_cst_and_replaced_ops_run_in_the_simulator_as_numpy_computes(model: Path) -> None:
    CountingSigmoid.calls = 0
    with _configured(model, cstDualResidual(), CountingSigmoid(), float_dtype="float32") as rknn:
        assert rknn.build(do_quantization=False) == 0
        package = rknn.package
        assert package is not None
        assert list(package.header.custom_ops) == ["Sigmoid", "cstDualResidual"]
        payload = onnx.load_from_string(package.payload)
        assert {n.name: n.domain for n in payload.graph.node if n.op_type in ("Sigmoid", "cstDualResidual")} == {
            "dual": CUSTOM_OP_DOMAIN, "sig": CUSTOM_OP_DOMAIN,
        }  # fmt: skip
        rknn.init_runtime()
        for image in _images(3, seed=1):
            (got,) = rknn.inference(inputs=[image])
            np.testing.assert_allclose(got, _reference(_normalised(image)), rtol=1e-5, atol=1e-5)
    assert CountingSigmoid.calls == 3


def test_float16_keeps_the_python_ops_in_float32(model: Path) -> None:
    with _configured(model, cstDualResidual()) as rknn:  # float16, the vendor's default
        assert rknn.build(do_quantization=False) == 0
        assert rknn.package is not None
        payload = onnx.load_from_string(rknn.package.payload)
        weights = [t for t in payload.graph.initializer if list(t.dims) == [3, 3, 3, 3]]
        assert weights and weights[0].data_type == TensorProto.FLOAT16
        rknn.init_runtime()
        image = _images(1, seed=2)[0]
        (got,) = rknn.inference(inputs=[image])
        assert cosine(got, _reference(_normalised(image))) > 0.9999


def test_a_model_with_custom_ops_quantizes_and_is_analysed(model: Path, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "cal", _images(16, seed=3))
    with _configured(model, cstDualResidual()) as rknn:
        assert rknn.build(do_quantization=True, dataset=str(dataset)) == 0
        assert rknn.package is not None
        payload = onnx.load_from_string(rknn.package.payload)
        dual = next(n for n in payload.graph.node if n.op_type == "cstDualResidual")
        producers = {o: n.op_type for n in payload.graph.node for o in n.output}
        # it computes in float: what it reads comes dequantized, its outputs are not its own int8 tensors
        assert {producers.get(i) for i in dual.input} == {"DequantizeLinear"}
        rknn.init_runtime()
        evaluation = _images(6, seed=4)
        worst = min(cosine(rknn.inference(inputs=[img])[0], _reference(_normalised(img))) for img in evaluation)
        assert worst > 0.98, worst
        sample = tmp_path / "sample.png"
        from PIL import Image

        Image.fromarray(evaluation[0]).save(sample)
        assert rknn.accuracy_analysis(inputs=[str(sample)], output_dir=tmp_path / "snapshot") == 0
        result = rknn.analysis_result
        assert result is not None
        names = {layer.name for layer in result.layers}
        assert {"p", "q"} & names or "dual" in " ".join(names), names


MODULE = """
import numpy as np
from rkfarm_agent.backends.onnxruntime.custom_ops import get_node_attr

class cstDualResidual:
    op_type = "cstDualResidual"

    def shape_infer(self, node, in_shapes, in_dtypes):
        return in_shapes.copy(), in_dtypes.copy()

    def compute(self, node, inputs):
        x, y = inputs
        alpha = get_node_attr(node, "alpha")
        return [x * alpha - y, y * alpha - x]
"""


@pytest.mark.slow
def test_an_agent_runs_custom_ops_only_from_its_installed_modules(
    model: Path, tmp_path: Path, make_agent: Callable[..., AgentProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "board_ops.py").write_text(textwrap.dedent(MODULE))
    marker = tmp_path / "imported"
    (site / "trap.py").write_text(f"open({str(marker)!r}, 'w').close()\n")  # must never be imported
    monkeypatch.setenv("PYTHONPATH", str(site))
    with _configured(model, cstDualResidual(), float_dtype="float32") as rknn:
        assert rknn.build(do_quantization=False) == 0
        rknn.init_runtime()
        image = _images(1, seed=5)[0]
        (want,) = rknn.inference(inputs=[image])
        assert rknn.package is not None
        package = rknn.package
        exported = tmp_path / "custom.rkfm"
        assert rknn.export_rknn(str(exported)) == 0

    with_ops = make_agent("--custom-ops", "board_ops")
    with RKNN(raise_errors=True) as remote:
        assert remote.load_rknn(str(exported)) == 0
        assert remote.init_runtime(target="rk3588", device_id=with_ops.address) == 0
        (got,) = remote.inference(inputs=[image])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    without = make_agent()
    with RKNN(raise_errors=True) as remote:
        assert remote.load_rknn(str(exported)) == 0
        with pytest.raises(RemoteError, match="cstDualResidual") as refused:
            remote.init_runtime(target="rk3588", device_id=without.address)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION

    # a package naming a module as its op type: refused by name, nothing imported, the agent still serves
    header = type(package.header)()
    header.CopyFrom(package.header)
    del header.custom_ops[:]
    header.custom_ops.extend(["trap", "cstDualResidual"])
    forged = tmp_path / "forged.rkfm"
    forged.write_bytes(pack(header, package.payload)[1])
    with RKNN(raise_errors=True) as remote:
        assert remote.load_rknn(str(forged)) == 0
        with pytest.raises(RemoteError, match="trap"):
            remote.init_runtime(target="rk3588", device_id=with_ops.address)
    assert not marker.exists()
    with RKNN(raise_errors=True) as remote:
        assert remote.load_rknn(str(exported)) == 0
        assert remote.init_runtime(target="rk3588", device_id=with_ops.address) == 0
        (again,) = remote.inference(inputs=[image])
    np.testing.assert_allclose(again, want, rtol=1e-6, atol=1e-6)

    # RKNNLite on a board with only the agent installed (no onnx package): the same module, the same outputs
    script = tmp_path / "board.py"
    np.save(tmp_path / "image.npy", image)
    script.write_text(
        textwrap.dedent(f"""
        import numpy as np
        from rkfarm_agent.lite import RKNNLite
        lite = RKNNLite(custom_ops=["board_ops"])
        assert lite.load_rknn({str(exported)!r}) == 0
        assert lite.init_runtime() == 0
        np.save({str(tmp_path / "lite.npy")!r}, lite.inference(inputs=[np.load({str(tmp_path / "image.npy")!r})])[0])
    """)
    )
    board = run_agent_only(script)
    assert board.returncode == 0, board.stderr
    np.testing.assert_allclose(np.load(tmp_path / "lite.npy"), want, rtol=1e-6, atol=1e-6)

    # an installed op that raises: that run fails with its reason, the agent keeps serving
    (site / "failing_ops.py").write_text(textwrap.dedent(MODULE).replace("x, y = inputs", "raise RuntimeError('boom')"))
    failing = make_agent("--custom-ops", "failing_ops")
    with RKNN(raise_errors=True) as remote:
        assert remote.load_rknn(str(exported)) == 0
        assert remote.init_runtime(target="rk3588", device_id=failing.address) == 0
        for _ in range(2):
            with pytest.raises(RemoteError, match="RuntimeError: boom"):
                remote.inference(inputs=[image])
        assert remote.eval_memory() is not None  # still answering


def test_a_bad_module_name_stops_the_agent_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    args = [sys.executable, "-m", "rkfarm_agent.cli", "serve", "--port", "0", "--no-advertise"]
    args += ["--store-dir", str(tmp_path / "s"), "--custom-ops", "no_such_module_here"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("rkfarm-agent: error: --custom-ops no_such_module_here")
    assert "Traceback" not in run.stderr


# -- bad input -------------------------------------------------------------------------------------------------
class NoCompute:
    op_type = "cstNothing"

    def shape_infer(self, node: Any, in_shapes: Any, in_dtypes: Any) -> Any:
        return in_shapes, in_dtypes


class NoShapeInfer:
    op_type = "cstNoShapes"

    def compute(self, node: Any, inputs: Any) -> Any:
        return inputs


class WrongCount(cstDualResidual):
    def shape_infer(self, node: Any, in_shapes: list[list[int]], in_dtypes: list[Any]) -> tuple[list[Any], list[Any]]:
        return in_shapes[:1], in_dtypes[:1]


class ComputeReturnsOne(cstDualResidual):
    def compute(self, node: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [inputs[0]]


def test_bad_custom_op_classes_are_refused_clearly(model: Path) -> None:
    rknn = RKNN()
    assert rknn.reg_custom_op(NoCompute()) == -1
    assert "cstNothing (NoCompute) has no compute(self, node, inputs)" in str(rknn.last_error)
    assert rknn.reg_custom_op(NoShapeInfer()) == -1
    assert "has no shape_infer(self, node, in_shapes, in_dtypes)" in str(rknn.last_error)
    assert rknn.reg_custom_op(object()) == -1
    assert "has no op_type" in str(rknn.last_error)

    with pytest.raises(ModelLoadError, match=r"cstDualResidual, which is not an ONNX op: register its class"):
        RKNN(raise_errors=True).load_onnx(str(model))
    with pytest.raises(ModelLoadError, match=r"returned 1 shape\(s\) and 1 dtype\(s\); the node has 2 output"):
        _configured(model, WrongCount())
    custom_ops.register(cstDualResidual())  # leave the process's registry as the other tests expect


def test_compute_returning_the_wrong_count_is_an_error_not_a_result(model: Path) -> None:
    try:
        with _configured(model, ComputeReturnsOne(), float_dtype="float32") as rknn:
            assert rknn.build(do_quantization=False) == 0
            rknn.init_runtime()
            with pytest.raises(RkfarmError, match="compute\\(\\) returned 1 output\\(s\\), the node has 2"):
                rknn.inference(inputs=[_images(1, seed=6)[0]])
    finally:
        custom_ops.register(cstDualResidual())


class Raising(cstDualResidual):
    def compute(self, node: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
        raise ValueError("no such thing")


@pytest.mark.parametrize("core_mask", [0, 7])  # NPU_CORE_AUTO, NPU_CORE_0_1_2 (three threads)
def test_a_raising_compute_fails_the_run_with_its_reason(model: Path, core_mask: int) -> None:
    try:
        with _configured(model, Raising(), float_dtype="float32") as rknn:
            assert rknn.build(do_quantization=False) == 0
            rknn.init_runtime(core_mask=core_mask)
            for _ in range(2):
                with pytest.raises(RkfarmError, match="custom op failed: ValueError: no such thing"):
                    rknn.inference(inputs=[_images(1, seed=7)[0]])
    finally:
        custom_ops.register(cstDualResidual())


def test_many_custom_op_models_open_at_once_stay_correct(tmp_path: Path) -> None:
    """Models bound one after another while earlier ones are still open: onnxruntime-extensions crashes if an op
    is registered after a session exists, so rkfarm registers its ops once; every model keeps its own class."""

    def scaled(k: float) -> Any:
        class Scale(cstDualResidual):
            def compute(self, node: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
                return [inputs[0] * k, inputs[1] * k]

        return Scale()

    def want(image: np.ndarray, k: float) -> np.ndarray:
        x = _normalised(image).astype(np.float64)
        a = _conv(x)
        return (1 / (1 + np.exp(-a * k)) + x * k).astype(np.float32)

    opened: list[tuple[RKNN, float]] = []
    image = _images(1, seed=8)[0]
    try:
        for i, k in enumerate([1.0, 2.0, 3.0, 5.0]):
            rknn = _configured(_model(tmp_path / f"m{i}.onnx"), scaled(k), float_dtype="float32")
            assert rknn.build(do_quantization=False) == 0 and rknn.init_runtime() == 0
            opened.append((rknn, k))
            for earlier, factor in opened:  # the earlier ones still compute with their own class
                (got,) = earlier.inference(inputs=[image])
                np.testing.assert_allclose(got, want(image, factor), rtol=1e-5, atol=1e-5)
    finally:
        for rknn, _ in opened:
            rknn.release()
        custom_ops.register(cstDualResidual())
