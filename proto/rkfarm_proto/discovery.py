"""The mDNS contract: service type and TXT properties an agent advertises and a host reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SERVICE_TYPE = "_rkfarm._tcp.local."
API_VERSION = "v1"
TXT_TAGS_MAX = 200  # bytes of tags in the TXT record (one DNS string holds 255); all of them are in Info
TXT_HOLDER_MAX = 64
_KNOWN = {"id", "platform", "npu_cores", "version", "backends", "auth", "api", "npu"}
_DYNAMIC = {"tags", "tags_more", "mem_free", "load", "sessions", "holder", "held_until", "dup"}


def format_tags(tags: Mapping[str, str], limit: int = TXT_TAGS_MAX) -> tuple[str, bool]:
    """'lab=2,camera' for {'lab': '2', 'camera': ''}, whole tags only up to ``limit`` bytes; and whether some
    were left out."""
    text, left_out = "", False
    for key in sorted(tags):
        item = f"{key}={tags[key]}" if tags[key] else key
        candidate = f"{text},{item}" if text else item
        if len(candidate.encode()) > limit:
            left_out = True
            continue
        text = candidate
    return text, left_out


def parse_tags(text: str) -> dict[str, str]:
    """The inverse of ``format_tags``."""
    tags: dict[str, str] = {}
    for item in text.split(","):
        key, _, value = item.strip().partition("=")
        if key:
            tags[key] = value
    return tags


@dataclass(frozen=True)
class AgentAdvert:
    """What an agent says about itself in its TXT record (all strings on the wire)."""

    agent_id: str
    platform: str
    npu_cores: int
    version: str
    backends: tuple[str, ...]
    auth: str
    api: str = API_VERSION
    extra: Mapping[str, str] = field(default_factory=dict)
    # What a pool chooses by, kept current by the agent (TXT updates): free-form tags (all of them in Info when
    # ``tags_more``), free memory, load, open sessions, the exclusive holder and when its hold lapses (0: with
    # its session); ``dup``: advertised under another instance name because another agent has this id.
    tags: Mapping[str, str] = field(default_factory=dict)
    tags_more: bool = False
    mem_free_bytes: int | None = None
    load: float | None = None
    sessions: int | None = None
    holder: str = ""
    held_until: float = 0.0
    dup: bool = False
    # whether vendor .rknn models can run on this board's NPU (librknnrt loads, the rknpu driver's node is
    # there: SystemInfo.npu_ready); None: not said (an older agent). What is missing is in Info.system.
    npu_ready: bool | None = None

    def to_txt(self) -> dict[str, str]:
        txt = {
            "id": self.agent_id,
            "platform": self.platform,
            "npu_cores": str(self.npu_cores),
            "version": self.version,
            "backends": ",".join(self.backends),
            "auth": self.auth,
            "api": self.api,
            **self.extra,
        }
        if self.tags:
            txt["tags"], more = format_tags(self.tags)
            if more or self.tags_more:
                txt["tags_more"] = "1"
        if self.mem_free_bytes is not None:
            txt["mem_free"] = str(self.mem_free_bytes >> 20)  # MiB
        if self.load is not None:
            txt["load"] = f"{self.load:.2f}"
        if self.sessions is not None:
            txt["sessions"] = str(self.sessions)
        if self.holder:
            txt["holder"] = self.holder[:TXT_HOLDER_MAX]
            txt["held_until"] = str(int(self.held_until))
        if self.dup:
            txt["dup"] = "1"
        if self.npu_ready is not None:
            txt["npu"] = "ready" if self.npu_ready else "missing"
        return txt

    @classmethod
    def from_txt(cls, props: Mapping[Any, Any]) -> AgentAdvert:
        def text(v: bytes | str | None) -> str:
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "")

        txt = {text(k): text(v) for k, v in props.items()}
        try:
            cores = int(txt.get("npu_cores", "0") or 0)
        except ValueError:
            cores = 0
        return cls(
            agent_id=txt.get("id", ""),
            platform=txt.get("platform", "unknown"),
            npu_cores=cores,
            version=txt.get("version", ""),
            backends=tuple(b for b in txt.get("backends", "").split(",") if b),
            auth=txt.get("auth", "none"),
            api=txt.get("api", ""),
            extra={k: v for k, v in txt.items() if k not in _KNOWN and k not in _DYNAMIC},
            tags=parse_tags(txt.get("tags", "")),
            tags_more=txt.get("tags_more") == "1",
            mem_free_bytes=_number(txt.get("mem_free"), int, 1 << 20),
            load=_number(txt.get("load"), float, 1),
            sessions=_number(txt.get("sessions"), int, 1),
            holder=txt.get("holder", ""),
            held_until=_number(txt.get("held_until"), float, 1) or 0.0,
            dup=txt.get("dup") == "1",
            npu_ready={"ready": True, "missing": False}.get(txt.get("npu", "")),
        )


def _number(text: str | None, kind: type[Any], scale: int) -> Any:
    """A TXT number (times ``scale``), or None when absent or not a number."""
    if not text:
        return None
    try:
        return kind(text) * scale
    except ValueError:
        return None


def instance_name(agent_id: str) -> str:
    """The DNS-SD instance name of an agent: '<id>._rkfarm._tcp.local.'."""
    return f"{agent_id}.{SERVICE_TYPE}"
