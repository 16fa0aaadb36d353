"""Access control: a bearer token checked by a server interceptor, and TLS / mTLS server credentials.

The token comes from a file (``--token-file``), never from the command line. The agent keeps only its
SHA-256 digest and compares digests with ``hmac.compare_digest`` (constant time, and no length leak), so the
token is in no log, error message or traceback. TLS uses gRPC's own TLS stack; with a client CA the agent
requires and verifies client certificates (mTLS) during the handshake, before any call reaches the servicer.

The auth mode an agent reports in Info and its mDNS TXT record is one of
``none | token | tls | mtls | token+tls | token+mtls``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rkfarm_agent.config import AgentConfig
from rkfarm_agent.grpc_types import Handler, Interceptor
from rkfarm_proto.auth import AUTH_METADATA, auth_mode, bearer_token

log = logging.getLogger(__name__)


MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 4096
# Reachable without a token when the agent runs with --open-health (load balancers, grpcurl list).
OPEN_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
MAKE_TOKEN_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE && chmod 600 FILE"


class AuthConfigError(ValueError):
    """A token, certificate or key file the agent was told to use is missing, unsafe or malformed."""


def _read_secret(path: Path, what: str) -> bytes:
    """Bytes of a file only its owner can read (like ssh refuses a group-readable private key)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise AuthConfigError(f"{what} {path} is not a regular file")
        if info.st_mode & 0o077:
            raise AuthConfigError(
                f"{what} {path} can be read by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run: chmod 600 {path}"
            )
        return path.read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_token_file(path: Path) -> bytes:
    """The token in a file: one line of visible ASCII, at least 16 characters. Never logged."""
    raw = _read_secret(path, "token file").strip()
    if not MIN_TOKEN_CHARS <= len(raw) <= MAX_TOKEN_CHARS:
        raise AuthConfigError(
            f"token file {path}: the token must have {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters "
            f"(it has {len(raw)}); make one with: {MAKE_TOKEN_HINT}"
        )
    if any(not 0x21 <= b <= 0x7E for b in raw):
        raise AuthConfigError(f"token file {path}: the token must be one line of visible ASCII characters")
    return raw


# -- token interceptor ---------------------------------------------------------------------------------------
class _RateLimitedLog:
    """At most one warning per interval, with a count of the ones left out (a flood must not fill the disk)."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self._interval_s = interval_s
        self._last = -1e9
        self._suppressed = 0
        self._lock = threading.Lock()

    def warning(self, message: str, *args: object) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self._interval_s:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        log.warning(message + (f" (and {suppressed} more refusals)" if suppressed else ""), *args)


class TokenInterceptor(Interceptor):
    """Refuses every call without ``authorization: Bearer <token>`` (UNAUTHENTICATED), except open methods.

    Runs on the server's polling thread on the call's headers alone, before any byte of the request is
    read, so it only compares digests. Every method path is refused alike — a registered method, an
    unknown one, any arity — so a caller without the token learns nothing about what the agent serves
    (an unknown path answering UNIMPLEMENTED would list the methods). The refusal is a streaming handler
    that never asks for a request message: gRPC Python then never reads the body, the agent answers at
    once, and the transport drops what the caller still sends (tests/test_transport_hardening.py).
    """

    def __init__(self, token: bytes, open_prefixes: Sequence[str] = ()) -> None:
        self._digest = hashlib.sha256(token).digest()
        self._open = tuple(open_prefixes)
        self._log = _RateLimitedLog()

    def problem(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """Why this metadata is refused, or None if it carries the right token."""
        values = [v for k, v in metadata or () if k == AUTH_METADATA]
        if not values:
            return (
                "this agent requires a bearer token and none was sent "
                "(metadata 'authorization: Bearer <token>'; rkfarm hosts read it from RKFARM_TOKEN_FILE)"
            )
        if len(values) > 1:
            return "more than one 'authorization' metadata entry; send exactly one"
        value = values[0]
        given = bearer_token(value.decode("latin-1") if isinstance(value, bytes) else value)
        if given is None:
            return "the 'authorization' metadata must read 'Bearer <token>'"
        digest = hashlib.sha256(given.encode("latin-1", "replace")).digest()
        if not hmac.compare_digest(digest, self._digest):
            return "the bearer token sent does not match this agent's token (check RKFARM_TOKEN_FILE on the host)"
        return None

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        if self._open and method.startswith(self._open):
            return continuation(handler_call_details)
        problem = self.problem(handler_call_details.invocation_metadata)
        if problem is None:
            return continuation(handler_call_details)
        return self._refusal(method, problem)

    def _refusal(self, method: str, problem: str) -> Handler:
        def refuse(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            # ``requests`` is never iterated: the request body is not read, let alone parsed.
            self._log.warning("refused %s from %s: %s", method[:200], context.peer(), problem)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)

        # Streaming in both directions whatever the method's arity: the status alone is the same answer on
        # the wire to a unary caller, and only a streaming handler lets gRPC Python skip reading the request.
        return grpc.stream_stream_rpc_method_handler(refuse)


# -- TLS -----------------------------------------------------------------------------------------------------
def _read_pem_certs(path: Path, what: str) -> tuple[bytes, list[x509.Certificate]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise AuthConfigError(f"{what} {path} holds no PEM certificate") from None
    return data, certs


def server_credentials(cert_path: Path, key_path: Path, client_ca_path: Path | None) -> grpc.ServerCredentials:
    """TLS credentials for the agent; with a client CA, clients must present a certificate it signed."""
    cert_pem, certs = _read_pem_certs(cert_path, "TLS certificate")
    key_pem = _read_secret(key_path, "TLS key")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise AuthConfigError(f"TLS key {key_path} is not an unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != certs[0].public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise AuthConfigError(f"TLS key {key_path} does not belong to the certificate {cert_path}")
    client_ca = _read_pem_certs(client_ca_path, "client CA")[0] if client_ca_path else None
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


# -- assembled -----------------------------------------------------------------------------------------------
@dataclass
class AgentAuth:
    """What the server needs: its auth mode, interceptors, and TLS credentials (None: plaintext)."""

    mode: str = "none"
    interceptors: list[Interceptor] = field(default_factory=list)
    credentials: grpc.ServerCredentials | None = None


def agent_auth(config: AgentConfig) -> AgentAuth:
    """Read and check the token and TLS files named in the config (errors say which file and why)."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise AuthConfigError("TLS needs both --tls-cert and --tls-key")
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise AuthConfigError("--tls-client-ca (mTLS) needs TLS: give --tls-cert and --tls-key too")
    auth = AgentAuth()
    if config.token_file is not None:
        open_prefixes = OPEN_METHOD_PREFIXES if config.open_health else ()
        auth.interceptors.append(TokenInterceptor(read_token_file(config.token_file), open_prefixes))
    if config.tls_cert is not None and config.tls_key is not None:
        auth.credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
    auth.mode = auth_mode(config.token_file is not None, auth.credentials is not None, config.tls_client_ca is not None)
    if config.token_file is not None and auth.credentials is None:
        log.warning("token without TLS: the token crosses the network in clear text; use this on a trusted lab only")
    return auth
