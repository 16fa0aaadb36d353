"""gRPC channel settings both ends use: message size limits and loopback/LAN throughput tuning."""

from __future__ import annotations

# Reading the socket in big chunks cuts syscalls for multi-megabyte tensors (measured: ~20% more
# throughput for 8 MB tensors on loopback; benchmarks/agent.py).
THROUGHPUT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.experimental.tcp_read_chunk_size", 4 * 1024 * 1024),
    ("grpc.experimental.tcp_min_read_chunk_size", 1024 * 1024),
    ("grpc.experimental.tcp_max_read_chunk_size", 16 * 1024 * 1024),
]


def message_limits(max_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)]
