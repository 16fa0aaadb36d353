"""TensorFlow Lite frontend: a ``.tflite`` flatbuffer through tf2onnx (in process) to ONNX at opset 17.

Float models convert op for op. A quantized model (full-integer int8, with int8, uint8 or float inputs and
outputs) converts to QuantizeLinear/DequantizeLinear around float ops with the flatbuffer's own scales and zero
points; build(do_quantization=False) keeps them (``rkfarm.prequant``), as the vendor keeps them.

Inputs and outputs keep the flatbuffer's tensor names (``serving_default_x:0``, as LiteRT reports them) and
order. 4-D inputs stay NHWC, marked so: inference takes NHWC arrays as they are, ``data_format='nchw'`` ones
are transposed to them. ``input_is_nchw=True`` says the model's inputs are NCHW already (see
``tf_convert.mark_layouts``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rkfarm.errors import ModelLoadError
from rkfarm.frontends import FRONTENDS, LoadedGraph, sniff
from rkfarm.frontends.common import finish, read_source, sources_sha256
from rkfarm.frontends.tf_convert import OPSET, import_converter, mark_layouts, run_converter

log = logging.getLogger(__name__)
IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, at bytes 4..8


def load_tflite(model: str | os.PathLike[str], input_is_nchw: bool = False) -> LoadedGraph:
    """Load a TensorFlow Lite model; 4-D inputs stay NHWC unless ``input_is_nchw``."""
    path = Path(model)
    data = read_source(path, "a TensorFlow Lite model")
    if data[4:8] != IDENTIFIER:
        found = sniff(data[:4096])
        hint = f" (it looks like {FRONTENDS[found].describe}: load it with load_{found}())" if found else ""
        raise ModelLoadError(f"{path}: not a TensorFlow Lite flatbuffer (no TFL3 identifier at bytes 4-8){hint}")
    convert = import_converter("load_tflite()", "tflite")
    proto = run_converter(lambda: convert.from_tflite(str(path), opset=OPSET), path, "the TFLite model")
    mark_layouts(proto, input_is_nchw)
    log.info("%s: converted with tf2onnx (%d nodes)", path.name, len(proto.graph.node))
    return finish(proto, path, sources_sha256([data]), "tflite")
