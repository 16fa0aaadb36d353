"""The mDNS contract: service type and TXT properties an agent advertises and a host reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SERVICE_TYPE = "_rkfarm._tcp.local."
API_VERSION = "v1"


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

    def to_txt(self) -> dict[str, str]:
        return {
            "id": self.agent_id,
            "platform": self.platform,
            "npu_cores": str(self.npu_cores),
            "version": self.version,
            "backends": ",".join(self.backends),
            "auth": self.auth,
            "api": self.api,
            **self.extra,
        }

    @classmethod
    def from_txt(cls, props: Mapping[Any, Any]) -> AgentAdvert:
        def text(v: bytes | str | None) -> str:
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "")

        txt = {text(k): text(v) for k, v in props.items()}
        try:
            cores = int(txt.get("npu_cores", "0") or 0)
        except ValueError:
            cores = 0
        known = {"id", "platform", "npu_cores", "version", "backends", "auth", "api"}
        return cls(
            agent_id=txt.get("id", ""),
            platform=txt.get("platform", "unknown"),
            npu_cores=cores,
            version=txt.get("version", ""),
            backends=tuple(b for b in txt.get("backends", "").split(",") if b),
            auth=txt.get("auth", "none"),
            api=txt.get("api", ""),
            extra={k: v for k, v in txt.items() if k not in known},
        )


def instance_name(agent_id: str) -> str:
    """The DNS-SD instance name of an agent: '<id>._rkfarm._tcp.local.'."""
    return f"{agent_id}.{SERVICE_TYPE}"
