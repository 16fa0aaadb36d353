"""The package header's tensor and input specs of an ONNX model: the wire dtypes, shapes, layout and mean/std.

Below the build orchestrator, quantization and analysis, which all describe models this way.
"""

from __future__ import annotations

import onnx

from rkfarm import graph
from rkfarm.config import RknnConfig
from rkfarm.errors import BuildError, ConfigError
from rkfarm_proto.tensors import shape_str
from rkfarm_proto.v1 import common_pb2, package_pb2

_ONNX_TO_WIRE: dict[int, common_pb2.DataType] = {
    onnx.TensorProto.FLOAT: common_pb2.DATA_TYPE_FLOAT32,
    onnx.TensorProto.FLOAT16: common_pb2.DATA_TYPE_FLOAT16,
    onnx.TensorProto.DOUBLE: common_pb2.DATA_TYPE_FLOAT64,
    onnx.TensorProto.INT8: common_pb2.DATA_TYPE_INT8,
    onnx.TensorProto.UINT8: common_pb2.DATA_TYPE_UINT8,
    onnx.TensorProto.INT16: common_pb2.DATA_TYPE_INT16,
    onnx.TensorProto.UINT16: common_pb2.DATA_TYPE_UINT16,
    onnx.TensorProto.INT32: common_pb2.DATA_TYPE_INT32,
    onnx.TensorProto.UINT32: common_pb2.DATA_TYPE_UINT32,
    onnx.TensorProto.INT64: common_pb2.DATA_TYPE_INT64,
    onnx.TensorProto.UINT64: common_pb2.DATA_TYPE_UINT64,
    onnx.TensorProto.BOOL: common_pb2.DATA_TYPE_BOOL,
}


def tensor_spec(value: onnx.ValueInfoProto) -> common_pb2.TensorSpec:
    tt = value.type.tensor_type
    try:
        dtype = _ONNX_TO_WIRE[tt.elem_type]
    except KeyError:
        name = onnx.TensorProto.DataType.Name(tt.elem_type)
        raise BuildError(f"tensor {value.name!r} has type {name}, which rkfarm cannot carry") from None
    dims = graph.dims_of(value)
    if len(dims) != 4:
        layout = common_pb2.LAYOUT_UNSPECIFIED
    else:
        layout = common_pb2.LAYOUT_NHWC if graph.is_nhwc(value) else common_pb2.LAYOUT_NCHW
    return common_pb2.TensorSpec(name=value.name, dtype=dtype, shape=dims, layout=layout)


def input_specs(model: onnx.ModelProto, cfg: RknnConfig) -> list[package_pb2.InputSpec]:
    """Input specs with the config's mean/std, checked against each input's channel count."""
    ins = graph.real_inputs(model)
    for what, rows in (("mean_values", cfg.mean_values), ("std_values", cfg.std_values)):
        if rows is not None and len(rows) != len(ins):
            raise ConfigError(
                f"{what} has {len(rows)} entries but the model has {len(ins)} input(s) "
                f"({', '.join(i.name for i in ins)}); give one list per input"
            )
    specs = []
    for index, value in enumerate(ins):
        tensor = tensor_spec(value)
        dims = list(tensor.shape)
        channels = dims[1] if tensor.layout == common_pb2.LAYOUT_NCHW else (dims[-1] if dims else 1)
        spec = package_pb2.InputSpec(tensor=tensor, quant_img_rgb2bgr=cfg.rgb2bgr_for(index))
        for what, rows, target in (
            ("mean_values", cfg.mean_values, spec.mean_values),
            ("std_values", cfg.std_values, spec.std_values),
        ):
            if rows is None:
                continue
            row = rows[index]
            if len(row) not in (1, channels):
                raise ConfigError(
                    f"{what}[{index}] has {len(row)} values but input {value.name!r} "
                    f"{shape_str(dims)} has {channels} channels"
                )
            if tensor.dtype not in (common_pb2.DATA_TYPE_FLOAT32, common_pb2.DATA_TYPE_FLOAT16):
                raise ConfigError(f"{what} given for input {value.name!r}, which is not a float input")
            target.extend(row)
        specs.append(spec)
    return specs
