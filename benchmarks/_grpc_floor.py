"""A bare gRPC server with the agent's service name and transport settings but none of its work, for
measuring what gRPC Python itself costs on this machine (the floor under the agent's figures).

Infer echoes the first input's bytes back; Upload counts and discards; GetModel answers at once.
Run as a script it serves on 127.0.0.1 and prints its port.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from concurrent import futures
from typing import Any

import grpc

from rkfarm_proto.transport import THROUGHPUT_OPTIONS, message_limits
from rkfarm_proto.v1 import agent_pb2, agent_pb2_grpc, common_pb2


class Floor(agent_pb2_grpc.AgentServicer):
    def GetModel(self, request: Any, context: Any) -> agent_pb2.GetModelResponse:  # noqa: N802
        return agent_pb2.GetModelResponse()

    def Infer(self, request: Any, context: Any) -> agent_pb2.InferResponse:  # noqa: N802
        data = request.inputs[0].data if request.inputs else b""
        return agent_pb2.InferResponse(outputs=[common_pb2.Tensor(data=data)])

    def InferStream(self, requests: Iterable[Any], context: Any) -> Iterable[agent_pb2.InferResponse]:  # noqa: N802
        for request in requests:
            yield agent_pb2.InferResponse(request_id=request.request_id)

    def Upload(self, chunks: Iterable[Any], context: Any) -> agent_pb2.UploadResponse:  # noqa: N802
        return agent_pb2.UploadResponse(received_bytes=sum(len(c.data) for c in chunks))


def main() -> int:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8), options=[*message_limits(1 << 28), *THROUGHPUT_OPTIONS]
    )
    agent_pb2_grpc.add_AgentServicer_to_server(Floor(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
