"""Post-training int8 quantization (RKNN's ``w8a8``) of a float ONNX model: plan, calibrate, rewrite as QDQ.

The pipeline lives in ``pipeline``; this package re-exports its names. ``quantize(model, loaded, cfg, dataset)``
is the hook ``build()`` calls for ``do_quantization=True``:

1. upgrade the opset to 13 if needed (per-channel QuantizeLinear), turn Constant nodes into initializers and
   fold BatchNormalization and constant scales and offsets into the preceding Conv/Gemm (``passes``), decide
   which tensors get int8 parameters and which share them (``plan``);
2. run the float model over the calibration set with those tensors exposed, streaming their statistics into
   the configured algorithm (``collect``, ``calibrators``);
3. turn ranges into parameters (``scheme``) and rewrite the graph as standard QDQ ONNX (``qdq``).

``quantize_weights(model, cfg)`` is ``config(quantize_weight=True)`` with ``do_quantization=False``: weights
stored int8 behind DequantizeLinear, everything computed in float. ``config_file`` reads and writes the
per-tensor parameters in the vendor's ``.quantization.cfg`` YAML shape.

``QuantBuild`` is the hook ``RKNN.build()`` passes instead of ``quantize``: it keeps what it made (a
``QuantResult``: the prepared float model, the plan and parameters, the QDQ model) for accuracy analysis, and
applies hybrid quantization — layers kept in float (``hybrid``), chosen by ``custom_hybrid`` pairs or found by
``auto_hybrid``'s search.
"""

from rkfarm.quant.calibrators import CALIBRATORS
from rkfarm.quant.config_file import QuantConfig, dump_quant_cfg, read_quant_cfg, write_quant_cfg
from rkfarm.quant.pipeline import (
    QuantBuild,
    QuantOptions,
    QuantResult,
    calibrate,
    finish,
    quantize,
    quantize_weights,
)
from rkfarm.quant.qdq import Calibration, QuantTable, table_from_qdq

__all__ = [
    "CALIBRATORS",
    "Calibration",
    "QuantBuild",
    "QuantConfig",
    "QuantOptions",
    "QuantResult",
    "QuantTable",
    "calibrate",
    "dump_quant_cfg",
    "finish",
    "quantize",
    "quantize_weights",
    "read_quant_cfg",
    "table_from_qdq",
    "write_quant_cfg",
]
