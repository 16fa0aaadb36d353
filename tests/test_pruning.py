"""config(model_pruning=True): dead and constant channels go, and the outputs stay the same (ONNX Runtime)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model

from rkfarm import RKNN, graph
from rkfarm.frontends.onnx import load_onnx
from rkfarm.pruning import prune_dead_channels
from rkfarm.zoo import packaged_model

Array = npt.NDArray[np.float32]
IMAGE = [1, 3, 16, 16]


class Net:
    """A small ONNX graph written op by op, with seeded random weights."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def w(self, *shape: int) -> Array:
        return (self.rng.standard_normal(shape) * 0.3).astype(np.float32)

    def const(self, value: npt.ArrayLike) -> str:
        name = f"w{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: object) -> str:
        out = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{op_type}_{len(self.nodes)}", **attrs))
        return out

    def conv(self, x: str, W: Array, b: Array | None = None, pad: int | None = None, group: int = 1) -> str:
        k = W.shape[2]
        inputs = [x, self.const(W)] + ([self.const(b)] if b is not None else [])
        return self.op("Conv", *inputs, kernel_shape=[k, k], pads=[k // 2 if pad is None else pad] * 4, group=group)

    def model(self, outputs: Sequence[str], shape: Sequence[int] = IMAGE) -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes,
            "net",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            self.inits,
        )
        m = make_model(g, 17)
        m.ir_version = 8
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        onnx.checker.check_model(m, full_check=True)
        return m


def dead_conv(net: Net, x: str = "x", bias: float = -2.0, out: int = 8) -> str:
    """Conv 3x3 with channel 2 all zero (bias 0) and channel 5 zero weights with bias ``bias``."""
    W, b = net.w(out, 3, 3, 3), net.w(out)
    W[2], b[2] = 0, 0.0
    W[5], b[5] = 0, bias
    return net.conv(x, W, b)


def run(model: onnx.ModelProto, x: Array) -> list[Array]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(session.run(None, {"x": x}))


def assert_same_outputs(before: onnx.ModelProto, after: onnx.ModelProto, shape: Sequence[int] = IMAGE) -> None:
    rng = np.random.default_rng(7)
    for scale in (0.5, 3.0, 30.0):
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        for want, got in zip(run(before, x), run(after, x)):
            assert want.shape == got.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def weight_shapes(model: onnx.ModelProto) -> list[tuple[int, ...]]:
    """Shapes of the Conv/Gemm/MatMul weights, in node order."""
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    return [inits[n.input[1]] for n in nodes if n.input[1] in inits]


def weight_count(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)


def relu_then_conv(bias: float, k: int = 3, pad: int | None = None, act: str | None = "Relu") -> onnx.ModelProto:
    net = Net()
    y = dead_conv(net, bias=bias)
    y = net.op(act, y) if act else y
    return net.model([net.conv(y, net.w(6, 8, k, k), net.w(6), pad=pad)])


def depthwise(dw_zero: bool, pad: int = 1) -> onnx.ModelProto:
    net = Net(1)
    y = net.op("Relu", dead_conv(net, bias=1.0) if not dw_zero else net.conv("x", net.w(8, 3, 3, 3), net.w(8)))
    Wd, bd = net.w(8, 1, 3, 3), net.w(8)
    if dw_zero:  # after ReLU the input is >= 0: non-positive weights and bias give <= 0, then ReLU gives 0
        Wd[4], bd[4] = -np.abs(Wd[4]), -0.1
    y = net.op("Relu", net.conv(y, Wd, bd, pad=pad, group=8))
    return net.model([net.conv(y, net.w(6, 8, 1, 1), net.w(6))])


def backward(zero_columns: Sequence[Sequence[int]]) -> onnx.ModelProto:
    """conv1 -> ReLU -> one consumer conv per entry, each with zero weights for the listed input channels."""
    net = Net(2)
    y = net.op("Relu", net.conv("x", net.w(8, 3, 3, 3), net.w(8)))
    outs = []
    for k, columns in enumerate(zero_columns):
        W = net.w(6 - k, 8, 3 - 2 * k, 3 - 2 * k)
        W[:, list(columns)] = 0
        outs.append(net.conv(y, W, net.w(6 - k)))
    return net.model(outs)


def gemm_chain() -> onnx.ModelProto:
    net = Net(3)
    W, b = net.w(16, 12), net.w(16)  # transB=1: [out, in]
    W[3], b[3] = 0, 0.0
    W[7], b[7] = 0, -1.0
    W[9], b[9] = 0, 1.5  # ReLU -> 1.5, folded into the next Gemm's C
    y = net.op("Relu", net.op("Gemm", "x", net.const(W), net.const(b), transB=1))
    return net.model([net.op("Gemm", y, net.const(net.w(5, 16)), transB=1)], [2, 12])


def matmul_chain() -> onnx.ModelProto:
    net = Net(4)
    W, b = net.w(12, 16), net.w(16)
    W[:, 3], b[3] = 0, 0.0
    W[:, 7], b[7] = 0, -1.0
    y = net.op("Relu", net.op("Add", net.op("MatMul", "x", net.const(W)), net.const(b)))
    return net.model([net.op("MatMul", y, net.const(net.w(16, 5)))], [2, 4, 12])


def hardswish_decomposed() -> onnx.ModelProto:
    """x * Clip(x + 3, 0, 6) / 6, as onnxslim leaves PaddlePaddle's hard_swish; 0 and -5 both give 0."""
    net = Net(5)
    y = dead_conv(net, bias=-5.0)
    gate = net.op("Clip", net.op("Add", y, net.const(3.0)), net.const(0.0), net.const(6.0))
    y = net.op("Div", net.op("Mul", y, gate), net.const(6.0))
    return net.model([net.conv(y, net.w(6, 8, 3, 3), net.w(6))])


def mobilenet_block() -> onnx.ModelProto:
    """1x1 expand -> ReLU6 -> depthwise 3x3 -> ReLU6 -> 1x1 project; expand channels 1, 4 dead, 9 constant 3."""
    net = Net(6)
    W, b = net.w(16, 3, 1, 1), net.w(16)
    W[1], b[1] = 0, -1.0
    W[4], b[4] = 0, 0.0
    W[9], b[9] = 0, 3.0  # 3 through a padded depthwise conv is not constant at the borders: kept
    lo, hi = net.const(0.0), net.const(6.0)
    y = net.op("Clip", net.conv("x", W, b), lo, hi)
    y = net.op("Clip", net.conv(y, net.w(16, 1, 3, 3), net.w(16), group=16), lo, hi)
    return net.model([net.conv(y, net.w(8, 16, 1, 1), net.w(8))])


def concat() -> onnx.ModelProto:
    net = Net(7)
    a = net.op("Relu", dead_conv(net))
    b = net.op("Relu", net.conv("x", net.w(8, 3, 3, 3), net.w(8)))
    return net.model([net.conv(net.op("Concat", b, a, axis=1), net.w(6, 16, 3, 3), net.w(6))])


def pooled(op: str, bias: float = -2.0, k: int = 3, **attrs: object) -> onnx.ModelProto:
    net = Net(8)
    y = net.op(op, net.op("Relu", dead_conv(net, bias=bias)), **attrs)
    return net.model([net.conv(y, net.w(6, 8, k, k), net.w(6))])


def gap_gemm() -> onnx.ModelProto:
    net = Net(9)
    y = net.op("Flatten", net.op("GlobalAveragePool", net.op("Relu", dead_conv(net))))
    return net.model([net.op("Gemm", y, net.const(net.w(10, 8)), net.const(net.w(10)), transB=1)])


def batchnorm() -> onnx.ModelProto:
    net = Net(10)
    W, b = net.w(8, 3, 3, 3), net.w(8)
    W[2], b[2] = 0, 0.0  # BN(0) = 2 * 0 - 1 = -1, ReLU -> 0
    stats = [net.const(v) for v in (np.full(8, 2.0), np.full(8, -1.0), np.zeros(8), np.ones(8))]
    y = net.op("Relu", net.op("BatchNormalization", net.conv("x", W, b), *stats))
    return net.model([net.conv(y, net.w(6, 8, 3, 3), net.w(6))])


def sign_conv() -> onnx.ModelProto:
    net = Net(11)
    y = net.op("Relu", net.conv("x", net.w(8, 3, 3, 3), net.w(8)))
    W, b = net.w(8, 8, 3, 3), net.w(8)
    W[3], b[3] = -np.abs(W[3]), -0.1
    y = net.op("Relu", net.conv(y, W, b))
    return net.model([net.conv(y, net.w(6, 8, 3, 3), net.w(6))])


def residual_both_dead() -> onnx.ModelProto:
    net = Net(12)
    x1 = net.op("Relu", dead_conv(net, bias=0.0))
    W, b = net.w(8, 8, 3, 3), net.w(8)
    W[2], W[5], b[2], b[5] = 0, 0, -1.0, 0.0
    s = net.op("Add", x1, net.op("Relu", net.conv(x1, W, b)))
    return net.model([net.conv(s, net.w(6, 8, 3, 3), net.w(6))])


def no_bias() -> onnx.ModelProto:
    net = Net(13)
    W = net.w(8, 3, 3, 3)
    W[2] = 0
    y = net.op("Relu", net.conv("x", W))
    return net.model([net.conv(y, net.w(6, 8, 3, 3))])


def scaled() -> onnx.ModelProto:
    """Mul by a scalar and Sub of a per-channel constant along the channel: 1 * 2 - 2 = 0."""
    net = Net(14)
    y = net.op("Mul", dead_conv(net, bias=1.0), net.const(2.0))
    y = net.op("Relu", net.op("Sub", y, net.const(np.full((1, 8, 1, 1), 2.0))))
    return net.model([net.conv(y, net.w(6, 8, 3, 3), net.w(6))])


EXACT: dict[str, tuple[Callable[[], onnx.ModelProto], list[tuple[int, ...]]]] = {
    "zero and ReLU(-2) into a padded conv": (lambda: relu_then_conv(-2.0), [(6, 3, 3, 3), (6, 6, 3, 3)]),
    "no activation, zero bias": (lambda: relu_then_conv(0.0, act=None), [(6, 3, 3, 3), (6, 6, 3, 3)]),
    "constant 2 folded into a 1x1 conv": (lambda: relu_then_conv(2.0, k=1), [(6, 3, 3, 3), (6, 6, 1, 1)]),
    "constant 2 folded into an unpadded 3x3": (lambda: relu_then_conv(2.0, pad=0), [(6, 3, 3, 3), (6, 6, 3, 3)]),
    "HardSigmoid(-5) = 0": (lambda: relu_then_conv(-5.0, act="HardSigmoid"), [(7, 3, 3, 3), (6, 7, 3, 3)]),
    "hard_swish as Add/Clip/Mul/Div": (hardswish_decomposed, [(6, 3, 3, 3), (6, 6, 3, 3)]),
    "through a depthwise conv": (lambda: depthwise(False), [(7, 3, 3, 3), (7, 1, 3, 3), (6, 7, 1, 1)]),
    "constant through an unpadded depthwise": (
        lambda: depthwise(False, pad=0),
        [(6, 3, 3, 3), (6, 1, 3, 3), (6, 6, 1, 1)],
    ),
    "depthwise <= 0 on ReLU output": (lambda: depthwise(True), [(7, 3, 3, 3), (7, 1, 3, 3), (6, 7, 1, 1)]),
    "ReLU(conv) with weights <= 0": (sign_conv, [(8, 3, 3, 3), (7, 8, 3, 3), (6, 7, 3, 3)]),
    "backward: zero input slice": (lambda: backward([[3]]), [(7, 3, 3, 3), (6, 7, 3, 3)]),
    "backward: two consumers": (lambda: backward([[3, 6], [3, 4]]), [(7, 3, 3, 3), (6, 7, 3, 3), (5, 7, 1, 1)]),
    "Gemm chain with a bias fold": (gemm_chain, [(13, 12), (5, 13)]),
    "MatMul + Add + ReLU + MatMul": (matmul_chain, [(12, 14), (14, 5)]),
    "MobileNet block": (mobilenet_block, [(14, 3, 1, 1), (14, 1, 3, 3), (8, 14, 1, 1)]),
    "Concat": (concat, [(6, 3, 3, 3), (8, 3, 3, 3), (6, 14, 3, 3)]),
    "AveragePool without the padding, into 1x1": (
        lambda: pooled("AveragePool", 1.0, 1, kernel_shape=[3, 3], pads=[1] * 4),
        [(6, 3, 3, 3), (6, 6, 1, 1)],
    ),
    "MaxPool": (lambda: pooled("MaxPool", kernel_shape=[3, 3], pads=[1] * 4), [(6, 3, 3, 3), (6, 6, 3, 3)]),
    "GlobalAveragePool + Flatten + Gemm": (gap_gemm, [(6, 3, 3, 3), (10, 6)]),
    "BatchNormalization": (batchnorm, [(7, 3, 3, 3), (6, 7, 3, 3)]),
    "residual Add, dead in both branches": (residual_both_dead, [(6, 3, 3, 3), (6, 6, 3, 3), (6, 6, 3, 3)]),
    "convs without bias": (no_bias, [(7, 3, 3, 3), (6, 7, 3, 3)]),
    "Mul and Sub by constants": (scaled, [(6, 3, 3, 3), (6, 6, 3, 3)]),
}


@pytest.mark.parametrize("case", EXACT)
def test_exact_cases_are_pruned_and_outputs_unchanged(case: str) -> None:
    build, want = EXACT[case]
    model = build()
    original = model.SerializeToString()
    pruned = prune_dead_channels(model)
    assert model.SerializeToString() == original  # the input is not modified
    assert weight_shapes(pruned) == want
    assert weight_count(pruned) < weight_count(model)
    assert_same_outputs(model, pruned, [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim])


def test_depthwise_group_follows_the_channels() -> None:
    pruned = prune_dead_channels(depthwise(False))
    groups = [a.i for n in pruned.graph.node for a in n.attribute if a.name == "group" and a.i != 1]
    assert groups == [7]


def output_and_add(kind: str) -> onnx.ModelProto:
    net = Net(15)
    y = net.op("Relu", dead_conv(net))
    if kind == "output":
        return net.model([net.conv(y, net.w(6, 8, 3, 3), net.w(6)), y])
    if kind == "add":
        z = net.op("Relu", net.conv(y, net.w(8, 8, 3, 3), net.w(8)))
        return net.model([net.conv(net.op("Add", y, z), net.w(6, 8, 3, 3), net.w(6))])
    W = net.w(6, 8, 3, 3)
    W[1] = 0
    return net.model([net.conv(y, W, net.w(6))])  # kind == "last": a zero row in the model's output


@pytest.mark.parametrize("kind", ["output", "add", "last"])
def test_channels_reaching_outputs_or_add_stay(kind: str) -> None:
    model = output_and_add(kind)
    pruned = prune_dead_channels(model)
    if kind == "last":  # the first conv's dead channels go; the output keeps its 6 channels
        assert weight_shapes(pruned) == [(6, 3, 3, 3), (6, 6, 3, 3)]
    else:
        assert pruned.SerializeToString() == model.SerializeToString()
    assert_same_outputs(model, pruned)


NOT_EXACT: dict[str, tuple[Callable[[], onnx.ModelProto], list[tuple[int, ...]]]] = {
    # only the zero channel goes; the constant one would change the borders of a padded consumer
    "ReLU(2) into a padded conv": (lambda: relu_then_conv(2.0), [(7, 3, 3, 3), (6, 7, 3, 3)]),
    "2 without activation into a padded conv": (lambda: relu_then_conv(2.0, act=None), [(7, 3, 3, 3), (6, 7, 3, 3)]),
    "LeakyReLU(-2) = -0.2 into a padded conv": (
        lambda: relu_then_conv(-2.0, act="LeakyRelu"),
        [(7, 3, 3, 3), (6, 7, 3, 3)],
    ),
    "Sigmoid: 0.5 and 0.12, both into a padded conv": (
        lambda: relu_then_conv(-2.0, act="Sigmoid"),
        [(8, 3, 3, 3), (6, 8, 3, 3)],
    ),
    "AveragePool counting the padding": (
        lambda: pooled("AveragePool", 1.0, 1, kernel_shape=[3, 3], pads=[1] * 4, count_include_pad=1),
        [(7, 3, 3, 3), (6, 7, 1, 1)],
    ),
}


@pytest.mark.parametrize("case", NOT_EXACT)
def test_nonzero_constants_into_padding_are_kept(case: str) -> None:
    build, want = NOT_EXACT[case]
    model = build()
    pruned = prune_dead_channels(model)
    assert weight_shapes(pruned) == want
    assert_same_outputs(model, pruned)


def test_an_all_dead_layer_keeps_one_channel() -> None:
    net = Net(16)
    W = np.zeros((4, 3, 3, 3), np.float32)
    y = net.op("Relu", net.conv("x", W, np.array([-1, 0, -2, -3], np.float32)))
    model = net.model([net.conv(y, net.w(6, 4, 3, 3), net.w(6))])
    pruned = prune_dead_channels(model)
    assert weight_shapes(pruned) == [(1, 3, 3, 3), (6, 1, 3, 3)]
    assert_same_outputs(model, pruned)


def test_shared_weights_get_their_own_copy() -> None:
    net = Net(17)
    W, b = net.w(8, 3, 3, 3), net.w(8)
    W[2], b[2] = 0, 0.0
    shared = [net.const(W), net.const(b)]
    a = net.op("Relu", net.op("Conv", "x", *shared, kernel_shape=[3, 3], pads=[1] * 4))
    c = net.op("Relu", net.op("Conv", "x", *shared, kernel_shape=[3, 3], pads=[1] * 4))
    model = net.model([net.conv(a, net.w(6, 8, 3, 3), net.w(6)), net.op("Add", c, c)])
    pruned = prune_dead_channels(model)  # the first conv loses channel 2, the second (read by Add) keeps it
    assert weight_shapes(pruned)[:2] == [(7, 3, 3, 3), (8, 3, 3, 3)]
    assert_same_outputs(model, pruned)


def test_log_says_what_was_removed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="rkfarm.pruning"):
        prune_dead_channels(relu_then_conv(-2.0))
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 1 and "model_pruning results: 2 channels in 1 layer(s)" in info[0] and "%)" in info[0]
    assert any("8 -> 6 channels" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rkfarm.pruning"):
        prune_dead_channels(output_and_add("output"))
    assert [r.getMessage() for r in caplog.records] == [
        f"model_pruning: nothing to prune (no channel is dead or constant), {weight_count(output_and_add('output'))}"
        " weights kept"
    ]


def test_near_zero_weights_only_when_asked() -> None:
    net = Net(18)
    W, b = net.w(8, 3, 3, 3), net.w(8)
    W[2], b[2] = 1e-20, -0.5
    model = net.model([net.conv(net.op("Relu", net.conv("x", W, b)), net.w(6, 8, 3, 3), net.w(6))])
    assert prune_dead_channels(model).SerializeToString() == model.SerializeToString()
    pruned = prune_dead_channels(model, zero_weight_abs=1e-8)
    assert weight_shapes(pruned) == [(7, 3, 3, 3), (6, 7, 3, 3)]
    assert_same_outputs(model, pruned)


def random_net(seed: int) -> onnx.ModelProto:
    """A random chain of convs (some channels dead, some weights <= 0), depthwise convs, activations, Add, Mul,
    Concat and pools, sometimes with an inner tensor as a second output."""
    rng = np.random.default_rng(seed)
    net = Net(seed)
    tensors = [("x", 3, 16)]  # name, channels, spatial size

    def dead(W: Array, b: Array) -> tuple[Array, Array]:
        for c in range(W.shape[0]):
            r = rng.random()
            if r < 0.25:
                W[c], b[c] = 0, rng.choice([0.0, -1.0, 1.5, -4.0])
            elif r < 0.35:
                W[c], b[c] = -np.abs(W[c]), -abs(b[c])
        W[:, rng.random(W.shape[1]) < (0.15 if W.shape[1] > 1 else 0)] = 0
        return W, b

    for _ in range(int(rng.integers(3, 8))):
        name, ch, size = tensors[int(rng.integers(len(tensors)))] if rng.random() < 0.4 else tensors[-1]
        kind = str(rng.choice(["conv", "dw", "act", "add", "concat", "pool"]))
        pad = int(rng.integers(0, 2)) if size > 8 else 1
        if kind == "conv" or (name == "x" and kind in ("dw", "add")):
            k, out = int(rng.choice([1, 3])), int(rng.integers(2, 9))
            y = net.conv(name, *dead(net.w(out, ch, k, k), net.w(out)), pad=pad * (k // 2))
            tensors.append((y, out, size - 2 * (1 - pad) * (k // 2)))
        elif kind == "dw":
            y = net.conv(name, *dead(net.w(ch, 1, 3, 3), net.w(ch)), pad=pad, group=ch)
            tensors.append((y, ch, size - 2 * (1 - pad)))
        elif kind == "act":
            op = str(rng.choice(["Relu", "Sigmoid", "HardSwish", "LeakyRelu", "HardSigmoid", "Tanh", "Clip"]))
            y = net.op(op, name, net.const(0.0), net.const(6.0)) if op == "Clip" else net.op(op, name)
            tensors.append((y, ch, size))
        elif kind == "add":
            same = [t for t, c, n in tensors if (c, n) == (ch, size) and t != "x"]
            y = net.op(str(rng.choice(["Add", "Mul"])), name, same[int(rng.integers(len(same)))])
            tensors.append((y, ch, size))
        elif kind == "concat":
            others = [(t, c) for t, c, n in tensors if n == size]
            other, other_ch = others[int(rng.integers(len(others)))]
            tensors.append((net.op("Concat", name, other, axis=1), ch + other_ch, size))
        else:
            include_pad = {"count_include_pad": int(rng.integers(0, 2))} if rng.random() < 0.5 else {}
            op = "AveragePool" if include_pad else "MaxPool"
            tensors.append((net.op(op, name, kernel_shape=[3, 3], pads=[1] * 4, **include_pad), ch, size))
    name, ch, _ = tensors[-1]
    outputs = [net.conv(name, net.w(4, ch, 3, 3), net.w(4))]
    if rng.random() < 0.3 and len(tensors) > 2:
        outputs.append(tensors[int(rng.integers(1, len(tensors) - 1))][0])
    return net.model(list(dict.fromkeys(outputs)))


def test_random_networks_keep_their_outputs() -> None:
    pruned = 0
    for seed in range(60):
        model = random_net(seed)
        result = prune_dead_channels(model)
        pruned += weight_count(result) < weight_count(model)
        assert_same_outputs(model, result)
    assert pruned > 15  # the generator does make prunable networks


# -- through the public API -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prunable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prune") / "prunable.onnx"
    onnx.save(mobilenet_block(), str(path))
    return path


def build(path: Path, pruning: bool, dataset: Path | None = None) -> tuple[int, list[Array]]:
    """(weight bytes of the package, its outputs on fixed inputs) of a vendor-style build of ``path``."""
    x = np.random.default_rng(3).standard_normal(IMAGE).astype(np.float32)
    with RKNN(raise_errors=True) as rknn:
        rknn.config(model_pruning=pruning, float_dtype="float32", target_platform="rk3588")
        rknn.load_onnx(str(path))
        rknn.build(do_quantization=dataset is not None, dataset=str(dataset) if dataset else None)
        assert rknn.package is not None
        rknn.init_runtime()
        outputs = rknn.inference([x], data_format="nchw")
        assert outputs is not None
        return int(rknn.package.header.weight_bytes), outputs


def test_build_with_pruning_is_smaller_and_equal(prunable: Path) -> None:
    plain_bytes, plain = build(prunable, False)
    pruned_bytes, pruned = build(prunable, True)
    assert pruned_bytes < plain_bytes
    np.testing.assert_allclose(pruned[0], plain[0], rtol=1e-5, atol=1e-6)


def test_int8_build_with_pruning(prunable: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    for i in range(8):
        np.save(tmp_path / f"{i}.npy", rng.standard_normal(IMAGE).astype(np.float32))
    (tmp_path / "dataset.txt").write_text("".join(f"{i}.npy\n" for i in range(8)))
    plain_bytes, plain = build(prunable, False, tmp_path / "dataset.txt")
    pruned_bytes, pruned = build(prunable, True, tmp_path / "dataset.txt")
    assert pruned_bytes < plain_bytes
    a, b = plain[0].ravel().astype(np.float64), pruned[0].ravel().astype(np.float64)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99


# -- real models ------------------------------------------------------------------------------------------------
def simplified(key: str) -> tuple[onnx.ModelProto, list[int]]:
    """A PP-OCR model after the graph passes that run before pruning in build()."""
    pm = packaged_model(key)
    shape = list(pm.input_size)
    return graph.simplify(load_onnx(pm.path(), None, [shape], None, None).model, 3), shape


def assert_same_on_real_input(before: onnx.ModelProto, after: onnx.ModelProto, shape: list[int]) -> None:
    x = np.random.default_rng(5).uniform(-1, 1, shape).astype(np.float32)
    for want, got in zip(run(before, x), run(after, x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_ppocr_cls_has_nothing_to_prune() -> None:
    model, shape = simplified("ppocr-cls")
    pruned = prune_dead_channels(model)
    assert pruned.SerializeToString() == model.SerializeToString()
    assert_same_on_real_input(model, pruned, shape)


@pytest.mark.parametrize(("key", "vendor"), [("ppocr-det", [44]), ("ppocr-rec", [34, 93])])
def test_ppocr_det_rec_exact_and_vendor_tolerance(key: str, vendor: list[int]) -> None:
    """Exact pruning finds nothing; with the vendor's ~1e-8 tolerance, its SE-block channel counts come out."""
    model, shape = simplified(key)
    assert prune_dead_channels(model).SerializeToString() == model.SerializeToString()
    loose = prune_dead_channels(model, zero_weight_abs=1e-8)
    changed = [b[0] for a, b in zip(weight_shapes(model), weight_shapes(loose)) if a != b]
    assert changed[::2] == vendor  # each squeeze conv, then its excite conv's input
    assert_same_on_real_input(model, loose, shape)
