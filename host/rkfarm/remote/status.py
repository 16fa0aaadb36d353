"""From a failed gRPC call to the host's exception: the one table, and the one place a status code is read.

The agent names what it did not find in trailing metadata (``rkfarm_proto.transport``); the exception class
follows from that kind first, then from the status code. The message keeps the agent's own words.
"""

from __future__ import annotations

import grpc

from rkfarm.errors import AgentAuthError, AgentUnavailableError, InputError, RemoteError, SessionLostError
from rkfarm.remote.credentials import Credentials, explain_refusal
from rkfarm_proto.transport import UNKNOWN_SESSION, error_kind, refused_kind

ERROR_FOR_KIND: dict[str, type[RemoteError]] = {UNKNOWN_SESSION: SessionLostError}
ERROR_FOR_STATUS: dict[grpc.StatusCode, type[RemoteError]] = {
    grpc.StatusCode.UNAVAILABLE: AgentUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: AgentUnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: AgentAuthError,
}


def status_code(exc: BaseException) -> grpc.StatusCode | None:
    """The status code of a failed call (a gRPC error or a RemoteError), None for anything else."""
    if isinstance(exc, RemoteError):
        return exc.code
    code = exc.code() if isinstance(exc, grpc.RpcError) and hasattr(exc, "code") else None
    return code if isinstance(code, grpc.StatusCode) else None


def error_from_rpc(
    address: str,
    exc: grpc.RpcError,
    inference: bool = False,
    credentials: Credentials | None = None,
    auth: str | None = None,
) -> RemoteError | InputError:
    """The rkfarm error for a failed call to the agent at ``address``, with advice when credentials are the problem.

    ``inference``: an INVALID_ARGUMENT answer to Infer is the InputError the simulator raises for the same input.
    """
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    if inference and code == grpc.StatusCode.INVALID_ARGUMENT:
        return InputError(details)
    kind, refused = error_kind(trailing), refused_kind(trailing)
    advice = explain_refusal(credentials, code, details, auth) if credentials is not None else None
    cls: type[RemoteError]
    if advice is not None and advice[1]:
        cls = AgentAuthError
    else:
        cls = ERROR_FOR_KIND.get(kind or "") or ERROR_FOR_STATUS.get(code, RemoteError)
    if cls is AgentAuthError:
        reason = advice[0] if advice is not None else "credentials refused"
        message = f"agent at {address}: access failed: {reason} [{code.name}: {details}]"
    elif cls is AgentUnavailableError:
        hint = f"; {advice[0]}" if advice is not None else ""
        message = f"agent at {address}: {code.name}: {details or 'no answer'}{hint}"
    elif cls is SessionLostError:
        message = f"agent at {address}: {code.name}: {details}"
    else:
        message = f"agent at {address} refused: {code.name}: {details}"
    return cls(message, code=code, kind=kind, refused=refused)
