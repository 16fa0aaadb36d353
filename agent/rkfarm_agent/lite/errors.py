"""Errors of the board-side RKNNLite API (the root is shared: rkfarm_proto.errors.RkfarmError)."""

from __future__ import annotations

from rkfarm_proto.errors import RkfarmError


class LiteError(RkfarmError):
    """Root of the errors RKNNLite raises itself (the backends, packages and inputs raise their own)."""


class StateError(LiteError):
    """A call out of order: inference before init_runtime, init_runtime before load_rknn."""


class NotSupportedError(LiteError):
    """A valid vendor option or value that rkfarm cannot honour on this machine."""


class OptionError(LiteError, ValueError):
    """An option value that is wrong whatever the machine: an unknown core mask, platform or level."""
