"""How a host proves who it is to an agent: the metadata both sides read and the auth modes agents advertise.

A call carries ``authorization: Bearer <token>`` when the agent wants a token. An agent reports its mode in
Info and its mDNS TXT record as ``token`` and/or a transport (``tls`` or ``mtls``) joined by ``+``, or ``none``.
"""

from __future__ import annotations

AUTH_METADATA = "authorization"
BEARER = "Bearer"
AUTH_MODES = ("none", "token", "tls", "mtls", "token+tls", "token+mtls")


def auth_mode(token: bool, tls: bool, mtls: bool) -> str:
    """The mode string of Info.auth and the TXT record."""
    transport = "mtls" if mtls else "tls" if tls else ""
    if token:
        return f"token+{transport}" if transport else "token"
    return transport or "none"


def mode_parts(mode: str) -> set[str]:
    """``token+mtls`` -> {"token", "mtls"}; ``none`` -> empty. Raises ValueError for a mode not in AUTH_MODES."""
    key = (mode or "none").strip().lower()
    if key not in AUTH_MODES:
        raise ValueError(f"unknown auth mode {mode!r}")
    return set() if key == "none" else set(key.split("+"))


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata carrying ``token``."""
    return ((AUTH_METADATA, f"{BEARER} {token}"),)


def bearer_token(value: str) -> str | None:
    """The token in an ``authorization`` value, or None if it does not read ``Bearer <token>``."""
    scheme, _, given = value.strip().partition(" ")
    return given.strip() or None if scheme.lower() == BEARER.lower() else None
