"""Errors raised by the agent's own parts (the root class is shared: rkfarm_proto.errors.RkfarmError)."""

from __future__ import annotations

from rkfarm_proto.errors import RkfarmError


class BackendError(RkfarmError):
    """A backend could not load or run a payload."""


class NoBackendError(BackendError):
    """No backend on this machine can run the payload kind."""


class StoreError(RkfarmError):
    """The model store cannot do what was asked (invalid package, corrupt file on disk)."""


class UnknownModelError(StoreError):
    """No model with that sha256 on this agent."""


class CorruptModelError(UnknownModelError):
    """The stored model failed its hash check and was removed: to a host, a model to upload again."""


class UploadTooLargeError(StoreError):
    """An upload over the size limit, or one the store cannot make room for."""


class UploadConflictError(StoreError):
    """An upload that cannot proceed now: a concurrent upload of the same model, or a bad resume offset."""


class UploadCorruptError(StoreError):
    """Uploaded bytes that do not match what was announced (size or sha256)."""


class UnknownSessionError(RkfarmError):
    """No session with that id (never opened, unloaded, or its lease expired)."""


class TooManySessionsError(RkfarmError):
    """The agent or this client already holds the maximum number of sessions."""
