"""Darknet frontend: a ``.cfg`` and its ``.weights`` as a standard ONNX graph.

``cfg`` reads the text grammar, ``layers`` checks the network and computes its shapes as darknet does,
``weights`` reads the binary layout, ``convert`` builds the ONNX graph. Yolo and region layers are not decoded:
the tensors they read are the graph outputs (raw heads, NCHW, in layer order), as the vendor's toolkit gives them.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from rkfarm.errors import ModelLoadError
from rkfarm.frontends import LoadedGraph
from rkfarm.frontends.common import finish, read_source, sources_sha256
from rkfarm.frontends.darknet.cfg import parse_cfg
from rkfarm.frontends.darknet.convert import INPUT_NAME, to_onnx
from rkfarm.frontends.darknet.layers import network
from rkfarm.frontends.darknet.weights import read_weights

log = logging.getLogger(__name__)

__all__ = ["INPUT_NAME", "load_darknet"]


def load_darknet(model: str | os.PathLike[str], weight: str | os.PathLike[str]) -> LoadedGraph:
    """Load a Darknet model: ``model`` is the ``.cfg``, ``weight`` its ``.weights`` (both required)."""
    started = time.perf_counter()
    cfg_path = Path(model)
    if weight is None:
        raise ModelLoadError(f"{cfg_path}: load_darknet() needs weight=, the .weights file of this .cfg")
    weights_path = Path(weight)
    cfg_data = read_source(cfg_path, "a darknet .cfg")
    weights_data = read_source(weights_path, "darknet .weights")
    net = network(parse_cfg(cfg_data, cfg_path))
    arrays = read_weights(weights_data, weights_path, net, cfg_path)
    proto = to_onnx(net, arrays, cfg_path.stem)
    loaded = finish(proto, cfg_path, sources_sha256([cfg_data, weights_data]), "darknet")
    log.info("%s: %d darknet layers, %d outputs, converted in %.2f s", cfg_path.name, len(net.layers),
             len(net.outputs), time.perf_counter() - started)  # fmt: skip
    return loaded
