"""Small models and images for the vendor-compatibility tests, built by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model

SIZE = 16


def small_classifier(path: Path, dead_channel: bool = False) -> Path:
    """Conv+BN+Relu -> Conv 1x1 -> global pool -> Gemm -> Softmax on a 1x3x16x16 image; names with . / :

    ``dead_channel``: channel 2 of the first block is 0 everywhere (zero weights, BN shifts it below 0, Relu),
    so ``model_pruning`` can remove it without changing any output."""
    rng = np.random.default_rng(5)

    def init(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    inits = [
        init("conv1.w", 8, 3, 3, 3), init("conv1.b", 8, scale=0.1),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn.gamma"),
        init("bn.beta", 8, scale=0.1), init("bn.mean", 8, scale=0.1),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn.var"),
        init("conv2.w", 6, 8, 1, 1), init("conv2.b", 6, scale=0.1), init("fc.w", 5, 6), init("fc.b", 5, scale=0.1),
    ]  # fmt: skip
    if dead_channel:
        arrays = {t.name: numpy_helper.to_array(t).copy() for t in inits}
        arrays["conv1.w"][2] = 0
        arrays["conv1.b"][2] = 0
        arrays["bn.mean"][2] = 0
        arrays["bn.beta"][2] = -1.0
        inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    nodes = [
        helper.make_node("Conv", ["image", "conv1.w", "conv1.b"], ["block1/conv:0"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["block1/conv:0", "bn.gamma", "bn.beta", "bn.mean", "bn.var"],
                         ["block1/bn:0"]),
        helper.make_node("Relu", ["block1/bn:0"], ["block1/relu.out"]),
        helper.make_node("Conv", ["block1/relu.out", "conv2.w", "conv2.b"], ["block2/conv;1"]),
        helper.make_node("Relu", ["block2/conv;1"], ["block2/relu"]),
        helper.make_node("GlobalAveragePool", ["block2/relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]  # fmt: skip
    g = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 5])],
        inits,
    )
    onnx.save(make_model(g, 13), str(path))
    return path


def images(count: int, seed: int, size: int = SIZE) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(count):
        base = rng.uniform(0, 255, 3) * xx[..., None] + rng.uniform(0, 255, 3) * yy[..., None]
        out.append(np.clip(base / 2 + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8))
    return out


def example_folder(root: Path, count: int = 8, seed: int = 1, test_image: bool = False) -> Path:
    """A folder as a vendor example has it: small.onnx, ``count`` calibration PNGs listed in dataset.txt, and
    optionally a test.png not among them."""
    from PIL import Image

    small_classifier(root / "small.onnx")
    for i, image in enumerate(images(count, seed=seed)):
        Image.fromarray(image).save(root / f"cal{i}.png")
    (root / "dataset.txt").write_text("".join(f"cal{i}.png\n" for i in range(count)))
    if test_image:
        Image.fromarray(images(1, seed=99)[0]).save(root / "test.png")
    return root
