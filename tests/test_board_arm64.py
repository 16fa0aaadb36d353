"""The agent on an emulated arm64 board: Debian bookworm for arm64 (debootstrap) under qemu-user-static.

The agent is installed from the project's wheel by deploy/install-agent.sh inside the image (aarch64 wheels from
the package index), served as the unit would serve it (user rkfarm, /etc/rkfarm/agent.env, token and farm key
files) inside a network namespace of its own, and driven from this x86 host over a veth pair: discovery by mDNS,
upload, inference equal to the simulator's, eval_perf, eval_memory, an encrypted package, RKNNLite and
`rkfarm-agent doctor` inside the image, and `systemd-analyze verify` of the unit. Every step is timed; the table
goes to ~/.cache/rkfarm/board-arm64/timings.txt (docs/BENCHMARKS.md records a run).

Opt-in (it takes minutes and needs root): `make board`, or `pytest -m board_arm64 tests/test_board_arm64.py`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import board_arm64 as board

from rkfarm import RKNN
from rkfarm.keys import make_farm_key
from rkfarm.remote.client import AgentClient
from rkfarm.remote.discovery import browse_mdns
from rkfarm.samples import TextLine
from rkfarm_proto.package import read_package

pytestmark = [pytest.mark.board_arm64, pytest.mark.slow, pytest.mark.timeout(3600)]

OPT_IN = "opt-in (builds and boots an emulated arm64 board, minutes): `make board` or -m board_arm64"
IMAGES = 4  # inferences compared with the simulator (each a few hundred ms under emulation)


def _selected(config: pytest.Config) -> bool:
    expr = str(config.getoption("markexpr") or "")
    return ("board_arm64" in expr and "not board_arm64" not in expr) or os.environ.get("RKFARM_BOARD_ARM64") == "1"


def _close(got: object, want: object) -> bool:
    """The project's float rule: max |diff| <= 1e-4 x max(1, the reference output's range)."""
    a, b = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return a.shape == b.shape and float(np.max(np.abs(a - b))) <= 1e-4 * max(1.0, float(np.ptp(b)))


@dataclass
class Board:
    chroot: board.Chroot
    netns: board.Netns
    agent: board.BoardAgent
    timings: board.Timings
    farm_key: Path
    installs: list[str] = field(default_factory=list)  # install-agent.sh output, first and second run
    snapshots: list[dict[str, str]] = field(default_factory=list)  # what each run left, for idempotence

    @property
    def root(self) -> Path:
        return self.chroot.root

    def agent_id(self) -> str:
        return (self.root / "var/lib/rkfarm-agent/agent_id").read_text().strip()


def _snapshot(root: Path) -> dict[str, str]:
    """Path -> mode, owner and content digest of what install-agent.sh configures, plus the venv's packages."""
    found: dict[str, str] = {}
    for rel in ("etc/rkfarm", "etc/systemd/system/rkfarm-agent.service",
                "etc/systemd/system/multi-user.target.wants/rkfarm-agent.service"):  # fmt: skip
        top = root / rel
        for path in [top, *sorted(top.rglob("*"))] if top.is_dir() else [top]:
            st = path.lstat()
            body = os.readlink(path) if path.is_symlink() else (
                hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir")  # fmt: skip
            found[str(path.relative_to(root))] = f"{oct(st.st_mode)} {st.st_uid}:{st.st_gid} {body}"
    found["passwd:rkfarm"] = next(
        (line for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("rkfarm:")), ""
    )
    return found


def _install(chroot: board.Chroot, timings: board.Timings, wheel: Path, farm_key: Path, name: str) -> str:
    """deploy/ and the wheel copied into the image as a user would scp them, then install-agent.sh as root."""
    image_wheel = board.stage_install_files(chroot.root, wheel, [farm_key])
    argv = ["bash", f"{board.STAGE}/deploy/install-agent.sh", "--wheel", image_wheel, "--token",
            "--farm-key", f"{board.STAGE}/{farm_key.name}"]  # fmt: skip
    with timings.step(name):
        proc = chroot.run(argv, env=board.install_env(), check=False, timeout=3000)
    assert proc.returncode == 0, f"install-agent.sh failed in the image:\n{proc.stdout}"
    return proc.stdout


@pytest.fixture(scope="module")
def emulated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    if not _selected(request.config):
        pytest.skip(OPT_IN)
    reason = board.unavailable_reason()
    if reason:
        pytest.skip(f"emulated board: {reason}")
    work = tmp_path_factory.mktemp("board")
    timings = board.Timings()
    saved_env = {k: os.environ.get(k) for k in ("RKFARM_TOKEN_FILE", "RKFARM_TIMEOUT_S")}
    with contextlib.ExitStack() as stack:
        with timings.step("binfmt_misc: aarch64 via qemu-user-static"):
            stack.enter_context(board.Binfmt())
        with timings.step("root filesystem (debootstrap, or the cache)"):
            root, built = board.build_rootfs()
        if not built:
            earlier = board.last_build_seconds()
            timings.steps[-1] = ("root filesystem: cached" + (f" (built in {earlier:.0f} s)" if earlier else ""),
                                 timings.steps[-1][1])  # fmt: skip
        chroot = stack.enter_context(board.Chroot(root))
        with timings.step("wheel (pip wheel --no-deps, on the host)"):
            wheel = board.build_wheel(work / "dist")
        farm_key = make_farm_key(work / "farm.key")
        board.reset_agent_install(chroot)
        installs, snapshots = [], []
        for name in ("install-agent.sh, first install", "install-agent.sh, run again"):
            installs.append(_install(chroot, timings, wheel, farm_key, name))
            snapshots.append(_snapshot(root))
        token_file = work / "token"  # what a host is given: a copy of the board's token, mode 0600
        shutil.copyfile(root / "etc/rkfarm/token", token_file)
        token_file.chmod(0o600)
        os.environ["RKFARM_TOKEN_FILE"] = str(token_file)
        os.environ["RKFARM_TIMEOUT_S"] = "120"  # an emulated CPU is several times slower than a board's
        try:
            netns = stack.enter_context(board.Netns())
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"network namespaces are not permitted here: {exc}")
        agent = board.BoardAgent(chroot, netns, work / "agent.log", "--platform", "rk3588")
        stack.callback(agent.stop)
        agent.start()
        timings.add("agent start (serve until the port is bound)", agent.started_in_s)
        b = Board(chroot, netns, agent, timings, farm_key, installs, snapshots)
        yield b
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    assert not board.Netns.exists(b.netns.name), "the network namespace was left behind"
    out = board.cache_dir() / "timings.txt"
    out.write_text(timings.table() + "\n")
    print(f"\nemulated board timings ({out}):\n{timings.table()}")


def test_installed_from_the_wheel_idempotently(emulated: Board) -> None:
    first, second = emulated.installs
    assert "systemd is not running here: rkfarm-agent is enabled" in first
    assert "keeping existing /etc/rkfarm/agent.env" in second and "keeping existing" not in first
    assert emulated.snapshots[0] == emulated.snapshots[1], "a second run changed what the first installed"
    snap = emulated.snapshots[0]
    assert snap["etc/rkfarm/token"].startswith("0o100600 ") and snap["etc/rkfarm/farm.key"].startswith("0o100600 ")
    uid = snap["passwd:rkfarm"].split(":")[2]
    assert snap["etc/rkfarm/token"].split()[1].startswith(f"{uid}:"), "the token is not the service user's"
    assert snap["etc/systemd/system/multi-user.target.wants/rkfarm-agent.service"].endswith(
        "/etc/systemd/system/rkfarm-agent.service"
    )
    freeze = emulated.chroot.run(["/opt/rkfarm/venv/bin/python", "-m", "pip", "list", "--format=freeze"]).stdout
    names = {line.split("==")[0].lower() for line in freeze.splitlines() if "==" in line}
    assert {"rkfarm", "grpcio", "onnxruntime", "numpy", "zeroconf", "psutil", "cryptography"} <= names
    assert not names & {"onnx", "onnxslim", "torch", "tensorflow-cpu", "opencv-python-headless"}, "host packages"


def test_unit_passes_systemd_analyze_verify(emulated: Board) -> None:
    with emulated.timings.step("systemd-analyze verify (in the image)"):
        proc = emulated.chroot.run(
            ["systemd-analyze", "verify", "/etc/systemd/system/rkfarm-agent.service"], check=False, timeout=600
        )
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout


def test_discovered_by_mdns_on_the_veth(emulated: Board) -> None:
    agent_id = emulated.agent_id()
    start = time.perf_counter()
    devices = browse_mdns(60.0, interfaces=[emulated.netns.host_ip], stop_when=agent_id)
    emulated.timings.add("discovery by mDNS (host side of the veth)", time.perf_counter() - start)
    ours = [d for d in devices if d.agent_id == agent_id]
    assert ours, f"{agent_id} not found by mDNS on {emulated.netns.host_ip}; found {devices}"
    assert ours[0].address == emulated.agent.address and ours[0].platform == "rk3588"
    assert ours[0].auth == "token" and "onnxruntime" in ours[0].backends


def test_info_reports_what_it_runs_on(emulated: Board) -> None:
    with AgentClient(emulated.agent.address) as client:
        info = client.info()
    system = info.system
    assert system.machine == "aarch64" and system.kernel == os.uname().release  # qemu-user: the host's kernel
    assert not system.device_tree_compatible and not system.npu_nodes and not system.librknnrt_path
    assert not system.npu_ready
    assert [m.split(":")[0] for m in system.npu_missing] == ["device tree", "npu device", "librknnrt"]
    assert info.versions["os"].endswith("aarch64") and info.agent_id == emulated.agent_id()


def test_inference_equals_the_simulator(emulated: Board, cls_package_fp32: Path, cls_lines: list[TextLine]) -> None:
    images = [line.image for line in cls_lines[:IMAGES]]
    with RKNN(raise_errors=True) as sim:
        sim.load_rknn(str(cls_package_fp32))
        sim.init_runtime()
        expected = [sim.inference([img]) for img in images]
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package_fp32))
        with emulated.timings.step(f"upload + Load ({cls_package_fp32.stat().st_size / 1e6:.1f} MB package)"):
            assert rknn.init_runtime(target="rk3588", device_id=emulated.agent.address) == 0
        start = time.perf_counter()
        got = [rknn.inference([img]) for img in images]
        emulated.timings.add("inference, mean of one (PP-OCR cls 48x192)", (time.perf_counter() - start) / IMAGES)
    diffs = []
    for want, have in zip(expected, got):
        assert want is not None and have is not None
        assert _close(have[0], want[0])
        diffs.append(float(np.max(np.abs(np.asarray(have[0], np.float64) - np.asarray(want[0], np.float64)))))
    emulated.timings.notes.append(f"max |board - simulator| over {IMAGES} images: {max(diffs):.3g}")


# ONNX Runtime 1.32 on an FP16-capable Arm core (the RK3588's Cortex-A76/A55) rewrote this float16 model's opset-11
# MaxPool into an NHWC fp16 kernel that starts at opset 12 and refused to load it; the agent now retries without
# that layout pass (rkfarm_agent/backends/onnxruntime/session.py).
def test_float16_package_on_the_cortex_a76(emulated: Board, cls_package: Path, cls_lines: list[TextLine]) -> None:
    image = cls_lines[2].image
    with RKNN(raise_errors=True) as sim:
        sim.load_rknn(str(cls_package))
        sim.init_runtime()
        want = sim.inference([image])
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package))
        rknn.init_runtime(target="rk3588", device_id=emulated.agent.address)
        got = rknn.inference([image])
    assert want is not None and got is not None and _close(got[0], want[0])


def test_eval_perf_and_memory(emulated: Board, cls_package_fp32: Path) -> None:
    header = read_package(cls_package_fp32).header
    with RKNN(raise_errors=True) as rknn:
        rknn.load_rknn(str(cls_package_fp32))
        rknn.init_runtime(target="rk3588", device_id=emulated.agent.address, perf_debug=True, eval_mem=True)
        with emulated.timings.step("eval_perf (10 runs + per-layer profile)"):
            perf = rknn.eval_perf(is_print=False, runs=10, warmup=2)
        with emulated.timings.step("eval_memory"):
            mem = rknn.eval_memory(is_print=False)
    assert perf is not None and perf.stats.runs == 10 and perf.fps > 0 and perf.layers
    assert mem is not None and mem["weight_memory"] == header.weight_bytes > 0
    assert mem["internal_memory"] == header.activation_bytes and emulated.agent_id() in mem["where"]


def test_encrypted_package(emulated: Board, cls_package_fp32: Path, cls_lines: list[TextLine], tmp_path: Path) -> None:
    assert emulated.farm_key is not None
    encrypted = tmp_path / "cls.crypt.rkfm"
    image = cls_lines[0].image
    with RKNN(raise_errors=True) as rknn:
        rknn.export_encrypted_rknn_model(str(cls_package_fp32), str(encrypted), 2, key_file=str(emulated.farm_key))
    with RKNN(raise_errors=True) as plain, RKNN(raise_errors=True) as remote:
        plain.load_rknn(str(cls_package_fp32))
        plain.init_runtime()
        remote.load_rknn(str(encrypted))
        with emulated.timings.step("encrypted package (level 2): upload + decrypt + Load"):
            remote.init_runtime(target="rk3588", device_id=emulated.agent.address)
        want, got = plain.inference([image]), remote.inference([image])
    assert want is not None and got is not None
    assert _close(got[0], want[0])
    # the store keeps the package as uploaded, still encrypted (that no plaintext lands is tests/test_crypto.py's)
    digest = hashlib.sha256(encrypted.read_bytes()).hexdigest()
    stored = [p for p in (emulated.root / "var/lib/rkfarm-agent").rglob("*") if p.is_file() and digest in p.name]
    assert stored and stored[0].read_bytes() == encrypted.read_bytes()


LITE_SCRIPT = """\
import sys
import numpy as np
from rkfarm_agent.lite import RKNNLite

lite = RKNNLite(raise_errors=True)
lite.load_rknn(sys.argv[1])
lite.init_runtime()
np.save(sys.argv[3], lite.inference([np.load(sys.argv[2])])[0])
print(lite.get_sdk_version())
lite.release()
"""


def test_rknnlite_inside_the_image(emulated: Board, cls_package_fp32: Path, cls_lines: list[TextLine]) -> None:
    image = cls_lines[1].image
    stage = emulated.root / "tmp/rkfarm-lite"
    board.remove_tree(stage)
    stage.mkdir(parents=True)
    shutil.copyfile(cls_package_fp32, stage / "cls.rkfm")
    np.save(stage / "image.npy", image)
    (stage / "lite.py").write_text(LITE_SCRIPT)
    for path in stage.iterdir():
        path.chmod(0o644)
    stage.chmod(0o777)  # the script runs as the service user and writes its output here
    with emulated.timings.step("RKNNLite in the image (load, init_runtime, inference)"):
        proc = emulated.chroot.run(
            ["/opt/rkfarm/venv/bin/python", "/tmp/rkfarm-lite/lite.py", "/tmp/rkfarm-lite/cls.rkfm",
             "/tmp/rkfarm-lite/image.npy", "/tmp/rkfarm-lite/out.npy"], user="rkfarm", timeout=600,
        )  # fmt: skip
    assert "rkfarm-agent" in proc.stdout and "onnxruntime" in proc.stdout
    with RKNN(raise_errors=True) as sim:
        sim.load_rknn(str(cls_package_fp32))
        sim.init_runtime()
        want = sim.inference([image])
    assert want is not None
    got = np.load(stage / "out.npy")
    assert _close(got, want[0])


def test_doctor_inside_the_image(emulated: Board) -> None:
    with emulated.timings.step("rkfarm-agent doctor in the image (as rkfarm)"):
        proc = emulated.chroot.run(["/opt/rkfarm/venv/bin/rkfarm-agent", "doctor"], user="rkfarm", check=False)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 1, proc.stdout
    status = {line[8:22].strip(): line[:8].strip() for line in lines[:-1]}
    assert status == {"architecture": "ok", "kernel": "info", "device tree": "missing", "npu device": "missing",
                      "npu driver": "info", "librknnrt": "missing", "cpu backend": "ok"}, proc.stdout  # fmt: skip
    assert lines[-1].startswith("NPU path: not ready (device tree, npu device, librknnrt missing)")


def test_validate_board_without_librknnrt_in_the_image(emulated: Board, cls_package_fp32: Path) -> None:
    shutil.copy2(cls_package_fp32, emulated.root / board.STAGE.lstrip("/") / "cls.rkfm")
    with emulated.timings.step("validate-board.sh in the image (no librknnrt)"):
        proc = emulated.chroot.run(
            ["bash", f"{board.STAGE}/deploy/validate-board.sh", "--model", f"{board.STAGE}/cls.rkfm"], check=False
        )
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "VERDICT: FAIL (librknnrt not found)"


def test_stops_gracefully_on_sigterm(emulated: Board) -> None:
    with emulated.timings.step("agent stop (SIGTERM, graceful)"):
        code = emulated.agent.stop()
    assert code == 0, emulated.agent.log()[-2000:]
    assert "rkfarm-agent stopped" in emulated.agent.log()
