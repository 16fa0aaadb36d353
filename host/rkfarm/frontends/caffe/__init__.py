"""Caffe frontend: a deploy .prototxt and its .caffemodel weights, converted to a standard ONNX graph.

rkfarm reads Caffe files with its own schema (``caffe.proto`` here, compiled to ``caffe_pb2``), so neither Caffe
nor pycaffe is needed. Supported layers (each converted to ONNX opset 17): Input and the ``input:`` fields,
Convolution, Deconvolution, Pooling (MAX/AVE, global, Caffe's ceil rounding), InnerProduct, ReLU/LeakyReLU,
PReLU, ELU, Sigmoid, TanH, BatchNorm, Scale, Eltwise, Concat, Softmax, Flatten, Reshape, Permute, Dropout, Slice,
Split, Crop, Interp, Upsample (nearest), Normalize and PriorBox (SSD; PriorBox becomes a constant), Silence.

A net that ends in DetectionOutput (SSD) loses that layer, as the vendor toolkit does: its bottoms (box offsets,
class scores, priors) become the model's outputs and a warning names what was dropped; box decoding and NMS
then run on the host. A DetectionOutput whose result another layer reads is refused.

Refused with a one-line error naming file, line, layer and type: a layer type not listed above, and inside a
layer rkfarm converts any field its schema does not declare or any value it does not implement (STOCHASTIC
pooling, BatchNorm with batch statistics, N-D convolution, ...). Without a caffemodel (``blobs=None``) every
layer gets random weights from a fixed seed, with a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from rkfarm.frontends import LoadedGraph
from rkfarm.frontends.caffe.convert import STRICT_TYPES, convert
from rkfarm.frontends.caffe.reader import read_caffemodel, read_prototxt
from rkfarm.frontends.caffe.weights import SEED, Weights
from rkfarm.frontends.common import finish, read_source, sources_sha256

log = logging.getLogger(__name__)


def load_caffe(
    model: str | os.PathLike[str],
    blobs: str | os.PathLike[str] | None = None,
    input_name: Sequence[str] | None = None,
) -> LoadedGraph:
    """Load a Caffe model: ``model`` the .prototxt, ``blobs`` the .caffemodel (None: random weights).

    ``input_name`` orders the net's inputs (every input, each once); by default they keep the prototxt's order.
    """
    path = Path(model)
    text = read_source(path, "a Caffe prototxt")
    net = read_prototxt(path, text, STRICT_TYPES)
    sources = [text]
    if blobs is None:
        log.warning("%s: no caffemodel given: every layer gets random weights (seed %d)", path.name, SEED)
        weights = Weights(None, None)
    else:
        wpath = Path(blobs)
        data = read_source(wpath, "a Caffe caffemodel")
        weights = Weights(wpath, read_caffemodel(wpath, data))
        sources.append(data)
    proto = convert(net, weights, input_name)
    return finish(proto, path, sources_sha256(sources), "caffe")
