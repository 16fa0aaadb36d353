"""rkfarm's exception hierarchy. Everything derives from RkfarmError; catch that to catch them all.

The RKNN-compatible facade turns these into the vendor's return codes (0 ok, -1 fail) and a logged message;
construct ``RKNN(raise_errors=True)`` (or set ``RKFARM_RAISE_ERRORS=1``) to have them raised instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rkfarm_proto.errors import ForeignFormatError, InputError, PackageError, RkfarmError

if TYPE_CHECKING:
    import grpc


class ConfigError(RkfarmError, ValueError):
    """A config() value is invalid, or does not fit the loaded model."""


class NotSupportedError(RkfarmError):
    """A valid vendor option or model format that rkfarm does not implement (yet)."""


class ModelLoadError(RkfarmError):
    """A source model cannot be read, parsed or cut as asked."""


class BuildError(RkfarmError):
    """Building the package failed."""


class StateError(RkfarmError):
    """A method was called out of order (build before load, inference before init_runtime, ...)."""


class RemoteError(RkfarmError):
    """An agent could not be reached or refused a request; the message carries the agent's reason.

    What a program may branch on, never the message: ``code``, the ``grpc.StatusCode`` a call failed with;
    ``kind``, what the agent did not find (``rkfarm_proto.transport.ERROR_KINDS``); ``refused``, the agent limit
    that refused the call (``REFUSED_*``). Each is None when the failure did not say.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        kind: str | None = None,
        refused: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind
        self.refused = refused


class AgentUnavailableError(RemoteError):
    """The agent cannot be reached (down, restarting, wrong address, network) or did not answer in time."""


class SessionLostError(RemoteError):
    """The agent no longer has the session (restarted, unloaded, or the lease expired)."""


class AgentAuthError(RemoteError):
    """The agent refused this host's credentials, or requires ones the host does not have."""


class OnnxEditError(RkfarmError, ValueError):
    """An ``onnx_edit`` transform is invalid: a bad equation, or a tensor that is not a graph input/output."""


class DatasetError(RkfarmError, ValueError):
    """A calibration dataset file or one of its samples is unusable; the message names the line."""


__all__ = [
    "AgentAuthError",
    "AgentUnavailableError",
    "BuildError",
    "ConfigError",
    "DatasetError",
    "ForeignFormatError",
    "InputError",
    "ModelLoadError",
    "NotSupportedError",
    "OnnxEditError",
    "PackageError",
    "RemoteError",
    "RkfarmError",
    "SessionLostError",
    "StateError",
]
