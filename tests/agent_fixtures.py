"""Real agent processes on 127.0.0.1 for tests (the same LocalAgent the demo and benchmarks use)."""

from __future__ import annotations

from rkfarm.remote.local import LocalAgent

AgentProcess = LocalAgent

__all__ = ["AgentProcess"]
