"""Access control against real agents on 127.0.0.1: bearer token, TLS, mTLS, and what the host says.

Every refusal is checked on the wire (status code from a raw gRPC call) and as the host sees it (the error
type and the variable its message tells the user to set). The right credentials work end to end through
``RKNN.init_runtime(target='rk3588', device_id=...)``, mDNS discovery and the ``rkfarm`` CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from agent_fixtures import AgentProcess, LabFiles, agent_methods, lab_pki, raw_call, write_token
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rkfarm import RKNN
from rkfarm.errors import RemoteError
from rkfarm.remote.client import AgentAuthError, AgentClient, AgentUnavailableError
from rkfarm.remote.credentials import Credentials
from rkfarm.remote.discovery import list_devices, probe
from rkfarm.samples import TextLine
from rkfarm_agent.certs import issue, load_ca, make_lab_pki

IMAGE = np.zeros((1, 48, 192, 3), np.uint8)
HEALTH = "/grpc.health.v1.Health/Check"
NOBODY = Credentials.load(env={})  # no token, no TLS, whatever the environment holds


def start(root: Path, *extra: str, credentials: Credentials, advertise: bool = False) -> AgentProcess:
    agent = AgentProcess(
        root / f"store-{uuid.uuid4().hex[:6]}", f"sec-{uuid.uuid4().hex[:8]}", *extra,
        advertise=advertise, credentials=credentials,
    )  # fmt: skip
    return agent.start()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security")


@pytest.fixture(scope="module")
def pki(work: Path) -> LabFiles:
    return lab_pki(work / "pki")


@pytest.fixture(scope="module")
def rogue(work: Path) -> LabFiles:
    """Another lab's CA and certificates: valid TLS, but not ours."""
    return lab_pki(work / "rogue")


@pytest.fixture(scope="module")
def token_file(work: Path) -> Path:
    path = work / "agent.token"
    write_token(path)
    return path


@pytest.fixture(scope="module")
def token_agent(work: Path, token_file: Path) -> Iterator[AgentProcess]:
    agent = start(work, "--token-file", str(token_file), credentials=Credentials.load(token_file=token_file, env={}))
    yield agent
    agent.stop()


def refusal(address: str, path: str, client_streaming: bool, server_streaming: bool, **kw: object) -> grpc.RpcError:
    """The status of a raw plaintext call (no stubs, empty request)."""
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as err:
        raw_call(channel, path, client_streaming, server_streaming, [b""], timeout_s=5, **kw)  # type: ignore[arg-type]
    return err.value


def host_refused(
    address: str, credentials: Credentials, error: type[Exception], match: str, auth: str | None = None
) -> None:
    """What the host says when Info fails with these credentials."""
    client = AgentClient(address, timeout_s=5, credentials=credentials, auth=auth)
    with client, pytest.raises(error, match=match):
        client.info()


# -- bearer token --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ((), "none was sent"),
        ((("authorization", "Bearer not-the-token-but-long-enough"),), "does not match"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "must read 'Bearer <token>'"),
    ],
)
def test_every_call_without_the_right_token_is_unauthenticated(
    token_agent: AgentProcess, token_file: Path, metadata: tuple[tuple[str, str], ...], says: str
) -> None:
    token = token_file.read_text().strip()
    for path, client_streaming, server_streaming in [*agent_methods(), (HEALTH, False, False)]:
        err = refusal(token_agent.address, path, client_streaming, server_streaming, metadata=metadata)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (path, err)
        assert says in (err.details() or ""), path
        assert token not in (err.details() or "")
    assert token_agent.alive()


def test_right_token_works_and_is_never_shown(token_agent: AgentProcess, token_file: Path, cls_package: Path) -> None:
    token = token_file.read_text().strip()
    with token_agent.client() as client:
        assert client.info().auth == "token"
    with RKNN(raise_errors=True) as rknn:  # the token from the environment, as a user sets it
        os.environ["RKFARM_TOKEN_FILE"] = str(token_file)
        try:
            rknn.load_rknn(str(cls_package))
            assert rknn.init_runtime(target="rk3588", device_id=token_agent.address) == 0
            assert rknn.inference([IMAGE])[0].shape == (1, 2)  # type: ignore[index]
        finally:
            del os.environ["RKFARM_TOKEN_FILE"]
    assert token_agent.proc is not None
    argv = Path(f"/proc/{token_agent.proc.pid}/cmdline").read_bytes()
    assert str(token_file).encode() in argv and token.encode() not in argv, "the token is never in argv"
    assert "refused /rkfarm.v1.Agent/" in token_agent.log()  # refusals are logged...
    assert token not in token_agent.log()  # ...without the token


def test_host_explains_a_missing_or_wrong_token(token_agent: AgentProcess, token_file: Path) -> None:
    with AgentClient(token_agent.address, timeout_s=5, credentials=NOBODY) as client:
        with pytest.raises(AgentAuthError, match="RKFARM_TOKEN_FILE") as err:
            client.info()
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    wrong = Credentials.load(token="x" * 43, env={})
    with AgentClient(token_agent.address, timeout_s=5, credentials=wrong) as client:
        with pytest.raises(AgentAuthError, match="did not accept the token") as err:
            client.info()
        assert "x" * 43 not in str(err.value)
    with pytest.raises(RemoteError, match="RKFARM_TOKEN_FILE"):  # init_runtime(device_id='host:port') probes
        probe(token_agent.address, credentials=NOBODY)


def test_open_health_exempts_only_health_and_reflection(work: Path, token_file: Path) -> None:
    agent = start(
        work,
        "--token-file",
        str(token_file),
        "--open-health",
        credentials=Credentials.load(token_file=token_file, env={}),
    )
    try:
        with grpc.insecure_channel(agent.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(service="rkfarm.v1.Agent"), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            names = {s.name for r in refl.ServerReflectionInfo(iter([request]), timeout=5)
                     for s in r.list_services_response.service}  # fmt: skip
            assert "rkfarm.v1.Agent" in names
        err = refusal(agent.address, "/rkfarm.v1.Agent/Info", False, False)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        agent.stop()


def test_unsafe_or_weak_token_files_stop_the_agent(work: Path) -> None:
    loose = work / "loose.token"
    write_token(loose)
    loose.chmod(0o644)
    short = work / "short.token"
    short.write_text("secret\n")
    short.chmod(0o600)
    for path, says in ((loose, "chmod 600"), (short, "16 to 4096 characters"), (work / "absent", "cannot read")):
        with pytest.raises(RemoteError, match="agent exited") as err:
            start(work, "--token-file", str(path), credentials=NOBODY)
        assert says in str(err.value)


# -- TLS and mTLS --------------------------------------------------------------------------------------------
def test_tls_right_ca_works_untrusted_certificate_fails(work: Path, pki: LabFiles, rogue: LabFiles) -> None:
    agent = start(work, *pki.serve_args(), credentials=pki.credentials(client=False))
    impostor = start(work, *rogue.serve_args(), credentials=rogue.credentials(client=False))
    try:
        with AgentClient(agent.address, timeout_s=5, credentials=pki.credentials(client=False)) as client:
            assert client.info().auth == "tls"
        host_refused(
            impostor.address, pki.credentials(client=False), AgentAuthError, "not signed by the CA in RKFARM_TLS_CA"
        )  # an agent whose certificate our CA did not sign is not talked to
        host_refused(
            agent.address, NOBODY, AgentUnavailableError, "may require TLS: set RKFARM_TLS_CA"
        )  # plaintext against TLS: the handshake never completes
        host_refused(
            agent.address, NOBODY, AgentAuthError, "requires TLS: set RKFARM_TLS_CA", auth="tls"
        )  # knowing the advertised mode, the host is definite
        with grpc.insecure_channel(agent.address) as channel:
            with pytest.raises(grpc.RpcError) as err:
                raw_call(channel, "/rkfarm.v1.Agent/Info", False, False, [b""], timeout_s=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert agent.alive()
    finally:
        agent.stop()
        impostor.stop()


def test_certificate_for_a_name_and_target_name_override(work: Path, pki: LabFiles) -> None:
    """A certificate that names only 'board7' (no address): dialling the IP fails unless the host expects it."""
    ca_key, ca_cert = load_ca(pki.ca, pki.ca.with_suffix(".key"))
    key, cert = issue(ca_key, ca_cert, "board7", ["board7"])
    folder = work / "named"
    folder.mkdir()
    from rkfarm_agent.certs import write_cert, write_private_key

    write_cert(folder / "board7.pem", cert)
    write_private_key(folder / "board7.key", key)
    named = Credentials.load(tls_ca=pki.ca, server_name="board7", env={})
    agent = start(work, "--tls-cert", str(folder / "board7.pem"), "--tls-key", str(folder / "board7.key"),
                  credentials=named)  # fmt: skip
    try:
        host_refused(agent.address, pki.credentials(client=False), AgentAuthError, "RKFARM_TLS_SERVER_NAME")
        with AgentClient(agent.address, timeout_s=5, credentials=named) as client:
            assert client.info().auth == "tls"
    finally:
        agent.stop()


def test_mtls_needs_a_client_certificate_from_the_agents_ca(work: Path, pki: LabFiles, rogue: LabFiles) -> None:
    agent = start(work, *pki.serve_args(mtls=True), credentials=pki.credentials())
    try:
        with AgentClient(agent.address, timeout_s=5, credentials=pki.credentials()) as client:
            assert client.info().auth == "mtls"
        host_refused(
            agent.address,
            pki.credentials(client=False),
            AgentUnavailableError,
            "client certificate.*RKFARM_TLS_CERT and RKFARM_TLS_KEY",
        )
        host_refused(
            agent.address, pki.credentials(client=False), AgentAuthError, "requires a client certificate", auth="mtls"
        )
        foreign = Credentials.load(tls_ca=pki.ca, tls_cert=rogue.client_cert, tls_key=rogue.client_key, env={})
        host_refused(agent.address, foreign, AgentUnavailableError, "may not accept this host's client certificate")
        # A certificate of our CA, but issued to an agent (serverAuth only), is no client certificate.
        server_cert = Credentials.load(tls_ca=pki.ca, tls_cert=pki.agent_cert, tls_key=pki.agent_key, env={})
        host_refused(agent.address, server_cert, AgentUnavailableError, "may not accept this host.s client certificate")
        assert agent.alive()
    finally:
        agent.stop()


def test_agent_refuses_mismatched_or_partial_tls_settings(work: Path, pki: LabFiles, rogue: LabFiles) -> None:
    cases = [
        (["--tls-cert", str(pki.agent_cert), "--tls-key", str(rogue.agent_key)], "does not belong to the certificate"),
        (["--tls-cert", str(pki.agent_cert)], "needs both --tls-cert and --tls-key"),
        (["--tls-client-ca", str(pki.ca)], "needs TLS"),
    ]
    for args, says in cases:
        with pytest.raises(RemoteError, match="agent exited") as err:
            start(work, *args, credentials=NOBODY)
        assert says in str(err.value)


# -- everything at once, as a user runs it -------------------------------------------------------------------
@pytest.fixture(scope="module")
def fortress(work: Path, pki: LabFiles, token_file: Path) -> Iterator[AgentProcess]:
    """token + mTLS, advertised by mDNS on loopback."""
    agent = start(
        work, "--token-file", str(token_file), *pki.serve_args(mtls=True),
        credentials=pki.credentials(token_file), advertise=True,
    )  # fmt: skip
    yield agent
    agent.stop()


@pytest.mark.slow
def test_token_and_mtls_end_to_end(
    fortress: AgentProcess,
    pki: LabFiles,
    token_file: Path,
    cls_package: Path,
    cls_lines: list[TextLine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images = [line.image for line in cls_lines[:4]]
    with RKNN(raise_errors=True) as sim:
        sim.load_rknn(str(cls_package))
        sim.init_runtime()
        expected = [sim.inference([img]) for img in images]

    # Without the token, the host refuses up front from what the agent advertises, and says what to set.
    for name, value in pki.env().items():
        monkeypatch.setenv(name, value)
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package))
        with pytest.raises(RemoteError, match=r"auth token\+mtls.*RKFARM_TOKEN_FILE"):
            rknn.init_runtime(target="rk3588", device_id=fortress.agent_id)

    monkeypatch.setenv("RKFARM_TOKEN_FILE", str(token_file))
    found = [d for d in list_devices(timeout_s=4.0, stop_when=fortress.agent_id) if d.agent_id == fortress.agent_id]
    assert found and found[0].auth == "token+mtls" and found[0].source == "mdns"
    for device_id in (fortress.agent_id, fortress.address):  # found by mDNS, and dialled directly
        with RKNN(raise_errors=True) as rknn:
            rknn.load_rknn(str(cls_package))
            assert rknn.init_runtime(target="rk3588", device_id=device_id) == 0
            for img, want in zip(images, expected):
                got = rknn.inference([img])
                assert got is not None and want is not None
                np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-6)
            assert rknn.eval_memory(is_print=False) is not None


@pytest.mark.slow
def test_cli_uses_the_environment(
    fortress: AgentProcess, pki: LabFiles, token_file: Path, cls_package: Path, tmp_path: Path
) -> None:
    array = tmp_path / "line.npy"
    np.save(array, IMAGE)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RKFARM_TOKEN", "RKFARM_TLS"))}
    command = [sys.executable, "-m", "rkfarm.cli", "run", str(cls_package), str(array),
               "-o", str(tmp_path / "out"), "--device", fortress.address, "--json"]  # fmt: skip
    good = subprocess.run(command, env={**base, **pki.env(token_file)}, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr
    missing = pki.env()
    bad = subprocess.run(command, env={**base, **missing}, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "RKFARM_TOKEN_FILE" in bad.stderr
    assert token_file.read_text().strip() not in bad.stderr + good.stderr + good.stdout


# -- the certificate helper ----------------------------------------------------------------------------------
def test_certs_command_makes_a_lab_pki(tmp_path: Path) -> None:
    out = tmp_path / "lab"
    cmd = [sys.executable, "-m", "rkfarm_agent.cli", "certs", "--out", str(out)]
    first = subprocess.run([*cmd, "--agent-name", "rock5b-1", "--host", "192.168.1.40", "--client", "alice"],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert first.returncode == 0, first.stderr
    for key in ("ca.key", "agent-rock5b-1.key", "client-alice.key"):
        assert (out / key).stat().st_mode & 0o777 == 0o600, key
    agent = x509.load_pem_x509_certificate((out / "agent-rock5b-1.pem").read_bytes())
    san = agent.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"rock5b-1", "rock5b-1.local", "localhost"} <= set(san.get_values_for_type(x509.DNSName))
    assert {"192.168.1.40", "127.0.0.1"} <= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    eku = agent.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    client = x509.load_pem_x509_certificate((out / "client-alice.pem").read_bytes())
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    ca_before = (out / "ca.pem").read_bytes()
    second = subprocess.run([*cmd, "--agent-name", "rock5b-2"], capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "reused" in second.stdout
    assert (out / "ca.pem").read_bytes() == ca_before, "one CA signs the whole farm"
    again = subprocess.run([*cmd, "--agent-name", "rock5b-2"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "will not overwrite" in again.stderr
    with pytest.raises(ValueError, match="agent name"):
        make_lab_pki(out, "../escape")


# -- the pieces on their own ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("have", "auth", "problems"),
    [
        ({}, "none", []),
        ({}, "token", ["RKFARM_TOKEN_FILE"]),
        ({"token": "t" * 20}, "token+mtls", ["RKFARM_TLS_CA", "RKFARM_TLS_CERT"]),
        ({"tls": True}, "token", ["RKFARM_TOKEN_FILE", "does not speak TLS"]),
        ({"tls": True, "client": True, "token": "t" * 20}, "token+mtls", []),
        ({}, "kerberos", ["does not know"]),
    ],
)
def test_what_the_host_lacks_for_an_advertised_mode(
    pki: LabFiles, have: dict[str, object], auth: str, problems: list[str]
) -> None:
    creds = Credentials.load(
        token=have.get("token"),  # type: ignore[arg-type]
        tls_ca=pki.ca if have.get("tls") else None,
        tls_cert=pki.client_cert if have.get("client") else None,
        tls_key=pki.client_key if have.get("client") else None,
        env={},
    )
    found = " ".join(creds.problems_for(auth))
    assert bool(found) == bool(problems)
    for fragment in problems:
        assert fragment in found
    assert "t" * 20 not in repr(creds) + creds.describe()


def test_host_credentials_from_the_environment(pki: LabFiles, token_file: Path) -> None:
    env = pki.env(token_file)
    creds = Credentials.load(env=env)
    assert creds.token == token_file.read_text().strip() and creds.tls and creds.client_cert
    assert creds.metadata() == (("authorization", f"Bearer {creds.token}"),)
    assert Credentials.load(token="from-arg-1234567890", env=env).token == "from-arg-1234567890"
    assert Credentials.load(env={"RKFARM_TOKEN": "tok-from-env-123456"}).token == "tok-from-env-123456"
    with pytest.raises(RemoteError, match="RKFARM_TLS_CERT and RKFARM_TLS_KEY"):
        Credentials.load(env={"RKFARM_TLS_CA": str(pki.ca), "RKFARM_TLS_CERT": str(pki.client_cert)})
    with pytest.raises(RemoteError, match="RKFARM_TLS_CERT is set but TLS is not"):
        Credentials.load(env={"RKFARM_TLS_CERT": str(pki.client_cert), "RKFARM_TLS_KEY": str(pki.client_key)})
    with pytest.raises(RemoteError, match=r"RKFARM_TOKEN_FILE=/nonexistent: cannot read"):
        Credentials.load(env={"RKFARM_TOKEN_FILE": "/nonexistent"})


def test_deploy_example_settings_are_real_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commented access and limit setting in deploy/agent.env.example reaches its serve option."""
    from rkfarm_agent.cli import _config, build_parser

    example = (Path(__file__).resolve().parent.parent / "deploy" / "agent.env.example").read_text()
    settings = dict(
        line.removeprefix("# ").split("=", 1)
        for line in example.splitlines()
        if line.startswith("# RKFARM_AGENT_") and "=" in line
    )
    for key in ("TOKEN_FILE", "TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA", "OPEN_HEALTH", "MAX_CONCURRENT_RUNS",
                "MAX_STREAMS", "MAX_UPLOADS", "STREAM_STALL_SECONDS"):  # fmt: skip
        assert f"RKFARM_AGENT_{key}" in settings, key
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    config = _config(build_parser().parse_args(["serve"]))
    assert config.token_file == Path("/etc/rkfarm/token") and config.tls_client_ca is not None
    assert config.max_concurrent_runs == 8 and config.max_streams == 64 and config.stream_stall_s == 60
