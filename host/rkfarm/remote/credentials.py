"""What a host presents to agents: a bearer token and TLS settings, and what to say when they do not fit.

Read from the environment unless given explicitly (an argument wins over its variable):

  RKFARM_TOKEN_FILE        a file holding the agents' token (preferred)
  RKFARM_TOKEN             the token itself (CI secrets; avoid it in shells that keep a history)
  RKFARM_TLS_CA            the CA certificate (PEM) that signed the agents' certificates; setting it turns TLS on
  RKFARM_TLS_CERT / _KEY   this host's client certificate and key, for agents that require mTLS
  RKFARM_TLS_SERVER_NAME   the name to expect in agent certificates, when it is not the address dialled

The host never downgrades: with RKFARM_TLS_CA set it always speaks TLS, whatever an (unauthenticated) mDNS
record claims. Secrets are kept out of ``repr`` and out of every message; messages name variables and files.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from rkfarm.errors import RemoteError
from rkfarm_proto.auth import bearer_metadata, mode_parts

log = logging.getLogger(__name__)

HINT_TOKEN = "set RKFARM_TOKEN_FILE to a file holding the agent's token (the one given to rkfarm-agent --token-file)"
HINT_CA = "set RKFARM_TLS_CA to the CA certificate that signed the agent's certificate (rkfarm-agent certs makes one)"
HINT_CLIENT = "set RKFARM_TLS_CERT and RKFARM_TLS_KEY to a client certificate and key signed by the agent's client CA"


def _read(path: str, variable: str, secret: bool) -> bytes:
    try:
        data = Path(path).read_bytes()
        if secret and Path(path).stat().st_mode & 0o077:
            mode = stat.S_IMODE(Path(path).stat().st_mode)
            log.warning("%s=%s can be read by other users (mode %04o); chmod 600 it", variable, path, mode)
        return data
    except OSError as exc:
        raise RemoteError(f"{variable}={path}: cannot read it: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Credentials:
    """Token and TLS material for agent channels. Build with :meth:`load` (environment + overrides)."""

    token: str | None = field(default=None, repr=False)
    tls_ca: bytes | None = field(default=None, repr=False)
    tls_cert: bytes | None = field(default=None, repr=False)
    tls_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None
    token_source: str = ""  # "RKFARM_TOKEN_FILE=/path": for messages, never the token
    ca_source: str = ""

    @classmethod
    def load(
        cls,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        server_name: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Credentials:
        """Arguments first, then RKFARM_* variables; RemoteError names the variable or file that is wrong."""
        env = os.environ if env is None else env
        source = ""
        if token is not None:
            source = "the token argument"
        elif token_file is not None or env.get("RKFARM_TOKEN_FILE"):
            path = str(token_file if token_file is not None else env["RKFARM_TOKEN_FILE"])
            source = f"RKFARM_TOKEN_FILE={path}"
            token = _read(path, "RKFARM_TOKEN_FILE", secret=True).decode("ascii", "replace").strip()
        elif env.get("RKFARM_TOKEN"):
            token, source = env["RKFARM_TOKEN"].strip(), "RKFARM_TOKEN"
        if token is not None and (not token or any(not 0x21 <= ord(c) <= 0x7E for c in token)):
            raise RemoteError(f"the token from {source} must be one line of visible ASCII characters")

        ca_path = str(tls_ca) if tls_ca is not None else env.get("RKFARM_TLS_CA") or None
        cert_path = str(tls_cert) if tls_cert is not None else env.get("RKFARM_TLS_CERT") or None
        key_path = str(tls_key) if tls_key is not None else env.get("RKFARM_TLS_KEY") or None
        if (cert_path is None) != (key_path is None):
            raise RemoteError("a client certificate needs both RKFARM_TLS_CERT and RKFARM_TLS_KEY")
        if cert_path is not None and ca_path is None:
            raise RemoteError(f"RKFARM_TLS_CERT is set but TLS is not: {HINT_CA}")
        return cls(
            token=token,
            tls_ca=_read(ca_path, "RKFARM_TLS_CA", secret=False) if ca_path else None,
            tls_cert=_read(cert_path, "RKFARM_TLS_CERT", secret=False) if cert_path else None,
            tls_key=_read(key_path, "RKFARM_TLS_KEY", secret=True) if key_path else None,
            server_name=server_name if server_name is not None else env.get("RKFARM_TLS_SERVER_NAME") or None,
            token_source=source,
            ca_source=f"RKFARM_TLS_CA={ca_path}" if ca_path else "",
        )

    # -- what the channel needs --------------------------------------------------------------------------
    @property
    def tls(self) -> bool:
        return self.tls_ca is not None

    @property
    def client_cert(self) -> bool:
        return self.tls_cert is not None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self.token) if self.token else ()

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.tls_ca, private_key=self.tls_key, certificate_chain=self.tls_cert
        )

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.tls and self.server_name else []

    def describe(self) -> str:
        """For logs and messages: where things come from, never what they are."""
        parts = [f"token from {self.token_source}" if self.token else "no token"]
        parts.append(f"TLS with {self.ca_source or 'a CA'}" if self.tls else "no TLS")
        if self.client_cert:
            parts.append("client certificate")
        return ", ".join(parts)

    # -- does it fit an agent? ---------------------------------------------------------------------------
    def problems_for(self, auth: str) -> list[str]:
        """What this host lacks (or has too much of) for an agent advertising ``auth``; empty if it fits."""
        try:
            wants = mode_parts(auth)
        except ValueError:
            return [f"it asks for auth {auth!r}, which this rkfarm does not know (upgrade rkfarm?)"]
        problems = []
        if "token" in wants and not self.token:
            problems.append(f"it requires a token: {HINT_TOKEN}")
        if wants & {"tls", "mtls"} and not self.tls:
            problems.append(f"it requires TLS: {HINT_CA}")
        if "mtls" in wants and not self.client_cert:
            problems.append(f"it requires a client certificate (mTLS): {HINT_CLIENT}")
        if not wants & {"tls", "mtls"} and self.tls:
            problems.append(
                f"it does not speak TLS but this host does ({self.ca_source}); unset RKFARM_TLS_CA for this agent, "
                "or start the agent with --tls-cert/--tls-key"
            )
        return problems


def check_agent_auth(credentials: Credentials, address: str, agent_id: str, auth: str) -> None:
    """RemoteError before any call if the host cannot satisfy what the agent advertises."""
    problems = credentials.problems_for(auth)
    if problems:
        raise RemoteError(f"cannot use agent {agent_id} at {address} (auth {auth}): " + "; ".join(problems))


def explain_refusal(
    credentials: Credentials, code: grpc.StatusCode, details: str, auth: str | None = None
) -> tuple[str, bool] | None:
    """What to fix when a call failed for want of credentials: (advice, certain), or None if it looks unrelated.

    ``certain`` is False for a connection closed during set-up, which is also what an agent that is just
    restarting looks like: callers keep retrying those, and add the advice in case it persists.
    ``auth`` is the mode the agent advertised, when known.
    """
    low = details.lower()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if not credentials.token:
            return f"the agent requires a token: {HINT_TOKEN}", True
        return f"the agent did not accept the token from {credentials.token_source}; check that it is the agent's", True
    if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
        return None
    if "certificate_verify_failed" in low:
        where = credentials.ca_source or "RKFARM_TLS_CA"
        return f"the agent's certificate is not signed by the CA in {where}; give the CA that issued it", True
    if "hostname verification" in low or "peer name" in low:
        return (
            "the agent's certificate does not hold the address dialled; dial a name it holds, re-issue it with "
            "rkfarm-agent certs --host ADDRESS, or set RKFARM_TLS_SERVER_NAME to a name in the certificate",
            True,
        )
    if "wrong_version_number" in low:
        return f"the agent does not speak TLS but this host does ({credentials.ca_source}); unset RKFARM_TLS_CA", True
    if "handshake" in low or "ssl" in low:
        return f"the TLS handshake failed ({credentials.describe()})", True
    if "socket closed" in low and "stream removed" not in low:  # what a TLS agent's refusal looks like
        problems = credentials.problems_for(auth) if auth else []
        if problems:
            return "; ".join(problems), True
        if not credentials.tls:
            return f"if it persists, the agent may require TLS: {HINT_CA}", False
        if not credentials.client_cert:
            return f"if it persists, the agent may require a client certificate (mTLS): {HINT_CLIENT}", False
        return (
            "if it persists, the agent may not accept this host's client certificate "
            "(RKFARM_TLS_CERT must be signed by the agent's --tls-client-ca)",
            False,
        )
    return None
