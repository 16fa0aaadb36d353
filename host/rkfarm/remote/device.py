"""What the host knows of one agent: the record discovery, the registry and the pool pass around."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Device:
    """An agent the host can use."""

    agent_id: str
    address: str  # host:port
    platform: str
    npu_cores: int
    version: str
    backends: tuple[str, ...]
    auth: str
    source: str  # mdns | inventory | address
    # What a pool selects by (the agent's mDNS TXT record, or Info for an inventory agent); None: not reported.
    tags: dict[str, str] = field(default_factory=dict, hash=False)
    tags_more: bool = False  # the TXT record had no room for every tag: Info has them all
    mem_free_bytes: int | None = None
    load: float | None = None  # 1-minute load average per CPU
    sessions: int | None = None
    holder: str = ""  # who holds the board exclusively ("" nobody)
    held_until: float = 0.0  # unix time the hold lapses unless renewed (0: with its session)
    dup: bool = False  # advertised under another name: another agent had this id first
    instance: str = ""  # the mDNS instance name
    conflict: tuple[str, ...] = ()  # addresses of other agents claiming the same id
    # vendor .rknn models can run on its NPU (librknnrt and the rknpu driver found); None: not reported.
    # What is missing, one line each with its fix: npu_missing (from Info; `rkfarm-agent doctor` on the board)
    npu_ready: bool | None = None
    npu_missing: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mdns_interfaces() -> list[str]:
    return [i.strip() for i in os.environ.get("RKFARM_MDNS_INTERFACES", "").split(",") if i.strip()]


__all__ = ["Device", "mdns_interfaces"]
