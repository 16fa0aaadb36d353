from rkfarm_proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayloadKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYLOAD_KIND_UNSPECIFIED: _ClassVar[PayloadKind]
    PAYLOAD_KIND_ONNX: _ClassVar[PayloadKind]
    PAYLOAD_KIND_RKNN: _ClassVar[PayloadKind]
PAYLOAD_KIND_UNSPECIFIED: PayloadKind
PAYLOAD_KIND_ONNX: PayloadKind
PAYLOAD_KIND_RKNN: PayloadKind

class InputSpec(_message.Message):
    __slots__ = ("tensor", "mean_values", "std_values", "quant_img_rgb2bgr")
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    MEAN_VALUES_FIELD_NUMBER: _ClassVar[int]
    STD_VALUES_FIELD_NUMBER: _ClassVar[int]
    QUANT_IMG_RGB2BGR_FIELD_NUMBER: _ClassVar[int]
    tensor: _common_pb2.TensorSpec
    mean_values: _containers.RepeatedScalarFieldContainer[float]
    std_values: _containers.RepeatedScalarFieldContainer[float]
    quant_img_rgb2bgr: bool
    def __init__(self, tensor: _Optional[_Union[_common_pb2.TensorSpec, _Mapping]] = ..., mean_values: _Optional[_Iterable[float]] = ..., std_values: _Optional[_Iterable[float]] = ..., quant_img_rgb2bgr: _Optional[bool] = ...) -> None: ...

class ShapeSet(_message.Message):
    __slots__ = ("inputs",)
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[InputShape]
    def __init__(self, inputs: _Optional[_Iterable[_Union[InputShape, _Mapping]]] = ...) -> None: ...

class InputShape(_message.Message):
    __slots__ = ("dims",)
    DIMS_FIELD_NUMBER: _ClassVar[int]
    dims: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dims: _Optional[_Iterable[int]] = ...) -> None: ...

class QuantizationSummary(_message.Message):
    __slots__ = ("quantized", "dtype", "algorithm", "method", "calibration_samples", "quantized_tensors", "float_tensors", "weights_only")
    QUANTIZED_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    QUANTIZED_TENSORS_FIELD_NUMBER: _ClassVar[int]
    FLOAT_TENSORS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_ONLY_FIELD_NUMBER: _ClassVar[int]
    quantized: bool
    dtype: str
    algorithm: str
    method: str
    calibration_samples: int
    quantized_tensors: int
    float_tensors: _containers.RepeatedScalarFieldContainer[str]
    weights_only: bool
    def __init__(self, quantized: _Optional[bool] = ..., dtype: _Optional[str] = ..., algorithm: _Optional[str] = ..., method: _Optional[str] = ..., calibration_samples: _Optional[int] = ..., quantized_tensors: _Optional[int] = ..., float_tensors: _Optional[_Iterable[str]] = ..., weights_only: _Optional[bool] = ...) -> None: ...

class SealedKey(_message.Message):
    __slots__ = ("recipient", "ephemeral_public", "nonce", "wrapped_key")
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    recipient: str
    ephemeral_public: bytes
    nonce: bytes
    wrapped_key: bytes
    def __init__(self, recipient: _Optional[str] = ..., ephemeral_public: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., wrapped_key: _Optional[bytes] = ...) -> None: ...

class Encryption(_message.Message):
    __slots__ = ("algorithm", "crypt_level", "kdf", "salt", "scrypt_log2_n", "segment_size", "plaintext_size", "keys")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    CRYPT_LEVEL_FIELD_NUMBER: _ClassVar[int]
    KDF_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    SCRYPT_LOG2_N_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_SIZE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    crypt_level: int
    kdf: str
    salt: bytes
    scrypt_log2_n: int
    segment_size: int
    plaintext_size: int
    keys: _containers.RepeatedCompositeFieldContainer[SealedKey]
    def __init__(self, algorithm: _Optional[str] = ..., crypt_level: _Optional[int] = ..., kdf: _Optional[str] = ..., salt: _Optional[bytes] = ..., scrypt_log2_n: _Optional[int] = ..., segment_size: _Optional[int] = ..., plaintext_size: _Optional[int] = ..., keys: _Optional[_Iterable[_Union[SealedKey, _Mapping]]] = ...) -> None: ...

class PackageHeader(_message.Message):
    __slots__ = ("format_version", "producer", "created_utc", "source_model_name", "source_model_sha256", "source_framework", "inputs", "outputs", "target_platform", "float_dtype", "custom_string", "quantization", "payload_kind", "payload_size", "payload_sha256", "encryption", "weight_bytes", "opset", "build_options", "activation_bytes", "single_core", "custom_ops", "shape_sets", "rknn_batch_size")
    class BuildOptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    CREATED_UTC_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TARGET_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    FLOAT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_STRING_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    OPSET_FIELD_NUMBER: _ClassVar[int]
    BUILD_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BYTES_FIELD_NUMBER: _ClassVar[int]
    SINGLE_CORE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_OPS_FIELD_NUMBER: _ClassVar[int]
    SHAPE_SETS_FIELD_NUMBER: _ClassVar[int]
    RKNN_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    producer: str
    created_utc: str
    source_model_name: str
    source_model_sha256: str
    source_framework: str
    inputs: _containers.RepeatedCompositeFieldContainer[InputSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[_common_pb2.TensorSpec]
    target_platform: str
    float_dtype: str
    custom_string: str
    quantization: QuantizationSummary
    payload_kind: PayloadKind
    payload_size: int
    payload_sha256: str
    encryption: Encryption
    weight_bytes: int
    opset: int
    build_options: _containers.ScalarMap[str, str]
    activation_bytes: int
    single_core: bool
    custom_ops: _containers.RepeatedScalarFieldContainer[str]
    shape_sets: _containers.RepeatedCompositeFieldContainer[ShapeSet]
    rknn_batch_size: int
    def __init__(self, format_version: _Optional[int] = ..., producer: _Optional[str] = ..., created_utc: _Optional[str] = ..., source_model_name: _Optional[str] = ..., source_model_sha256: _Optional[str] = ..., source_framework: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[InputSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[_common_pb2.TensorSpec, _Mapping]]] = ..., target_platform: _Optional[str] = ..., float_dtype: _Optional[str] = ..., custom_string: _Optional[str] = ..., quantization: _Optional[_Union[QuantizationSummary, _Mapping]] = ..., payload_kind: _Optional[_Union[PayloadKind, str]] = ..., payload_size: _Optional[int] = ..., payload_sha256: _Optional[str] = ..., encryption: _Optional[_Union[Encryption, _Mapping]] = ..., weight_bytes: _Optional[int] = ..., opset: _Optional[int] = ..., build_options: _Optional[_Mapping[str, str]] = ..., activation_bytes: _Optional[int] = ..., single_core: _Optional[bool] = ..., custom_ops: _Optional[_Iterable[str]] = ..., shape_sets: _Optional[_Iterable[_Union[ShapeSet, _Mapping]]] = ..., rknn_batch_size: _Optional[int] = ...) -> None: ...
