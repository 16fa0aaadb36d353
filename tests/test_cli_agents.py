"""The command line against real agents on loopback (issue 16, items 1 and 8): no session outlives `rkfarm run`
or a script that forgets release(); a token-protected agent is named as wanting a token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from agent_fixtures import AgentProcess, write_token
from test_cli_errors import tiny_onnx

from rkfarm.remote.credentials import Credentials
from rkfarm.remote.discovery import probe


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rkfarm.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("agents")
    out = root / "tiny.rkfm"
    done = cli("build", str(tiny_onnx(root / "tiny.onnx")), "--input-size", "1,3,8,8", "--target", "rk3588",
               "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    np.save(root / "x.npy", np.zeros((1, 8, 8, 3), np.float32))
    return out


def sessions(agent: AgentProcess) -> int:
    with agent.client() as client:
        return len(client.list_sessions())


@pytest.mark.slow
def test_run_in_a_loop_leaves_no_session(agent: AgentProcess, tiny_package: Path) -> None:
    """20 `rkfarm run --device` in a row: each unloads its session (the agent allows 8 per client at once)."""
    array = tiny_package.parent / "x.npy"
    for i in range(20):
        out = cli("run", str(tiny_package), str(array), "-o", str(tiny_package.parent / "out"),
                  "--device", agent.address)  # fmt: skip
        assert out.returncode == 0, (i, out.stderr)
    assert sessions(agent) == 0


def test_a_script_that_forgets_release(agent: AgentProcess, tiny_package: Path) -> None:
    script = (
        "import numpy as np\nfrom rkfarm import RKNN\n"
        "rknn = RKNN(raise_errors=True)\n"
        f"rknn.load_rknn({str(tiny_package)!r})\n"
        f"rknn.init_runtime(target='rk3588', device_id={agent.address!r})\n"
        "rknn.inference([np.zeros((1, 8, 8, 3), np.float32)])\n"  # and exits without rknn.release()
    )
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert sessions(agent) == 0


@pytest.fixture()
def token_agent(tmp_path: Path) -> Iterator[tuple[AgentProcess, Path]]:
    token = tmp_path / "token"
    write_token(token)
    credentials = Credentials.load(token_file=token, env={})
    board = AgentProcess(tmp_path / "store", f"tok{uuid.uuid4().hex[:6]}", "--token-file", str(token),
                         advertise=False, credentials=credentials).start()  # fmt: skip
    yield board, token
    board.stop()


def test_token_protected_agent_is_named_as_such(token_agent: tuple[AgentProcess, Path], tiny_package: Path) -> None:
    board, token = token_agent
    env = {**os.environ, "RKFARM_AGENTS": board.address, "RKFARM_TOKEN_FILE": ""}
    env.pop("RKFARM_TOKEN_FILE")
    listed = cli("devices", "--timeout", "0.2", env=env)
    assert listed.returncode == 0
    assert "needs credentials" in listed.stderr and "did not answer" not in listed.stderr
    assert "token" in listed.stderr.lower()
    ran = cli("run", str(tiny_package), str(tiny_package.parent / "x.npy"), "--device", board.address, env=env)
    assert ran.returncode == 1 and "token" in ran.stderr.lower() and len(ran.stderr.strip().splitlines()) == 1
    with_token = cli("devices", "--timeout", "0.2", "--json", env={**env, "RKFARM_TOKEN_FILE": str(token)})
    assert with_token.returncode == 0 and board.agent_id in with_token.stdout


def test_inventory_entry_without_port_is_refused() -> None:
    env = {**os.environ, "RKFARM_AGENTS": "127.0.0.1:"}
    out = cli("devices", "--timeout", "0.1", env=env)
    assert out.returncode == 1 and "no valid port" in out.stderr and "RKFARM_AGENTS" in out.stderr
    from rkfarm.remote.discovery import inventory_addresses

    os.environ["RKFARM_AGENTS"] = "10.0.0.5, 10.0.0.6:6000"
    try:
        assert inventory_addresses() == ["10.0.0.5:50551", "10.0.0.6:6000"]
    finally:
        del os.environ["RKFARM_AGENTS"]


def test_devices_show_whether_the_npu_path_is_ready(agent: AgentProcess) -> None:
    """This machine has no librknnrt and no rknpu node: the agent says so in Info.system, and the host shows it
    (`rkfarm devices`: NPU PATH missing; --json: npu_ready false with the agent's own lines on what lacks)."""
    env = {**os.environ, "RKFARM_AGENTS": agent.address}
    table = cli("devices", "--timeout", "0.5", env=env)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert "NPU PATH" in header
    row = next(r for r in rows if agent.address in r)
    assert row[header.index("NPU PATH") :].split()[0] == "missing"
    listed = cli("devices", "--timeout", "0.5", "--json", env=env)
    found = next(d for d in json.loads(listed.stdout) if d["address"] == agent.address)
    assert found["npu_ready"] is False  # from the mDNS record (TXT "npu"), or from Info for an inventory agent
    probed = probe(agent.address)  # Info: what lacks, one line each, as `rkfarm-agent doctor` says it
    assert probed.npu_ready is False and any(line.startswith("librknnrt: ") for line in probed.npu_missing)
