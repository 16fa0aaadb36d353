"""`rkfarm doctor`: what this machine has for rkfarm, one line per check with ok / missing and the fix.

Python and rkfarm's own dependencies, the optional extras (frontends, custom ops, completion), the farm key and
host credentials, the agents discovery finds within a short timeout, and the vendor toolkit's side environment.
Packages are looked up by metadata, not imported, so the command answers in a second or two.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

OK, MISSING, WARN, INFO = "ok", "missing", "warn", "info"

# (import name, distribution, what it is for, the fix); required ones make `doctor` exit 1 when absent
REQUIRED = [
    ("numpy", "numpy", "arrays", "pip install rkfarm"),
    ("onnxruntime", "onnxruntime", "the simulator and the agent's backend", "pip install rkfarm"),
    ("grpc", "grpcio", "talking to agents", "pip install rkfarm"),
    ("onnx", "onnx", "loading and building models (host extra)", "pip install 'rkfarm[host]'"),
    ("onnxslim", "onnxslim", "graph optimization (host extra)", "pip install 'rkfarm[host]'"),
    ("PIL", "pillow", "image inputs (host extra)", "pip install 'rkfarm[host]'"),
    ("cv2", "opencv-python-headless", "resizing calibration images as the vendor does", "pip install 'rkfarm[host]'"),
    ("yaml", "pyyaml", "the .quantization.cfg files", "pip install 'rkfarm[host]'"),
]
OPTIONAL = [
    ("torch", "torch", "the PyTorch frontend (.pt)", "pip install 'rkfarm[pytorch]'"),
    ("tensorflow", "tensorflow-cpu", "the TFLite and TensorFlow frontends", "pip install 'rkfarm[tflite]'"),
    ("tf2onnx", "tf2onnx", "the TFLite and TensorFlow frontends", "pip install 'rkfarm[tflite]'"),
    ("onnxruntime_extensions", "onnxruntime-extensions", "custom ops (reg_custom_op)", "pip install rkfarm"),
    ("argcomplete", "argcomplete", "shell completion", "pip install 'rkfarm[completion]'"),
]


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | missing | warn | info
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -> {self.fix}" if self.fix and self.status != OK else ""
        return f"{self.status:<8}{self.name:<24}{self.detail}{fix}"


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_check(module: str, distribution: str, what: str, fix: str, required: bool) -> Check:
    if importlib.util.find_spec(module) is None:
        return Check(distribution, MISSING if required else INFO, f"not installed ({what})", fix)
    version = _version(distribution) or next(
        (v for d in (module, module.replace("_", "-")) if (v := _version(d))), "installed"
    )
    return Check(distribution, OK, f"{version} ({what})")


def python_check() -> Check:
    v = sys.version_info
    detail = f"{v.major}.{v.minor}.{v.micro} ({sys.executable})"
    if v < (3, 10):
        return Check("python", MISSING, detail, "rkfarm needs Python 3.10 or newer")
    return Check("python", OK, detail)


def key_checks() -> list[Check]:
    from rkfarm.keys import default_farm_key_path

    path = default_farm_key_path()
    checks = [
        Check("farm key", OK, str(path))
        if path.is_file()
        else Check("farm key", INFO, f"{path} absent (needed for encrypted packages)", "rkfarm keygen")
    ]
    try:
        from rkfarm.remote.credentials import Credentials

        Credentials.load()
        checks.append(Check("host credentials", OK, "RKFARM_TOKEN_FILE / RKFARM_TLS_* readable or unset"))
    except Exception as exc:
        checks.append(Check("host credentials", MISSING, str(exc).splitlines()[0], "fix the RKFARM_TOKEN_FILE / "
                            "RKFARM_TLS_CA / RKFARM_TLS_CERT / RKFARM_TLS_KEY files"))  # fmt: skip
    return checks


def agents_check(timeout_s: float) -> Check:
    try:
        from rkfarm.remote.discovery import list_devices

        devices = list_devices(timeout_s)
    except Exception as exc:
        return Check("agents", WARN, f"discovery failed: {str(exc).splitlines()[0]}", "check RKFARM_AGENTS")
    if not devices:
        return Check(
            "agents", INFO, f"none found in {timeout_s:g} s (mDNS and inventory)",
            "start `rkfarm-agent serve` on a board, or list it in RKFARM_AGENTS=host:port",
        )  # fmt: skip
    shown = ", ".join(f"{d.agent_id} ({d.address}, {d.platform}, auth {d.auth})" for d in devices)
    return Check("agents", OK, f"{len(devices)} found: {shown}")


def vendor_check(probe: bool) -> Check:
    try:
        from rkfarm.vendor import env
    except ImportError as exc:
        return Check("vendor toolkit", INFO, f"rkfarm.vendor is not importable: {exc}")
    if not probe:
        python, source = env._candidate()
        if python.exists():
            return Check("vendor toolkit", OK, f"{python} (from {source}; --vendor runs it to check the toolkit)")
        return Check("vendor toolkit", INFO, f"no vendor python ({python}): needed only for --compiler vendor",
                     "rkfarm vendor setup")  # fmt: skip
    state = env.status()
    if state.ready:
        return Check("vendor toolkit", OK, f"RKNN-Toolkit2 {state.toolkit} in {state.python} (from {state.source})")
    return Check("vendor toolkit", INFO, f"not ready: {state.detail}", "rkfarm vendor setup")


def run_checks(args: argparse.Namespace) -> list[Check]:
    from rkfarm import __version__

    checks = [python_check(), Check("rkfarm", OK, __version__)]
    checks += [package_check(*spec, required=True) for spec in REQUIRED]
    checks += [package_check(*spec, required=False) for spec in OPTIONAL]
    checks += key_checks()
    if not args.no_agents:
        checks.append(agents_check(args.timeout))
    checks.append(vendor_check(args.vendor))
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args)
    failed = any(c.status == MISSING for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for check in checks:
            print(check.line())
        print("all required parts are present" if not failed else "something required is missing (see above)")
    return 1 if failed else 0


def _add_doctor(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this machine: Python, extras, agents reachable, the vendor's side environment",
        description="One line per check: ok, missing (required: exit status 1), info (optional, with what it is "
        "for) or warn, and the command that fixes it.",
        epilog="examples:\n  rkfarm doctor\n  rkfarm doctor --no-agents --json\n  rkfarm doctor --vendor --timeout 3",
    )
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to look for agents (default 1)")
    p.add_argument("--no-agents", action="store_true", help="skip agent discovery")
    p.add_argument("--vendor", action="store_true", help="run the vendor python to check it imports the toolkit")
    p.add_argument("--json", action="store_true", help="machine-readable output (docs/CLI-JSON.md)")
    p.set_defaults(func=cmd_doctor)


def register(sub: Any) -> None:
    """Add this module's subcommands."""
    _add_doctor(sub)
