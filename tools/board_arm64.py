"""An emulated arm64 board: Debian bookworm for arm64 built by ``debootstrap``, run by ``qemu-user-static``.

An RK3588 runs an arm64 Debian or Ubuntu; this builds that userland (no Rockchip kernel, no NPU) so the agent
can be installed from its wheel with ``deploy/install-agent.sh`` and served under emulation, then driven from
this x86 host (tests/test_board_arm64.py, ``make board``). Everything here needs root.

    sudo .venv/bin/python tools/board_arm64.py build    # build, or reuse, the cached root filesystem
    sudo .venv/bin/python tools/board_arm64.py status   # what is cached, and whether this machine can run it
    sudo .venv/bin/python tools/board_arm64.py clean    # remove the cache

* The root filesystem is cached in ``~/.cache/rkfarm/board-arm64/rootfs`` (``RKFARM_BOARD_CACHE``) with a stamp
  naming the suite, mirror and package list; a change to any of them rebuilds it.
* binfmt_misc: if aarch64 binaries do not run yet, ``Binfmt`` mounts binfmt_misc and registers qemu-aarch64 (the
  ``F`` flag: the interpreter is opened once, so the chroot needs no copy of it), and undoes exactly what it did.
* ``Chroot`` mounts what programs inside need (proc, a private /dev on tmpfs with the usual nodes, devpts,
  /dev/shm; no sysfs: the host's describes x86 CPUs) and unmounts them; nothing of the host's /dev or /sys is
  bind-mounted into the image. Programs run on an emulated Cortex-A76 (``QEMU_CPU``), the RK3588's big core.
* ``Netns`` makes a network namespace joined to the host by a veth pair on a private /30, so the emulated agent
  and its mDNS adverts never touch the host's loopback; it is removed on exit, failure included.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

log = logging.getLogger("board_arm64")

REPO = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
ARCH = "arm64"
MIRROR = os.environ.get("RKFARM_BOARD_MIRROR", "http://deb.debian.org/debian")
# what a board's image has that the agent and install-agent.sh need (systemd: for `systemd-analyze verify`)
PACKAGES = ("python3", "python3-venv", "ca-certificates", "systemd", "procps")
BUILDER_VERSION = 1  # bump when the way the image is made changes
QEMU = Path("/usr/bin/qemu-aarch64-static")
QEMU_CPU = "cortex-a76"  # the RK3588's big core (Armv8.2 with FP16, no SVE), as ONNX Runtime will find it there
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_NAME = "qemu-aarch64"
# ELF64 little-endian, e_machine 0xb7 (AArch64); the mask ignores the OS/ABI byte and the e_type low bit
BINFMT_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
BINFMT_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE_HOST_CA = "/usr/local/share/rkfarm-host-ca.crt"  # the host's CA bundle, for pip behind a TLS proxy
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# qemu-user (7.2, and later releases: QEMU issue 1837) does not implement setsockopt(IP_MULTICAST_IF), which
# zeroconf uses to send on the chosen interface. Under emulation only, the agent's Python gets this module on its
# PYTHONPATH: the one refused option becomes a no-op, and the namespace's multicast route (its single veth) sends
# where the option would have. Nothing of the agent's own is changed; a real board needs none of it.
QEMU_SHIM_DIR = "/usr/local/lib/rkfarm-qemu-shim"
QEMU_SHIM = '''"""Emulation only (tools/board_arm64.py): qemu-user refuses setsockopt(IP_MULTICAST_IF)."""
import errno
import socket

_setsockopt = socket.socket.setsockopt


def _setsockopt_under_qemu(self, level, option, *value):
    try:
        return _setsockopt(self, level, option, *value)
    except OSError as exc:
        if exc.errno == errno.ENOPROTOOPT and level == socket.IPPROTO_IP and option == socket.IP_MULTICAST_IF:
            return None
        raise


socket.socket.setsockopt = _setsockopt_under_qemu
'''
PASSED_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "PIP_INDEX_URL",
              "PIP_DEFAULT_TIMEOUT")  # fmt: skip


def cache_dir() -> Path:
    override = os.environ.get("RKFARM_BOARD_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "rkfarm" / "board-arm64"


def native() -> bool:
    """True on an arm64 machine: its binaries run without emulation."""
    return platform.machine() in ("aarch64", "arm64")


def unavailable_reason() -> str | None:
    """Why this machine cannot build or run the emulated board, or None."""
    if sys.platform != "linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, binfmt_misc and network namespaces)"
    for tool in ("debootstrap", "chroot", "ip", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install debootstrap qemu-user-static iproute2)"
    if not native():
        if not QEMU.exists():
            return f"{QEMU} is missing (apt-get install qemu-user-static)"
        if "binfmt_misc" not in Path("/proc/filesystems").read_text():
            return "the kernel has no binfmt_misc"
    return None


def stamp_content() -> dict[str, object]:
    return {"suite": SUITE, "arch": ARCH, "mirror": MIRROR, "packages": list(PACKAGES), "builder": BUILDER_VERSION}


def run(argv: Sequence[str], *, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    log.debug("$ %s", " ".join(argv))
    return subprocess.run(list(argv), check=check, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


# -- binfmt_misc -----------------------------------------------------------------------------------------------
class Binfmt:
    """Makes aarch64 binaries run here (if they do not yet), and undoes only what it did."""

    def __init__(self) -> None:
        self.mounted = False
        self.registered = False
        self.enabled = False

    def __enter__(self) -> Binfmt:
        if native():
            return self
        try:
            if not (BINFMT_DIR / "register").exists():
                run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)])
                self.mounted = True
            entry = BINFMT_DIR / BINFMT_NAME
            if not entry.exists():
                rule = f":{BINFMT_NAME}:M::{BINFMT_MAGIC}:{BINFMT_MASK}:{QEMU}:F"
                (BINFMT_DIR / "register").write_text(rule)
                self.registered = True
            elif entry.read_text().splitlines()[0].strip() != "enabled":
                entry.write_text("1")
                self.enabled = True
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        entry = BINFMT_DIR / BINFMT_NAME
        if self.registered and entry.exists():
            entry.write_text("-1")  # removes the entry
        elif self.enabled and entry.exists():
            entry.write_text("0")
        if self.mounted:
            run(["umount", str(BINFMT_DIR)], check=False)
        self.mounted = self.registered = self.enabled = False


# -- mounts ----------------------------------------------------------------------------------------------------
def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_all(path: Path) -> None:
    for point in mounts_under(path):
        run(["umount", "-l", point], check=False)
    left = mounts_under(path)
    if left:
        raise RuntimeError(f"still mounted under {path}: {', '.join(left)}")


def remove_tree(path: Path) -> None:
    """rm -rf that never follows a mount: whatever is mounted below is unmounted first, or nothing is removed."""
    if not path.exists():
        return
    unmount_all(path)
    run(["rm", "-rf", "--one-file-system", str(path)])


DEV_NODES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}


class Chroot:
    """The kernel file systems a program inside ``root`` needs, mounted for the block and unmounted after."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self) -> Chroot:
        r = self.root
        try:
            run(["mount", "-t", "proc", "proc", str(r / "proc")])
            # no sysfs: the host's describes x86 cores and caches, and ONNX Runtime's CPU probe (cpuinfo) crashes
            # on an aarch64 process reading it; without one it warns and uses its defaults
            run(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid", "rkfarm-dev", str(r / "dev")])
            for name, (major, minor) in DEV_NODES.items():
                os.mknod(r / "dev" / name, 0o20666, os.makedev(major, minor))
                os.chmod(r / "dev" / name, 0o666)
            for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                                 ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")):  # fmt: skip
                os.symlink(target, r / "dev" / name)
            for sub in ("pts", "shm"):
                (r / "dev" / sub).mkdir()
            run(["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts", str(r / "dev" / "pts")])
            run(["mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "shm", str(r / "dev" / "shm")])
            shutil.copyfile("/etc/resolv.conf", r / "etc" / "resolv.conf")
            if HOST_CA_BUNDLE.exists():
                shutil.copyfile(HOST_CA_BUNDLE, r / IMAGE_HOST_CA.lstrip("/"))
            shim = r / QEMU_SHIM_DIR.lstrip("/")
            shim.mkdir(parents=True, exist_ok=True)
            (shim / "sitecustomize.py").write_text(QEMU_SHIM)
        except BaseException:
            unmount_all(r)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        unmount_all(self.root)

    def command(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        netns: str | None = None,
    ) -> list[str]:
        """``argv`` inside the image (as ``user``, in ``netns``), with only ``env`` and a PATH in its environment."""
        full_env = {"PATH": IMAGE_PATH, "LANG": "C.UTF-8", "HOME": "/root", **(env or {})}
        if not native():
            full_env.setdefault("QEMU_CPU", QEMU_CPU)
        prefix = ["ip", "netns", "exec", netns] if netns else []
        chroot = ["chroot", *([f"--userspec={user}:{user}"] if user else []), str(self.root)]
        return [*prefix, *chroot, "/usr/bin/env", "-i", *[f"{k}={v}" for k, v in full_env.items()], *argv]

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the image and capture its output (stdout and stderr together)."""
        proc = run(self.command(argv, env, user), check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                   timeout=timeout)  # fmt: skip
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed in the image ({proc.returncode}):\n{proc.stdout}")
        return proc


def install_env() -> dict[str, str]:
    """The environment pip gets in the image: the host's proxies and index, and its CA bundle when it has one
    (a TLS-intercepting proxy signs with a CA only the host's bundle holds)."""
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    if HOST_CA_BUNDLE.exists():
        env["PIP_CERT"] = IMAGE_HOST_CA
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


# -- the root filesystem ---------------------------------------------------------------------------------------
def rootfs_path() -> Path:
    return cache_dir() / "rootfs"


def cached() -> bool:
    stamp = cache_dir() / "stamp.json"
    try:
        return json.loads(stamp.read_text()) == stamp_content() and (rootfs_path() / "usr/bin/python3").exists()
    except (OSError, ValueError):
        return False


def build_rootfs(force: bool = False) -> tuple[Path, bool]:
    """The cached root filesystem, built first if the stamp does not match; (path, built now). Needs Binfmt."""
    root, stamp = rootfs_path(), cache_dir() / "stamp.json"
    if cached() and not force:
        return root, False
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / "rootfs.partial"
    remove_tree(partial)
    stamp.unlink(missing_ok=True)
    log_path = cache / "debootstrap.log"
    started = time.perf_counter()
    log.info("debootstrap %s %s into %s (log: %s)", SUITE, ARCH, partial, log_path)
    argv = ["debootstrap", f"--arch={ARCH}", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
            str(partial), MIRROR]  # fmt: skip
    try:
        with log_path.open("w") as out:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
            raise RuntimeError(f"debootstrap failed ({proc.returncode}); last lines of {log_path}:\n{tail}")
        for deb in (partial / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()  # what `apt-get clean` would do inside: the image needs no copies of its packages
    finally:
        unmount_all(partial)  # debootstrap mounts proc/sys inside while it works
    remove_tree(root)
    partial.rename(root)
    stamp.write_text(json.dumps(stamp_content(), indent=2) + "\n")
    (cache / "build_seconds").write_text(f"{time.perf_counter() - started:.1f}\n")
    return root, True


def last_build_seconds() -> float | None:
    """How long the cached root filesystem took to build, when it was built."""
    try:
        return float((cache_dir() / "build_seconds").read_text())
    except (OSError, ValueError):
        return None


# -- the network namespace -------------------------------------------------------------------------------------
@dataclass
class Netns:
    """A network namespace joined to the host by a veth pair on a private /30 (100.64.0.0/10, unused here)."""

    name: str = field(default_factory=lambda: f"rkb17-{os.getpid()}")
    host_ip: str = ""
    ns_ip: str = ""
    host_if: str = ""

    def __enter__(self) -> Netns:
        tag = f"{os.getpid() % 100000}"
        self.host_if, ns_if = f"rkb17h{tag}", f"rkb17n{tag}"
        used = run(["ip", "-4", "-o", "addr"], stdout=subprocess.PIPE).stdout
        rng = random.Random()
        for _ in range(64):
            a, b = rng.randrange(64, 128), rng.randrange(0, 64) * 4
            if f"100.{a}.0." not in used:
                break
        self.host_ip, self.ns_ip = f"100.{a}.0.{b + 1}", f"100.{a}.0.{b + 2}"
        try:
            run(["ip", "netns", "add", self.name])
            run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", ns_if])
            run(["ip", "link", "set", ns_if, "netns", self.name])
            run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if])
            run(["ip", "link", "set", self.host_if, "multicast", "on", "up"])
            inside = ["ip", "netns", "exec", self.name]
            run([*inside, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", ns_if])
            run([*inside, "ip", "link", "set", ns_if, "multicast", "on", "up"])
            run([*inside, "ip", "link", "set", "lo", "up"])
            run([*inside, "ip", "route", "add", "224.0.0.0/4", "dev", ns_if])  # multicast leaves by the veth
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        pids = run(["ip", "netns", "pids", self.name], check=False, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for pid in pids.stdout.split():  # only what runs in our namespace: what we started there
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run(["ip", "link", "del", self.host_if], check=False, stderr=subprocess.DEVNULL)
        run(["ip", "netns", "del", self.name], check=False, stderr=subprocess.DEVNULL)

    @staticmethod
    def exists(name: str) -> bool:
        listed = run(["ip", "netns", "list"], check=False, stdout=subprocess.PIPE).stdout
        return any(line.split()[0] == name for line in listed.splitlines() if line.strip())


# -- the agent -------------------------------------------------------------------------------------------------
def build_wheel(out_dir: Path) -> Path:
    """The project's wheel, built from a copy of the sources (the working tree gets no build/ folder)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rkfarm-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
            if (REPO / name).exists():
                shutil.copy2(REPO / name, src / name)
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so", "*.pyc")
        for tree in ("proto", "agent", "host", "deploy"):
            if (REPO / tree).exists():
                shutil.copytree(REPO / tree, src / tree, ignore=ignore)
        argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                str(out_dir), str(src)]  # fmt: skip
        run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wheels = sorted(out_dir.glob("rkfarm-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise RuntimeError(f"no wheel in {out_dir}")
    return wheels[-1]


STAGE = "/tmp/rkfarm-install"  # where the deploy/ folder and the wheel go inside the image


def stage_install_files(root: Path, wheel: Path, extra: Sequence[Path] = ()) -> str:
    """Copy deploy/, the wheel and ``extra`` files into the image as a user would scp them; returns the
    wheel's path inside the image."""
    stage = root / STAGE.lstrip("/")
    remove_tree(stage)
    shutil.copytree(REPO / "deploy", stage / "deploy")
    shutil.copy2(wheel, stage / wheel.name)
    for path in extra:
        shutil.copy2(path, stage / path.name)
    return f"{STAGE}/{wheel.name}"


def reset_agent_install(chroot: Chroot) -> None:
    """Remove what install-agent.sh made, for a measured first install."""
    r = chroot.root
    for path in ("opt/rkfarm", "etc/rkfarm", "var/lib/rkfarm-agent"):
        remove_tree(r / path)
    (r / "etc/systemd/system/rkfarm-agent.service").unlink(missing_ok=True)
    (r / "etc/systemd/system/multi-user.target.wants/rkfarm-agent.service").unlink(missing_ok=True)
    chroot.run(["sh", "-c", "id rkfarm >/dev/null 2>&1 && userdel rkfarm || true"])


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an EnvironmentFile (comments and blanks skipped), as systemd reads agent.env."""
    found = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            found[key.strip()] = value.strip()
    return found


class BoardAgent:
    """``rkfarm-agent serve`` inside the image, as the unit runs it (user rkfarm, /etc/rkfarm/agent.env), in a
    network namespace, listening and advertising on the namespace's address only."""

    def __init__(self, chroot: Chroot, netns: Netns, log_path: Path, *extra: str) -> None:
        self.chroot, self.netns, self.log_path, self.extra = chroot, netns, log_path, list(extra)
        self.port = 50551
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in_s = 0.0

    @property
    def address(self) -> str:
        return f"{self.netns.ns_ip}:{self.port}"

    def start(self, timeout_s: float = 300.0) -> BoardAgent:
        root = self.chroot.root
        state = root / "var/lib/rkfarm-agent"
        # what systemd does for StateDirectory=rkfarm-agent / StateDirectoryMode=0750
        self.chroot.run(["install", "-d", "-o", "rkfarm", "-g", "rkfarm", "-m", "0750", "/var/lib/rkfarm-agent"])
        port_file = state / "port"
        port_file.unlink(missing_ok=True)
        env = read_env_file(root / "etc/rkfarm/agent.env")
        env.update({"HOME": "/var/lib/rkfarm-agent", "PYTHONUNBUFFERED": "1"})
        if not native():
            env["PYTHONPATH"] = QEMU_SHIM_DIR
        argv = [
            "/opt/rkfarm/venv/bin/rkfarm-agent",
            "serve",
            "--host",
            self.netns.ns_ip,
            "--port",
            str(self.port),
            "--mdns-interface",
            self.netns.ns_ip,
            "--port-file",
            "/var/lib/rkfarm-agent/port",
            *self.extra,
        ]
        started = time.perf_counter()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(self.chroot.command(argv, env, user="rkfarm", netns=self.netns.name),
                                         stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited with {self.proc.returncode}:\n{self.log()}")
            if port_file.exists():
                self.started_in_s = time.perf_counter() - started
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the agent did not start within {timeout_s:.0f} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, as systemd stops it; SIGKILL past ``timeout_s``. Returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode


# -- timings ---------------------------------------------------------------------------------------------------
@dataclass
class Timings:
    steps: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # measured numbers that are not durations (diffs, sizes)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.steps.append((name, time.perf_counter() - start))
            log.info("%-40s %8.1f s", name, self.steps[-1][1])

    def add(self, name: str, seconds: float) -> None:
        self.steps.append((name, seconds))

    def table(self) -> str:
        width = max((len(n) for n, _ in self.steps), default=4)
        return "\n".join([*(f"{n:<{width}}  {s:9.2f} s" for n, s in self.steps), *self.notes])


# -- command line ----------------------------------------------------------------------------------------------
def rootfs_digest(root: Path) -> str:
    """A short digest of the image's package list (what dpkg has installed), for the status output."""
    status = root / "var/lib/dpkg/status"
    return hashlib.sha256(status.read_bytes()).hexdigest()[:12] if status.exists() else "-"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("build", "status", "clean"))
    parser.add_argument("--force", action="store_true", help="build: rebuild even if the cache is current")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    reason = unavailable_reason()
    if args.command == "status":
        root = rootfs_path()
        print(f"cache     {cache_dir()} ({'current' if cached() else 'missing or stale'})")
        print(f"packages  {rootfs_digest(root)}")
        print(f"runnable  {'yes' if reason is None else 'no: ' + reason}")
        return 0
    if reason is not None:
        print(f"board_arm64: {reason}", file=sys.stderr)
        return 1
    if args.command == "clean":
        remove_tree(cache_dir())
        return 0
    start = time.perf_counter()
    with Binfmt():
        root, built = build_rootfs(force=args.force)
        with Chroot(root) as chroot:
            probe = "import platform; print(platform.machine(), platform.python_version())"
            version = chroot.run(["python3", "-c", probe])
    print(f"{'built' if built else 'reused'} {root} in {time.perf_counter() - start:.1f} s: {version.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
