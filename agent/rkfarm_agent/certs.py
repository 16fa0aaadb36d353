"""A lab certificate authority: one CA, agent (server) certificates and client certificates for mTLS.

``rkfarm-agent certs`` calls :func:`make_lab_pki`. It lives in the agent package so a board can make its own
certificates without the host toolkit. Keys are ECDSA P-256 (quick to make, supported by gRPC's TLS), signed
with SHA-256; every private key is written with mode 0600 from the moment the file exists.

Files in the output folder::

    ca.pem  ca.key                  the lab CA (reused when already there, so one CA signs the whole farm)
    agent-<name>.pem  .key          an agent's certificate: serverAuth, SANs for its names and addresses
    client-<name>.pem  .key         a host's certificate for mTLS: clientAuth
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CA_VALID_DAYS = 3650
LEAF_VALID_DAYS = 825  # the longest validity common TLS clients accept for a leaf certificate
LOOPBACK_NAMES = ("localhost", "127.0.0.1")  # every agent certificate also works on the board itself
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass
class LabPki:
    """Paths written (or reused) by :func:`make_lab_pki`."""

    ca_cert: Path
    ca_key: Path
    agent_cert: Path | None = None
    agent_key: Path | None = None
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # name -> (cert, key)
    ca_reused: bool = False


def check_name(name: str, what: str) -> str:
    """A name that is safe in a file name and a certificate subject."""
    if not _NAME.match(name):
        raise ValueError(f"{what} {name!r}: use letters, digits, '.', '_' or '-' (at most 63 characters)")
    return name


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rkfarm lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(ca: bool) -> x509.KeyUsage:
    """Signatures only (ECDHE does the key exchange); a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(
    common_name: str = "rkfarm lab CA", valid_days: int = CA_VALID_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = _new_key()
    name = _subject(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    hosts: Sequence[str] = (),
    client: bool = False,
    valid_days: int = LEAF_VALID_DAYS,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate signed by the CA: a server one (hosts become SANs) or a client one (mTLS)."""
    key = _new_key()
    now = _now()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=valid_days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """PEM, unencrypted, mode 0600 from creation (never briefly readable by others); refuses to overwrite."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))


def load_ca(cert_path: Path, key_path: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: not an EC private key (was this CA made by rkfarm-agent certs?)")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError(f"{key_path} is not the key of {cert_path}")
    return key, cert


def make_lab_pki(
    out: Path,
    agent_name: str | None = None,
    hosts: Sequence[str] = (),
    clients: Sequence[str] = (),
    valid_days: int = LEAF_VALID_DAYS,
) -> LabPki:
    """Create (or reuse) the CA in ``out`` and issue the agent and client certificates asked for.

    Existing leaf files are never overwritten: remove them first to re-issue.
    """
    if agent_name is not None:
        check_name(agent_name, "agent name")
    for name in clients:
        check_name(name, "client name")
    out.mkdir(parents=True, exist_ok=True)
    pki = LabPki(ca_cert=out / "ca.pem", ca_key=out / "ca.key")
    targets: list[Path] = []
    if agent_name is not None:
        pki.agent_cert, pki.agent_key = out / f"agent-{agent_name}.pem", out / f"agent-{agent_name}.key"
        targets += [pki.agent_cert, pki.agent_key]
    for name in clients:
        pki.clients[name] = (out / f"client-{name}.pem", out / f"client-{name}.key")
        targets += pki.clients[name]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise ValueError(f"will not overwrite {', '.join(existing)}; remove the file(s) to issue new ones")

    if pki.ca_cert.exists() and pki.ca_key.exists():
        ca_key, ca_cert = load_ca(pki.ca_cert, pki.ca_key)
        pki.ca_reused = True
    elif pki.ca_cert.exists() or pki.ca_key.exists():
        raise ValueError(f"{out} holds only one of ca.pem / ca.key; remove it or restore the other")
    else:
        ca_key, ca_cert = make_ca()
        write_private_key(pki.ca_key, ca_key)
        write_cert(pki.ca_cert, ca_cert)

    if agent_name is not None and pki.agent_cert is not None and pki.agent_key is not None:
        names = [agent_name, f"{agent_name}.local", *hosts, *LOOPBACK_NAMES]
        key, cert = issue(ca_key, ca_cert, agent_name, names, client=False, valid_days=valid_days)
        write_private_key(pki.agent_key, key)
        write_cert(pki.agent_cert, cert)
    for name, (cert_path, key_path) in pki.clients.items():
        key, cert = issue(ca_key, ca_cert, name, client=True, valid_days=valid_days)
        write_private_key(key_path, key)
        write_cert(cert_path, cert)
    log.debug("lab PKI in %s: CA %s", out, "reused" if pki.ca_reused else "created")
    return pki
