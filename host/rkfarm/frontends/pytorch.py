"""PyTorch frontend: a TorchScript file (``torch.jit.trace``/``torch.jit.save``) through torch's own ONNX exporter.

A quantized (QAT) TorchScript model exports as QuantizeLinear/DequantizeLinear around float ops; build() keeps
that quantization (``rkfarm.prequant``), as the vendor keeps it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rkfarm.errors import ModelLoadError, NotSupportedError
from rkfarm.frontends import LoadedGraph
from rkfarm.frontends.common import finish, read_source, sources_sha256

log = logging.getLogger(__name__)
OPSET = 17


def load_pytorch(model: str | os.PathLike[str], input_size_list: Sequence[Sequence[int]]) -> LoadedGraph:
    """Load a TorchScript model, exported to ONNX at ``input_size_list`` (one shape per input)."""
    try:
        import torch
    except ImportError:
        raise NotSupportedError("load_pytorch() needs PyTorch: pip install 'rkfarm[pytorch]'") from None
    path = Path(model)
    data = read_source(path, "a TorchScript model")
    if not input_size_list:
        raise ModelLoadError(f"{path}: load_pytorch() needs input_size_list, e.g. [[1, 3, 224, 224]]")
    shapes = [[int(d) for d in shape] for shape in input_size_list]
    if any(not s or any(d <= 0 for d in s) for s in shapes):
        raise ModelLoadError(f"{path}: input_size_list {shapes} must hold positive dims, one shape per input")
    if data[:4] != b"PK\x03\x04":
        hint = " (a state_dict or a pickled nn.Module? save it with torch.jit.trace(...).save())"
        raise ModelLoadError(f"{path}: not a TorchScript archive{hint}")
    try:
        jit_load: Any = torch.jit.load  # untyped in torch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what the vendor loads
            module = jit_load(str(path), map_location="cpu").eval()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: not a TorchScript model torch.jit.load can read: {first}") from None
    takes = _input_count(module)
    if takes is not None and takes != len(shapes):
        raise ModelLoadError(f"{path}: input_size_list has {len(shapes)} shape(s) but the model takes {takes} input(s)")
    examples = tuple(torch.zeros(shape) for shape in shapes)
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        exported = Path(tmp) / "model.onnx"
        try:
            with warnings.catch_warnings():
                # A ScriptModule needs the TorchScript-based exporter; torch warns that it is not the default.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.filterwarnings("ignore", "no signature found", UserWarning)
                torch.onnx.export(module, examples, str(exported), opset_version=OPSET, dynamo=False)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{path}: torch could not export the model to ONNX: {first}") from None
        proto = onnx.load_model(str(exported))
    from rkfarm import graph

    if len(graph.real_inputs(proto)) != len(shapes):
        raise ModelLoadError(
            f"{path}: input_size_list has {len(shapes)} shape(s) but the model takes "
            f"{len(graph.real_inputs(proto))} input(s)"
        )
    graph.set_input_shapes(proto, shapes)
    return finish(proto, path, sources_sha256([data]), "pytorch")


def _input_count(module: Any) -> int | None:
    """How many tensors the TorchScript ``forward`` takes (None when torch does not say)."""
    try:
        arguments = module.forward.schema.arguments
    except (AttributeError, RuntimeError):
        return None
    return sum(1 for a in arguments if a.name != "self")
