"""The vendor's RKNN-Toolkit2 in its own Python environment: where it is, and making it.

The toolkit's pins (numpy <= 1.26.4, onnx <= 1.18, protobuf <= 4.25.4) conflict with rkfarm's, so it lives in a
side virtual environment that rkfarm drives through a subprocess (``rkfarm.vendor.runner``). The vendor python is,
in order: ``RKFARM_VENDOR_PYTHON`` (any interpreter where ``from rknn.api import RKNN`` works), else
``bin/python`` of the environment at ``RKFARM_VENDOR_ENV``, else ``~/.cache/rkfarm/vendor-venv`` (under
``XDG_CACHE_HOME`` when set). ``setup()`` makes that environment with the recipe verified on rkfarm's machines.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rkfarm.errors import RkfarmError

log = logging.getLogger(__name__)

TOOLKIT = "rknn-toolkit2==2.5.0"
TORCH = "torch==2.13.0"  # the toolkit imports torch; this version lies on rkfarm's machines' disk
# torch 2.13 requires setuptools>=77, which pip then installs; setuptools 81+ has no pkg_resources, which the
# toolkit imports when RKNN() is made. So setuptools is pinned back afterwards (pip warns about torch's pin;
# torch needs setuptools only to build C++ extensions).
SETUPTOOLS = "setuptools<70"
# installed after the toolkit (which is installed without its own, conflicting, dependency list)
DEPENDENCIES = (
    "numpy==1.26.4",
    "onnx==1.18.0",
    "protobuf==4.25.4",
    "onnxruntime",
    "scipy",
    "tqdm",
    "opencv-python-headless",
    "fast-histogram",
    "ruamel.yaml",
    "psutil",
    "pillow",
    SETUPTOOLS,
)
MISSING = "the vendor toolkit is not set up: run `rkfarm vendor setup` or set RKFARM_VENDOR_PYTHON"
_PROBE = (
    "import json, sys\n"
    "from importlib.metadata import version\n"
    "from rknn.api import RKNN\n"
    "RKNN(verbose=False).release()\n"
    "print(json.dumps({'toolkit': version('rknn-toolkit2'), 'python': sys.version.split()[0]}))\n"
)


class VendorEnvError(RkfarmError):
    """The vendor toolkit's environment is absent, broken, or could not be made."""


@dataclass(frozen=True)
class VendorStatus:
    python: Path
    source: str  # RKFARM_VENDOR_PYTHON, RKFARM_VENDOR_ENV or cache
    ready: bool
    toolkit: str | None = None
    detail: str = ""


def default_env_dir() -> Path:
    """Where ``setup()`` makes the environment: ``RKFARM_VENDOR_ENV`` or the user's cache folder."""
    explicit = os.environ.get("RKFARM_VENDOR_ENV")
    if explicit:
        return Path(explicit).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rkfarm" / "vendor-venv"


def _candidate() -> tuple[Path, str]:
    explicit = os.environ.get("RKFARM_VENDOR_PYTHON")
    if explicit:
        return Path(explicit).expanduser(), "RKFARM_VENDOR_PYTHON"
    source = "RKFARM_VENDOR_ENV" if os.environ.get("RKFARM_VENDOR_ENV") else "cache"
    return default_env_dir() / "bin" / "python", source


def status(timeout_s: float = 180.0) -> VendorStatus:
    """Whether the vendor python exists and makes an ``RKNN()`` (runs it once: a few seconds)."""
    python, source = _candidate()
    return probe(python, source, timeout_s)


def probe(python: Path, source: str, timeout_s: float = 180.0) -> VendorStatus:
    if not python.exists():
        return VendorStatus(python, source, False, detail=f"{python} does not exist")
    try:
        done = subprocess.run(
            [str(python), "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s, env=child_env()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return VendorStatus(python, source, False, detail=f"{python} cannot be run: {exc}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return VendorStatus(python, source, False, detail=f"{python} cannot run the toolkit: {last}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    return VendorStatus(python, source, True, toolkit=str(info["toolkit"]))


def vendor_python() -> Path:
    """The vendor python (not probed: a missing file is a VendorEnvError with the one-line set-up hint)."""
    python, _ = _candidate()
    if not python.exists():
        raise VendorEnvError(MISSING)
    return python


def available() -> bool:
    """True when the vendor python exists (cheap; ``status()`` also checks it imports the toolkit)."""
    return _candidate()[0].exists()


def child_env() -> dict[str, str]:  # also used by rkfarm.vendor.jobs
    """The environment for vendor processes: none of rkfarm's venv leaks in (PYTHONPATH, VIRTUAL_ENV)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return env


def _run_step(what: str, command: list[str]) -> None:
    log.info("vendor setup: %s", what)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=child_env())
    except OSError as exc:
        raise VendorEnvError(f"vendor setup: {what} failed: {exc}") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise VendorEnvError(f"vendor setup: {what} failed (exit {done.returncode}): {tail}")
    log.info("vendor setup: %s done in %.0f s", what, time.perf_counter() - started)


def setup(env_dir: Path | None = None, base_python: str | None = None) -> VendorStatus:
    """Make (or reuse) the side environment at ``env_dir`` (default: ``default_env_dir()``) with the verified
    recipe; returns its status. One that already imports the toolkit is reused as it is; one that exists but does
    not is completed by running the recipe's pip steps again (pip skips what is installed)."""
    target = (env_dir or default_env_dir()).expanduser()
    python = target / "bin" / "python"
    if python.exists():
        current = probe(python, "setup")
        if current.ready:
            log.info("vendor setup: %s already has RKNN-Toolkit2 %s", target, current.toolkit)
            return current
        log.info("vendor setup: %s is incomplete (%s): running the recipe's steps again", target, current.detail)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        base = base_python or getattr(sys, "_base_executable", None) or sys.executable
        _run_step(f"create the virtual environment {target}", [base, "-m", "venv", str(target)])
    pip = [str(python), "-m", "pip", "install", "--progress-bar", "off"]
    _run_step(f"install {TOOLKIT} (without its dependency list)", [*pip, "--no-deps", TOOLKIT])
    _run_step("install the toolkit's dependencies at compatible pins", [*pip, *DEPENDENCIES])
    _run_step(f"install {TORCH}", [*pip, TORCH])
    _run_step(f"pin {SETUPTOOLS} again (torch raised it; the toolkit needs pkg_resources)", [*pip, SETUPTOOLS])
    done = probe(python, "setup")
    if not done.ready:
        raise VendorEnvError(f"vendor setup: {target} was made but {done.detail}")
    explicit = os.environ.get("RKFARM_VENDOR_PYTHON")
    if explicit and Path(explicit).expanduser() != python:
        log.warning("vendor setup: RKFARM_VENDOR_PYTHON=%s still takes precedence over %s", explicit, python)
    return done
