"""gRPC channel settings both ends use: message size limits and loopback/LAN throughput tuning."""

from __future__ import annotations

# One inference request or response; an agent may be started with a lower limit (--max-message), never a higher
# one than hosts accept.
MAX_MESSAGE_BYTES = 128 * 1024 * 1024

# Reading the socket in big chunks cuts syscalls for multi-megabyte tensors (measured: ~20% more
# throughput for 8 MB tensors on loopback; benchmarks/agent.py).
THROUGHPUT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.experimental.tcp_read_chunk_size", 4 * 1024 * 1024),
    ("grpc.experimental.tcp_min_read_chunk_size", 1024 * 1024),
    ("grpc.experimental.tcp_max_read_chunk_size", 16 * 1024 * 1024),
]


# A RESOURCE_EXHAUSTED status carries this trailing metadata key naming the limit that refused the call, so a
# host can react (fall back to unary calls, wait for an upload slot) without reading the message's wording.
REFUSED_KEY = "rkfarm-refused"
REFUSED_STREAMS = "streams"
REFUSED_UPLOADS = "uploads"
REFUSED_RUNS = "runs"


def refused_kind(trailing_metadata: object) -> str | None:
    """The limit named in a call's trailing metadata (``exc.trailing_metadata()``), if any."""
    for item in trailing_metadata or ():  # type: ignore[attr-defined]
        key, value = item[0], item[1]
        if key == REFUSED_KEY:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def message_limits(max_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)]
