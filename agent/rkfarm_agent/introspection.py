"""What a client learns without the Agent protocol: grpc.health.v1 (Check, List, Watch) and server reflection.

* **Health.** grpcio-health-checking's servicer answers Check and Watch, but the List the service declares
  is left to the generated stub: UNIMPLEMENTED, and a traceback in the agent's log per call.
  ``AgentHealth`` answers it with every status the agent has set.
* **Reflection.** grpcio-reflection ships only ``grpc.reflection.v1alpha``; current clients (grpcurl,
  Postman, grpc_cli) ask ``grpc.reflection.v1`` first. v1 is v1alpha renamed: the same messages, fields and
  field numbers, so the same servicer answers both, its requests and responses being the same bytes. The
  v1 file descriptor is derived from v1alpha's (package and options renamed) and added to the descriptor
  pool, so reflection describes its own v1 service like any other.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

HEALTH_SERVICE = health.SERVICE_NAME
REFLECTION_V1ALPHA = reflection.SERVICE_NAME
REFLECTION_V1_PACKAGE = "grpc.reflection.v1"
REFLECTION_V1 = f"{REFLECTION_V1_PACKAGE}.ServerReflection"
REFLECTION_V1_FILE = "grpc/reflection/v1/reflection.proto"


class AgentHealth(health.HealthServicer):
    """The stock servicer plus List: a snapshot of every service's status (NOT_SERVING once draining)."""

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self._statuses: dict[str, int] = {health.OVERALL_HEALTH: health_pb2.HealthCheckResponse.SERVING}
        self._draining = False
        self._list_lock = threading.Lock()

    def set(self, service: str, status: int) -> None:
        with self._list_lock:
            if self._draining:
                return  # as the stock servicer: statuses are frozen once shutdown began
            self._statuses[service] = status
        super().set(service, status)

    def enter_graceful_shutdown(self) -> None:
        super().enter_graceful_shutdown()  # sets every service NOT_SERVING through set()
        with self._list_lock:
            self._draining = True

    def List(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (the RPC's name)
        with self._list_lock:
            statuses = dict(self._statuses)
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses.items()}
        )


def add_health(servicer: AgentHealth, server: grpc.Server) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)


def _renamed(type_name: str, old: str, new: str) -> str:
    return new + type_name[len(old) :] if type_name.startswith(old) else type_name


def _rename_messages(messages: Any, old: str, new: str) -> None:
    for message in messages:
        for field in message.field:
            if field.HasField("type_name"):  # scalar fields have none; setting one, even empty, is an error
                field.type_name = _renamed(field.type_name, old, new)
        _rename_messages(message.nested_type, old, new)


def reflection_v1_file(pool: Any = None) -> FileDescriptor:
    """grpc/reflection/v1/reflection.proto in the pool (default: protobuf's), derived from v1alpha once."""
    pool = descriptor_pool.Default() if pool is None else pool
    try:
        found: FileDescriptor = pool.FindFileByName(REFLECTION_V1_FILE)
        return found  # already there: a later grpcio-reflection that ships v1, or a second server
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", f".{REFLECTION_V1_PACKAGE}."
    proto.name, proto.package = REFLECTION_V1_FILE, REFLECTION_V1_PACKAGE
    options = proto.options
    options.java_package = options.java_package.replace("v1alpha", "v1")
    options.go_package = options.go_package.replace("v1alpha", "v1")
    options.ClearField("deprecated")  # v1alpha is deprecated in favour of v1
    _rename_messages(proto.message_type, old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = _renamed(method.input_type, old, new)
            method.output_type = _renamed(method.output_type, old, new)
    added: FileDescriptor = pool.AddSerializedFile(proto.SerializeToString())
    return added


def add_reflection(service_names: tuple[str, ...], server: grpc.Server) -> None:
    """Serve reflection v1 and v1alpha for these services (the two reflection services are added to them)."""
    v1 = reflection_v1_file().services_by_name["ServerReflection"]
    names = (*service_names, REFLECTION_V1, REFLECTION_V1ALPHA)
    servicer = reflection.ReflectionServicer(names)
    for service in (v1.full_name, REFLECTION_V1ALPHA):
        handlers = {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
