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


# An agent's refusal says what it is in trailing metadata, so that a host reacts to the kind of error, never to
# the wording of its message. ``rkfarm-error`` names what was not found; ``rkfarm-refused`` (with
# RESOURCE_EXHAUSTED) names the limit that refused the call, so a host can fall back to unary calls or wait for
# an upload slot.
ERROR_KEY = "rkfarm-error"
UNKNOWN_SESSION = "unknown-session"  # never opened, unloaded, or its lease expired: open a new one
UNKNOWN_MODEL = "unknown-model"  # the agent does not hold that package: upload it
UNKNOWN_HOLD = "unknown-hold"  # the exclusive hold named lapsed or was released: take a new one
ERROR_KINDS = (UNKNOWN_SESSION, UNKNOWN_MODEL, UNKNOWN_HOLD)

REFUSED_KEY = "rkfarm-refused"
REFUSED_STREAMS = "streams"
REFUSED_UPLOADS = "uploads"
REFUSED_RUNS = "runs"
REFUSED_HELD = "held"  # another client holds the board exclusively (Hold, exclusive Load): wait for it or go elsewhere

# A call made under an exclusive hold carries the hold's id in this metadata key (``rkfarm_agent.holds``).
HOLD_KEY = "rkfarm-hold"


def metadata_value(trailing_metadata: object, key: str) -> str | None:
    """The value of ``key`` in a call's trailing metadata (``exc.trailing_metadata()``), if present."""
    for item in trailing_metadata or ():  # type: ignore[attr-defined]
        if item[0] == key:
            value = item[1]
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def refused_kind(trailing_metadata: object) -> str | None:
    """The limit that refused a call (one of the ``REFUSED_*`` values), if any."""
    return metadata_value(trailing_metadata, REFUSED_KEY)


def error_kind(trailing_metadata: object) -> str | None:
    """What a call did not find (one of ``ERROR_KINDS``), if the agent said."""
    return metadata_value(trailing_metadata, ERROR_KEY)


def message_limits(max_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)]
