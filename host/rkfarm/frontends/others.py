"""Frontends for frameworks other than ONNX.

PyTorch goes through torch's own ONNX exporter (install torch). The others need their framework's ONNX
converter run first; rkfarm says which, rather than pretending.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rkfarm.errors import ModelLoadError, NotSupportedError
from rkfarm.frontends import LoadedGraph
from rkfarm.frontends.onnx import load_onnx

CONVERTERS = {
    "tflite": "tf2onnx (python -m tf2onnx.convert --tflite model.tflite --output model.onnx)",
    "tensorflow": "tf2onnx (python -m tf2onnx.convert --graphdef model.pb --inputs ... --outputs ...)",
    "caffe": "a Caffe-to-ONNX converter such as caffe2onnx",
    "darknet": "a Darknet-to-ONNX exporter (e.g. the one in your YOLO training repository)",
}


def not_supported(framework: str) -> NotSupportedError:
    return NotSupportedError(
        f"load_{framework}() is not supported yet: convert the model to ONNX with {CONVERTERS[framework]}, "
        "then use load_onnx()"
    )


def load_pytorch(model: str | os.PathLike[str], input_size_list: Sequence[Sequence[int]]) -> LoadedGraph:
    """A TorchScript file (torch.jit.trace/save), exported to ONNX with torch's exporter."""
    try:
        import torch
    except ImportError:
        raise NotSupportedError("load_pytorch() needs PyTorch: pip install torch") from None
    path = Path(model)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if not input_size_list:
        raise ModelLoadError("load_pytorch() needs input_size_list, e.g. [[1, 3, 224, 224]]")
    try:
        jit_load: Any = torch.jit.load  # untyped in torch
        module = jit_load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a TorchScript model torch.jit.load can read: {exc}") from None
    examples = tuple(torch.zeros([int(d) for d in shape]) for shape in input_size_list)
    import onnx

    # A quantized (QAT) TorchScript model exports as QuantizeLinear/DequantizeLinear around float ops at this
    # opset; build() keeps that quantization (rkfarm.prequant).
    with tempfile.TemporaryDirectory() as tmp:
        exported = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(module, examples, str(exported), opset_version=17, dynamo=False)
        except Exception as exc:
            raise ModelLoadError(f"{path}: torch could not export the model to ONNX: {exc}") from None
        loaded = load_onnx(onnx.load_model(str(exported)), input_size_list=input_size_list)
    loaded.source_name = path.name
    loaded.source_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded.framework = "pytorch"
    return loaded
