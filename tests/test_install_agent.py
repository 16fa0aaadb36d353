"""deploy/ for a fleet of boards, without a board: install-agent.sh (its refusals, and a trial install under a
prefix run twice), validate-board.sh (arguments, no librknnrt, the librknnrt test double), and the agent's
``doctor`` / ``Info.system`` over fake board trees (a device tree, rknpu device nodes, a mainline NPU driver).

The same script runs inside an emulated arm64 image in tests/test_board_arm64.py (`make board`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rkfarm_agent import doctor, system
from rkfarm_agent.cli import main as agent_main
from rkfarm_agent.system import NpuNode

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "install-agent.sh"
VALIDATE = REPO / "deploy" / "validate-board.sh"
DATA = Path(__file__).parent / "data"
H, W, C, MEAN, STD = 6, 8, 3, 127.5, 64.0  # the librknnrt test double's model (tests/data/fake_rknnrt.c)


def _run(
    script: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})  # fmt: skip


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    return lines[0]


def _fake_wheel(tmp_path: Path) -> Path:
    wheel = tmp_path / "rkfarm-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")  # never read: the script refuses before pip runs
    return wheel


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


# -- install-agent.sh refuses, in one line, before it changes anything --------------------------------------------
def test_python_older_than_3_10_is_refused_in_one_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then echo "Python 3.9.18"; else echo 3.9; fi\n')
    fake.chmod(0o755)
    prefix = tmp_path / "prefix"
    # a PYTHON in the environment (as `make test PYTHON=python3.13` leaves there) does not override python3
    proc = _run(INSTALL, "--wheel", str(_fake_wheel(tmp_path)), "--prefix", str(prefix), "--no-systemd",
                env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": sys.executable})  # fmt: skip
    assert proc.returncode == 1
    line = _one_line(proc.stderr)
    assert line.startswith("install-agent.sh: needs Python >= 3.10; python3 (") and f"{fake}) is 3.9" in line
    assert not prefix.exists()


def test_unreachable_package_index_is_refused_in_one_line(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    index = f"http://127.0.0.1:{_closed_port()}/simple"
    proc = _run(INSTALL, "--wheel", str(_fake_wheel(tmp_path)), "--prefix", str(prefix), "--no-systemd",
                env={"PIP_INDEX_URL": index})  # fmt: skip
    assert proc.returncode == 1
    line = _one_line(proc.stderr)
    assert line.startswith(f"install-agent.sh: cannot reach the package index {index} (") and "refused" in line
    assert "PIP_INDEX_URL" in line and not prefix.exists()


def test_index_url_option_is_checked_too(tmp_path: Path) -> None:
    index = f"http://127.0.0.1:{_closed_port()}/simple"
    proc = _run(INSTALL, "--wheel", str(_fake_wheel(tmp_path)), "--prefix", str(tmp_path / "p"), "--no-systemd",
                "--index-url", index)  # fmt: skip
    assert proc.returncode == 1 and f"cannot reach the package index {index}" in _one_line(proc.stderr)


def test_index_url_from_pip_conf_is_the_one_checked(tmp_path: Path) -> None:
    """A board pointed at a mirror by pip's config (here PIP_CONFIG_FILE, read last as pip reads it): the script
    checks that mirror, not PyPI, says where it came from, and [install] wins over [global] as it does for pip."""
    closed = f"http://127.0.0.1:{_closed_port()}/simple"
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nindex-url = https://pypi.org/simple\n\n[install]\nindex-url = {closed}\n")
    proc = _run(INSTALL, "--wheel", str(_fake_wheel(tmp_path)), "--prefix", str(tmp_path / "p"), "--no-systemd",
                env={"PIP_CONFIG_FILE": str(conf), "PIP_INDEX_URL": ""})  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = _one_line(proc.stderr)
    assert line.startswith(f"install-agent.sh: cannot reach the package index {closed} (index-url in {conf}) (")
    assert f"==> package index {closed} (index-url in {conf})" in proc.stdout
    proc = _run(INSTALL, "--wheel", str(_fake_wheel(tmp_path)), "--prefix", str(tmp_path / "p"), "--no-systemd",
                env={"PIP_CONFIG_FILE": str(conf), "PIP_INDEX_URL": closed.replace("/simple", "/other")})  # fmt: skip
    assert "index-url in" not in proc.stderr and "/other" in _one_line(proc.stderr)  # the variable wins


def test_unknown_option_and_missing_root(tmp_path: Path) -> None:
    proc = _run(INSTALL, "--frobnicate")
    assert proc.returncode == 2 and "unknown option --frobnicate" in proc.stderr
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv is needed to run the script as another user")
        with tempfile.TemporaryDirectory() as public:  # pytest's own folders are root's only
            os.chmod(public, 0o755)
            wheel = _fake_wheel(Path(public))
            proc = subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(INSTALL), "--wheel",
                 str(wheel)], capture_output=True, text=True, timeout=60, cwd="/",
            )  # fmt: skip
    else:
        proc = _run(INSTALL, "--wheel", str(_fake_wheel(tmp_path)))
    assert proc.returncode == 1
    assert _one_line(proc.stderr) == "install-agent.sh: run as root (sudo), or try it under a folder with --prefix DIR"


@pytest.mark.skipif(os.geteuid() != 0, reason="the apt-get path runs only as root, without --prefix")
def test_offline_board_without_venv_fails_in_one_line(tmp_path: Path) -> None:
    """python3 without ensurepip (Debian's default) on a board that cannot reach its apt mirror: apt-get's own
    output goes to a log, the script says one line naming it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text('#!/bin/sh\ncase "$*" in *ensurepip*) exit 1 ;; esac\necho 3.11\n')
    (bin_dir / "apt-get").write_text('#!/bin/sh\necho "E: Could not resolve deb.debian.org"; exit 100\n')
    for tool in ("python3", "apt-get"):
        (bin_dir / tool).chmod(0o755)
    proc = _run(INSTALL, "--wheel", str(_fake_wheel(tmp_path)), "--no-systemd",
                env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": sys.executable})  # fmt: skip
    assert proc.returncode == 1
    line = _one_line(proc.stderr)
    assert line.startswith("install-agent.sh: apt-get could not install python3 python3-venv (log: ")
    log = Path(line.split("(log: ")[1].split(")")[0])
    assert "Could not resolve" in log.read_text() and "Could not resolve" not in proc.stdout
    log.unlink()


def test_uninstall_removes_the_service_and_program_and_keeps_settings(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    unit_dir = prefix / "etc/systemd/system"
    (unit_dir / "multi-user.target.wants").mkdir(parents=True)
    (unit_dir / "rkfarm-agent.service").write_text("[Unit]\n")
    (unit_dir / "multi-user.target.wants/rkfarm-agent.service").symlink_to(unit_dir / "rkfarm-agent.service")
    (prefix / "opt/rkfarm/venv/bin").mkdir(parents=True)
    (prefix / "etc/rkfarm").mkdir(parents=True)
    (prefix / "etc/rkfarm/agent.env").write_text("RKFARM_AGENT_PORT=50051\n")
    bin_dir = tmp_path / "bin"  # a systemctl that records being called: a --prefix uninstall must never call it
    bin_dir.mkdir()
    calls = tmp_path / "systemctl-calls"
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "systemctl").chmod(0o755)
    proc = _run(INSTALL, "--uninstall", "--prefix", str(prefix), env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    assert not (prefix / "opt/rkfarm").exists() and not (unit_dir / "rkfarm-agent.service").exists()
    assert not (unit_dir / "multi-user.target.wants/rkfarm-agent.service").is_symlink()
    assert (prefix / "etc/rkfarm/agent.env").read_text() == "RKFARM_AGENT_PORT=50051\n" and not calls.exists()
    again = _run(INSTALL, "--prefix", str(prefix), "--uninstall")  # nothing left to remove: still fine
    assert again.returncode == 0 and "removed" in again.stdout


def test_help_lists_the_options() -> None:
    proc = _run(INSTALL, "--help")
    assert proc.returncode == 0
    for option in ("--wheel", "--no-systemd", "--prefix", "--python", "--index-url", "--farm-key", "--uninstall"):
        assert option in proc.stdout
    assert not proc.stdout.startswith("#")


# -- a trial install under a prefix, twice --------------------------------------------------------------------
def _tree(root: Path) -> dict[str, str]:
    """Relative path -> mode and content digest, for everything but the virtual environment."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith("opt/rkfarm/venv"):
            continue
        body = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        found[rel] = f"{oct(path.stat().st_mode)} {body}"
    return found


@pytest.mark.slow
def test_trial_install_twice_is_idempotent(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import board_arm64
    finally:
        sys.path.remove(str(REPO / "tools"))
    wheel = board_arm64.build_wheel(tmp_path / "dist")
    from rkfarm.keys import make_farm_key

    farm_key = make_farm_key(tmp_path / "farm.key")
    bin_dir = tmp_path / "bin"  # a systemctl that records being called: --no-systemd must never call it
    bin_dir.mkdir()
    calls = tmp_path / "systemctl-calls"
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "systemctl").chmod(0o755)
    prefix = tmp_path / "prefix"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    args = ["--wheel", str(wheel), "--prefix", str(prefix), "--no-systemd", "--token", "--farm-key", str(farm_key)]
    first = _run(INSTALL, *args, env=env, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    after_first = _tree(prefix)
    second = _run(INSTALL, *args, env=env, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _tree(prefix) == after_first, "the second run changed what the first installed"
    assert "keeping existing" in second.stdout and "keeping existing" not in first.stdout
    assert not calls.exists(), f"--no-systemd called systemctl: {calls.read_text()}"
    assert after_first["etc/rkfarm/token"].startswith("0o100600 ")
    assert after_first["etc/rkfarm/farm.key"].startswith("0o100600 ")
    env_file = (prefix / "etc/rkfarm/agent.env").read_text()
    assert f"RKFARM_AGENT_FARM_KEY_FILE={prefix}/etc/rkfarm/farm.key" in env_file.splitlines()
    assert (prefix / "etc/systemd/system/rkfarm-agent.service").read_text() == (
        REPO / "deploy/rkfarm-agent.service").read_text()  # fmt: skip
    venv = prefix / "opt/rkfarm/venv/bin"
    info = json.loads(subprocess.run([str(venv / "rkfarm-agent"), "info", "--json"], capture_output=True,
                                     text=True, check=True, timeout=120).stdout)  # fmt: skip
    assert info["system"]["machine"] == os.uname().machine and "onnxruntime" in info["backends"]
    freeze = subprocess.run([str(venv / "python"), "-m", "pip", "list", "--format=freeze"], capture_output=True,
                            text=True, check=True, timeout=120).stdout  # fmt: skip
    names = {line.split("==")[0].lower() for line in freeze.splitlines()}
    assert {"rkfarm", "grpcio", "onnxruntime", "zeroconf", "cryptography"} <= names
    assert not names & {"onnx", "onnxslim", "torch", "opencv-python-headless"}, "host-only packages on a board"


# -- doctor and Info.system over fake board trees --------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The librknnrt test double, with the version line the real library carries appended."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the librknnrt test double")
    out = tmp_path_factory.mktemp("rknnrt") / "librknnrt.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(out), str(DATA / "fake_rknnrt.c")], check=True)
    with out.open("ab") as fh:
        fh.write(b"\0librknnrt version: 9.9.9 (test double)\0")
    return out


def _board_tree(root: Path) -> Path:
    """An RK3588 board as its files show it: the device tree, the rknpu DRM node, the display's nodes."""
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/compatible").write_bytes(b"radxa,rock-5b\0rockchip,rk3588\0")
    (root / "proc/device-tree/model").write_bytes(b"Radxa ROCK 5B\0")
    drivers = root / "sys/bus/platform/drivers"
    for name in ("RKNPU", "rockchip-drm"):
        (drivers / name).mkdir(parents=True)
    for node, driver in (("card0", "rockchip-drm"), ("card1", "RKNPU"), ("renderD128", "rockchip-drm"),
                         ("renderD129", "RKNPU"), ("card0-HDMI-A-1", "rockchip-drm")):  # fmt: skip
        device = root / "sys/class/drm" / node / "device"
        device.mkdir(parents=True)
        (device / "driver").symlink_to(drivers / driver)
        if "-" not in node:
            (root / "dev/dri").mkdir(parents=True, exist_ok=True)
            (root / "dev/dri" / node).write_bytes(b"")
    (root / "sys/kernel/debug/rknpu").mkdir(parents=True)
    (root / "sys/kernel/debug/rknpu/version").write_text("RKNPU driver: v0.9.6\n")
    return root


def test_doctor_on_a_board_tree(tmp_path: Path, fake_lib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RKFARM_RKNNRT_LIB", str(fake_lib))
    root = _board_tree(tmp_path)
    facts = system.board_facts(root)
    assert facts.compatible == ["radxa,rock-5b", "rockchip,rk3588"] and facts.model == "Radxa ROCK 5B"
    assert [(n.path, n.driver) for n in facts.npu_nodes] == [("/dev/dri/card1", "RKNPU"), ("/dev/dri/renderD129",
                                                                                          "RKNPU")]  # fmt: skip
    assert facts.npu_driver_version == "RKNPU driver: v0.9.6"
    assert (facts.librknnrt_path, facts.librknnrt_version, facts.librknnrt_error) == (
        str(fake_lib), "9.9.9 (test double)", "")  # fmt: skip
    on_arm = replace(facts, machine="aarch64")
    found = {c.name: c for c in doctor.checks(on_arm, root)}
    assert [c.status for c in found.values()] == ["ok", "info", "ok", "ok", "ok", "info", "ok"]
    assert found["device tree"].detail.startswith("rk3588 (Radxa ROCK 5B)")
    assert doctor.verdict(list(found.values())).startswith("NPU path: ready")
    # on this PC the same tree still lacks an Arm CPU
    assert doctor.verdict(doctor.checks(facts, root)).startswith("NPU path: not ready (architecture missing)")


def test_doctor_names_the_fix_for_each_gap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _board_tree(tmp_path)
    closed = NpuNode("/dev/dri/renderD129", "RKNPU", accessible=False)
    facts = replace(system.board_facts(root), machine="aarch64", npu_nodes=[closed], librknnrt_path="")
    found = {c.name: c for c in doctor.checks(facts, root)}
    assert found["npu access"].status == "missing" and "usermod -aG" in found["npu access"].fix
    assert found["librknnrt"].status == "missing" and "rknpu2/runtime/Linux/librknn_api" in found["librknnrt"].fix
    assert "->" in found["librknnrt"].line() and found["librknnrt"].line().startswith("missing librknnrt")
    # a mainline kernel: no rknpu node, an accel node of another driver
    mainline = tmp_path / "mainline"
    (mainline / "sys/bus/platform/drivers/rocket").mkdir(parents=True)
    (mainline / "sys/class/accel/accel0/device").mkdir(parents=True)
    (mainline / "sys/class/accel/accel0/device/driver").symlink_to(mainline / "sys/bus/platform/drivers/rocket")
    (mainline / "dev/accel").mkdir(parents=True)
    (mainline / "dev/accel/accel0").write_bytes(b"")
    facts = system.board_facts(mainline)
    assert not facts.npu_nodes and [(n.path, n.driver) for n in facts.other_accel_nodes] == [
        ("/dev/accel/accel0", "rocket")]  # fmt: skip
    npu = {c.name: c for c in doctor.checks(facts, mainline)}["npu device"]
    assert npu.status == "missing" and "/dev/accel/accel0 (rocket)" in npu.detail and "BSP" in npu.fix
    # a library that is found but does not load (another architecture, or not a library at all)
    junk = tmp_path / "librknnrt-junk.so"
    junk.write_bytes(b"not an ELF file")
    monkeypatch.setenv("RKFARM_RKNNRT_LIB", str(junk))
    facts = system.board_facts(root)
    assert facts.librknnrt_path == str(junk) and facts.librknnrt_error
    assert {c.name: c for c in doctor.checks(facts, root)}["librknnrt"].detail.startswith(f"{junk} does not load")


def test_info_system_message_and_the_doctor_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = doctor.system_info(_board_tree(tmp_path))
    assert message.machine == os.uname().machine and list(message.device_tree_compatible)[-1] == "rockchip,rk3588"
    assert [n.path for n in message.npu_nodes] == ["/dev/dri/card1", "/dev/dri/renderD129"]
    assert message.npu_ready is False or os.uname().machine == "aarch64"
    code = agent_main(["doctor"])
    out = capsys.readouterr().out.splitlines()
    assert code == (0 if doctor.lines()[1] else 1)
    assert out[-1].startswith("NPU path: ") and all(line.split()[0] in ("ok", "missing", "info") for line in out[:-1])
    code = agent_main(["doctor", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == (0 if data["npu_ready"] else 1) and {c["name"] for c in data["checks"]} >= {"architecture",
                                                                                              "librknnrt"}  # fmt: skip


# -- validate-board.sh -----------------------------------------------------------------------------------------
def _validate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _run(VALIDATE, "--python", sys.executable, *args, env=env, timeout=300)


def _fake_rknn(path: Path) -> Path:
    body = b"FAKE" + struct.pack("<IIIff", H, W, C, MEAN, STD)
    path.write_bytes(b"RKNN" + b"\0" * 4 + struct.pack("<QQ", 6, len(body)) + body)
    return path


def _channel_means(image: np.ndarray) -> np.ndarray:
    """What the double's model computes, written out independently: the per-channel mean of the normalised image."""
    means: np.ndarray = ((image.astype(np.float64) - MEAN) / STD).reshape(-1, C).mean(axis=0)
    return means.reshape(1, C).astype(np.float32)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--model FILE is required"),
        (["--model"], "--model needs a value"),
        (["--model", "/nonexistent.rknn"], "--model /nonexistent.rknn: no such file"),
        (["--bogus"], "unknown option --bogus"),
        (["--model", "{m}", "--expected", "{m}"], "--expected needs --inputs"),
        (["--model", "{m}", "--tolerance", "abc"], "--tolerance must be a non-negative number"),
        (["--model", "{m}", "--min-cosine", "2"], "--min-cosine must be a number <= 1"),
        (["--model", "{m}", "--runs", "0"], "--runs must be a whole number >= 1"),
        (["--model", "{m}", "--warmup", "-1"], "--warmup must be a whole number >= 0"),
        (["--model", "{m}", "--core-mask", "5"], "--core-mask must be 0, 1, 2, 4, 3, 7 or -1"),
        (["--model", "{m}", "--data-format", "chw"], "--data-format must be nhwc or nchw"),
        (["--model", "{m}", "--lib", "/nonexistent/librknnrt.so"], "--lib /nonexistent/librknnrt.so: no such file"),
    ],
)
def test_validate_board_refuses_bad_arguments(args: list[str], message: str, tmp_path: Path) -> None:
    model = _fake_rknn(tmp_path / "m.rknn")
    proc = _validate(*[a.replace("{m}", str(model)) for a in args])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[0] == f"validate-board.sh: {message}" or message in proc.stderr.splitlines()[0]
    assert proc.stdout == ""


def test_validate_board_help() -> None:
    proc = _validate("--help")
    assert proc.returncode == 0 and "--expected FILE.npz" in proc.stdout and "Exit status" in proc.stdout


def test_validate_board_without_librknnrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rkfarm_agent.backends.rknnrt import capi

    monkeypatch.delenv("RKFARM_RKNNRT_LIB", raising=False)
    if capi.library_path() is not None:
        pytest.skip("this machine has a librknnrt")
    proc = _validate("--model", str(_fake_rknn(tmp_path / "m.rknn")))
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].startswith("FAIL  librknnrt     librknnrt.so not found -> copy librknnrt.so")
    assert lines[-1] == "VERDICT: FAIL (librknnrt not found)"
    assert "==> 1. the agent" in lines[0] and any(line.startswith("NPU path: not ready") for line in lines)


def test_validate_board_agent_python_missing(tmp_path: Path) -> None:
    proc = _run(VALIDATE, "--model", str(_fake_rknn(tmp_path / "m.rknn")), "--python", "/usr/bin/false")
    assert proc.returncode == 1 and proc.stdout.strip().splitlines()[-1] == "VERDICT: FAIL (no agent install)"


def test_validate_board_through_the_librknnrt_double(tmp_path: Path, fake_lib: Path) -> None:
    """Every step on the double: outputs compared with independently computed ones; then, this PC having no
    rknpu device node, the verdict is FAIL for that reason alone (a real librknnrt cannot run without it)."""
    image = np.random.default_rng(3).integers(0, 255, (1, H, W, C), dtype=np.uint8)
    np.savez(tmp_path / "inputs.npz", image)
    np.savez(tmp_path / "expected.npz", _channel_means(image))
    np.savez(tmp_path / "wrong.npz", _channel_means(image) + 0.05)
    model = str(_fake_rknn(tmp_path / "m.rknn"))
    common = ["--model", model, "--inputs", str(tmp_path / "inputs.npz"), "--lib", str(fake_lib), "--runs", "5"]
    proc = _validate(*common, "--expected", str(tmp_path / "expected.npz"))
    lines = proc.stdout.strip().splitlines()
    checked = lines[lines.index("==> 2-5. librknnrt, the model, outputs, timing and memory") + 1 :]
    steps = {line[6:20].strip(): line[:6].strip() for line in checked if line[:6].strip() in ("ok", "FAIL")}
    assert steps == {"librknnrt": "ok", "model": "ok", "run": "ok", "outputs": "ok", "timing": "ok", "memory": "ok",
                     "npu device": "FAIL"}, proc.stdout  # fmt: skip
    assert "9.9.9 (test double)" in proc.stdout and "max |diff| 0 " in proc.stdout
    assert proc.returncode == 1 and lines[-1] == "VERDICT: FAIL (the NPU device is missing)"
    proc = _validate(*common, "--expected", str(tmp_path / "wrong.npz"))
    assert proc.returncode == 1 and "FAIL  outputs       output 0: max |diff| 0.05" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "VERDICT: FAIL (outputs disagree with the simulator's)"
    # the tolerance is the user's to state: 0.05 of the range (at least 1) lets that error through
    proc = _validate(*common, "--expected", str(tmp_path / "wrong.npz"), "--tolerance", "0.06", "--min-cosine", "0.9")
    assert "ok    outputs" in proc.stdout and proc.stdout.strip().splitlines()[-1].endswith("NPU device is missing)")


def test_validate_board_refuses_a_cpu_model(tmp_path: Path, fake_lib: Path, cls_package: Path) -> None:
    proc = _validate("--model", str(cls_package), "--lib", str(fake_lib))
    assert proc.returncode == 1
    assert "runs on onnxruntime (the CPU), not librknnrt" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "VERDICT: FAIL (not an NPU model)"
