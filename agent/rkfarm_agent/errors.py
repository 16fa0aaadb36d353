"""Errors raised by the agent's own parts (the root class is shared: rkfarm_proto.errors.RkfarmError)."""

from __future__ import annotations

from rkfarm_proto.errors import RkfarmError


class BackendError(RkfarmError):
    """A backend could not load or run a payload."""


class NoBackendError(BackendError):
    """No backend on this machine can run the payload kind."""
