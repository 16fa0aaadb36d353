from rkfarm_proto.v1 import common_pb2 as _common_pb2
from rkfarm_proto.v1 import package_pb2 as _package_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("agent_id", "hostname", "platform", "soc_compatible", "npu_cores", "agent_version", "backends", "auth", "cpu_count", "memory_total_bytes", "max_upload_bytes", "max_sessions", "store_used_bytes", "store_capacity_bytes", "versions", "uptime_s", "public_key", "farm_key_ids", "tags", "memory_available_bytes", "load_per_cpu", "sessions_open", "hold", "advertise_status", "system")
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    SOC_COMPATIBLE_FIELD_NUMBER: _ClassVar[int]
    NPU_CORES_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    STORE_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORE_CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    FARM_KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_PER_CPU_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_OPEN_FIELD_NUMBER: _ClassVar[int]
    HOLD_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_STATUS_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    hostname: str
    platform: str
    soc_compatible: str
    npu_cores: int
    agent_version: str
    backends: _containers.RepeatedScalarFieldContainer[str]
    auth: str
    cpu_count: int
    memory_total_bytes: int
    max_upload_bytes: int
    max_sessions: int
    store_used_bytes: int
    store_capacity_bytes: int
    versions: _containers.ScalarMap[str, str]
    uptime_s: float
    public_key: bytes
    farm_key_ids: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.ScalarMap[str, str]
    memory_available_bytes: int
    load_per_cpu: float
    sessions_open: int
    hold: HoldInfo
    advertise_status: str
    system: SystemInfo
    def __init__(self, agent_id: _Optional[str] = ..., hostname: _Optional[str] = ..., platform: _Optional[str] = ..., soc_compatible: _Optional[str] = ..., npu_cores: _Optional[int] = ..., agent_version: _Optional[str] = ..., backends: _Optional[_Iterable[str]] = ..., auth: _Optional[str] = ..., cpu_count: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., max_upload_bytes: _Optional[int] = ..., max_sessions: _Optional[int] = ..., store_used_bytes: _Optional[int] = ..., store_capacity_bytes: _Optional[int] = ..., versions: _Optional[_Mapping[str, str]] = ..., uptime_s: _Optional[float] = ..., public_key: _Optional[bytes] = ..., farm_key_ids: _Optional[_Iterable[str]] = ..., tags: _Optional[_Mapping[str, str]] = ..., memory_available_bytes: _Optional[int] = ..., load_per_cpu: _Optional[float] = ..., sessions_open: _Optional[int] = ..., hold: _Optional[_Union[HoldInfo, _Mapping]] = ..., advertise_status: _Optional[str] = ..., system: _Optional[_Union[SystemInfo, _Mapping]] = ...) -> None: ...

class SystemInfo(_message.Message):
    __slots__ = ("machine", "kernel", "device_tree_compatible", "device_tree_model", "npu_nodes", "npu_driver_version", "librknnrt_path", "librknnrt_version", "librknnrt_error", "npu_ready", "npu_missing", "other_accel_nodes")
    MACHINE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_TREE_COMPATIBLE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_TREE_MODEL_FIELD_NUMBER: _ClassVar[int]
    NPU_NODES_FIELD_NUMBER: _ClassVar[int]
    NPU_DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIBRKNNRT_PATH_FIELD_NUMBER: _ClassVar[int]
    LIBRKNNRT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIBRKNNRT_ERROR_FIELD_NUMBER: _ClassVar[int]
    NPU_READY_FIELD_NUMBER: _ClassVar[int]
    NPU_MISSING_FIELD_NUMBER: _ClassVar[int]
    OTHER_ACCEL_NODES_FIELD_NUMBER: _ClassVar[int]
    machine: str
    kernel: str
    device_tree_compatible: _containers.RepeatedScalarFieldContainer[str]
    device_tree_model: str
    npu_nodes: _containers.RepeatedCompositeFieldContainer[NpuNode]
    npu_driver_version: str
    librknnrt_path: str
    librknnrt_version: str
    librknnrt_error: str
    npu_ready: bool
    npu_missing: _containers.RepeatedScalarFieldContainer[str]
    other_accel_nodes: _containers.RepeatedCompositeFieldContainer[NpuNode]
    def __init__(self, machine: _Optional[str] = ..., kernel: _Optional[str] = ..., device_tree_compatible: _Optional[_Iterable[str]] = ..., device_tree_model: _Optional[str] = ..., npu_nodes: _Optional[_Iterable[_Union[NpuNode, _Mapping]]] = ..., npu_driver_version: _Optional[str] = ..., librknnrt_path: _Optional[str] = ..., librknnrt_version: _Optional[str] = ..., librknnrt_error: _Optional[str] = ..., npu_ready: _Optional[bool] = ..., npu_missing: _Optional[_Iterable[str]] = ..., other_accel_nodes: _Optional[_Iterable[_Union[NpuNode, _Mapping]]] = ...) -> None: ...

class NpuNode(_message.Message):
    __slots__ = ("path", "driver", "accessible")
    PATH_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    ACCESSIBLE_FIELD_NUMBER: _ClassVar[int]
    path: str
    driver: str
    accessible: bool
    def __init__(self, path: _Optional[str] = ..., driver: _Optional[str] = ..., accessible: _Optional[bool] = ...) -> None: ...

class HoldInfo(_message.Message):
    __slots__ = ("client", "expires_unix", "remaining_s", "yours", "hold_id", "session_id")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    REMAINING_S_FIELD_NUMBER: _ClassVar[int]
    YOURS_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    client: str
    expires_unix: float
    remaining_s: float
    yours: bool
    hold_id: str
    session_id: str
    def __init__(self, client: _Optional[str] = ..., expires_unix: _Optional[float] = ..., remaining_s: _Optional[float] = ..., yours: _Optional[bool] = ..., hold_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class HoldRequest(_message.Message):
    __slots__ = ("lease_s", "client", "hold_id", "wait_s")
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    lease_s: float
    client: str
    hold_id: str
    wait_s: float
    def __init__(self, lease_s: _Optional[float] = ..., client: _Optional[str] = ..., hold_id: _Optional[str] = ..., wait_s: _Optional[float] = ...) -> None: ...

class HoldResponse(_message.Message):
    __slots__ = ("hold_id", "lease_s", "expires_unix", "drained_calls")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    DRAINED_CALLS_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    lease_s: float
    expires_unix: float
    drained_calls: int
    def __init__(self, hold_id: _Optional[str] = ..., lease_s: _Optional[float] = ..., expires_unix: _Optional[float] = ..., drained_calls: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("hold_id",)
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    def __init__(self, hold_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: _Optional[bool] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("present", "size_bytes", "partial_bytes")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    present: bool
    size_bytes: int
    partial_bytes: int
    def __init__(self, present: _Optional[bool] = ..., size_bytes: _Optional[int] = ..., partial_bytes: _Optional[int] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("sha256", "total_size", "offset", "data")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    total_size: int
    offset: int
    data: bytes
    def __init__(self, sha256: _Optional[str] = ..., total_size: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadResponse(_message.Message):
    __slots__ = ("sha256", "size_bytes", "received_bytes")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    received_bytes: int
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., received_bytes: _Optional[int] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("model_sha256", "core_mask", "perf_debug", "eval_mem", "lease_s", "client", "exclusive")
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    CORE_MASK_FIELD_NUMBER: _ClassVar[int]
    PERF_DEBUG_FIELD_NUMBER: _ClassVar[int]
    EVAL_MEM_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    model_sha256: str
    core_mask: int
    perf_debug: bool
    eval_mem: bool
    lease_s: float
    client: str
    exclusive: bool
    def __init__(self, model_sha256: _Optional[str] = ..., core_mask: _Optional[int] = ..., perf_debug: _Optional[bool] = ..., eval_mem: _Optional[bool] = ..., lease_s: _Optional[float] = ..., client: _Optional[str] = ..., exclusive: _Optional[bool] = ...) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ("session_id", "header", "backend", "lease_s", "load_time_s", "hold_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    LOAD_TIME_S_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    header: _package_pb2.PackageHeader
    backend: str
    lease_s: float
    load_time_s: float
    hold_id: str
    def __init__(self, session_id: _Optional[str] = ..., header: _Optional[_Union[_package_pb2.PackageHeader, _Mapping]] = ..., backend: _Optional[str] = ..., lease_s: _Optional[float] = ..., load_time_s: _Optional[float] = ..., hold_id: _Optional[str] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class KeepAliveResponse(_message.Message):
    __slots__ = ("lease_remaining_s",)
    LEASE_REMAINING_S_FIELD_NUMBER: _ClassVar[int]
    lease_remaining_s: float
    def __init__(self, lease_remaining_s: _Optional[float] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("session_id", "inputs", "data_format", "pass_through", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    DATA_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PASS_THROUGH_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    inputs: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tensor]
    data_format: _containers.RepeatedScalarFieldContainer[str]
    pass_through: _containers.RepeatedScalarFieldContainer[bool]
    request_id: int
    def __init__(self, session_id: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[_common_pb2.Tensor, _Mapping]]] = ..., data_format: _Optional[_Iterable[str]] = ..., pass_through: _Optional[_Iterable[bool]] = ..., request_id: _Optional[int] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("outputs", "request_id", "run_time_us")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_TIME_US_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tensor]
    request_id: int
    run_time_us: float
    def __init__(self, outputs: _Optional[_Iterable[_Union[_common_pb2.Tensor, _Mapping]]] = ..., request_id: _Optional[int] = ..., run_time_us: _Optional[float] = ...) -> None: ...

class EvalPerfRequest(_message.Message):
    __slots__ = ("session_id", "runs", "warmup", "per_layer")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_FIELD_NUMBER: _ClassVar[int]
    PER_LAYER_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    runs: int
    warmup: int
    per_layer: bool
    def __init__(self, session_id: _Optional[str] = ..., runs: _Optional[int] = ..., warmup: _Optional[int] = ..., per_layer: _Optional[bool] = ...) -> None: ...

class LayerTime(_message.Message):
    __slots__ = ("index", "op_type", "data_type", "target", "input_shapes", "output_shapes", "time_us", "name")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OP_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPES_FIELD_NUMBER: _ClassVar[int]
    TIME_US_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    index: int
    op_type: str
    data_type: str
    target: str
    input_shapes: str
    output_shapes: str
    time_us: float
    name: str
    def __init__(self, index: _Optional[int] = ..., op_type: _Optional[str] = ..., data_type: _Optional[str] = ..., target: _Optional[str] = ..., input_shapes: _Optional[str] = ..., output_shapes: _Optional[str] = ..., time_us: _Optional[float] = ..., name: _Optional[str] = ...) -> None: ...

class EvalPerfResponse(_message.Message):
    __slots__ = ("run_times_us", "layers", "backend", "used_last_inputs", "profiled_run_times_us", "others_calls", "exclusive")
    RUN_TIMES_US_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    USED_LAST_INPUTS_FIELD_NUMBER: _ClassVar[int]
    PROFILED_RUN_TIMES_US_FIELD_NUMBER: _ClassVar[int]
    OTHERS_CALLS_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    run_times_us: _containers.RepeatedScalarFieldContainer[float]
    layers: _containers.RepeatedCompositeFieldContainer[LayerTime]
    backend: str
    used_last_inputs: bool
    profiled_run_times_us: _containers.RepeatedScalarFieldContainer[float]
    others_calls: int
    exclusive: bool
    def __init__(self, run_times_us: _Optional[_Iterable[float]] = ..., layers: _Optional[_Iterable[_Union[LayerTime, _Mapping]]] = ..., backend: _Optional[str] = ..., used_last_inputs: _Optional[bool] = ..., profiled_run_times_us: _Optional[_Iterable[float]] = ..., others_calls: _Optional[int] = ..., exclusive: _Optional[bool] = ...) -> None: ...

class EvalMemoryResponse(_message.Message):
    __slots__ = ("weight_bytes", "internal_bytes", "other_bytes", "total_bytes", "method", "process_rss_bytes")
    WEIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    OTHER_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PROCESS_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    weight_bytes: int
    internal_bytes: int
    other_bytes: int
    total_bytes: int
    method: str
    process_rss_bytes: int
    def __init__(self, weight_bytes: _Optional[int] = ..., internal_bytes: _Optional[int] = ..., other_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., method: _Optional[str] = ..., process_rss_bytes: _Optional[int] = ...) -> None: ...

class UnloadResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id", "model_sha256", "model_name", "client", "backend", "created_unix", "last_used_unix", "lease_s", "inferences", "yours", "exclusive")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_UNIX_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    INFERENCES_FIELD_NUMBER: _ClassVar[int]
    YOURS_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model_sha256: str
    model_name: str
    client: str
    backend: str
    created_unix: float
    last_used_unix: float
    lease_s: float
    inferences: int
    yours: bool
    exclusive: bool
    def __init__(self, session_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., model_name: _Optional[str] = ..., client: _Optional[str] = ..., backend: _Optional[str] = ..., created_unix: _Optional[float] = ..., last_used_unix: _Optional[float] = ..., lease_s: _Optional[float] = ..., inferences: _Optional[int] = ..., yours: _Optional[bool] = ..., exclusive: _Optional[bool] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionInfo]
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionInfo, _Mapping]]] = ...) -> None: ...
