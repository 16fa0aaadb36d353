"""``rkfarm-agent doctor``: what this machine lacks for the NPU path, one line per check with its fix.

The NPU path is what runs a vendor ``.rknn`` on a Rockchip NPU: an Arm board whose device tree names a Rockchip
SoC, a kernel with Rockchip's ``rknpu`` driver (``/dev/rknpu`` or its DRM node under ``/dev/dri``) that the
agent's user may open, and Rockchip's ``librknnrt.so`` for the board's architecture. rkfarm's own packages do
not need any of it: they run on ONNX Runtime on any CPU, so a missing NPU path is a finding, not a failure of the
agent. The same facts go to hosts in ``Info.system`` (``system_info()``).
"""

from __future__ import annotations

import getpass
import grp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rkfarm_agent.system import BoardFacts, NpuNode, board_facts, platform_from_compatible
from rkfarm_proto.platforms import UNKNOWN
from rkfarm_proto.v1 import agent_pb2

OK, MISSING, INFO = "ok", "missing", "info"
ARM = ("aarch64", "arm64", "armv7l", "armv8l")
LIBRKNNRT_FIX = (
    "copy librknnrt.so for this architecture from Rockchip's rknn-toolkit2 release "
    "(rknpu2/runtime/Linux/librknn_api/aarch64/) to /usr/lib and run ldconfig, or set RKFARM_RKNNRT_LIB=/path"
)
KERNEL_FIX = "boot the board vendor's (BSP) kernel, which has Rockchip's rknpu driver; a mainline kernel lacks it"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | missing | info
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -> {self.fix}" if self.fix and self.status == MISSING else ""
        return f"{self.status:<8}{self.name:<14}{self.detail}{fix}"


def _node_text(node: NpuNode) -> str:
    return f"{node.path} ({node.driver})"


def _group_of(path: str, root: Path) -> str:
    try:
        gid = os.stat(root / path.lstrip("/")).st_gid
    except OSError:
        return "?"
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def checks(facts: BoardFacts, root: Path = Path("/")) -> list[Check]:
    """One check per thing the NPU path needs, in the order a user fixes them."""
    found: list[Check] = []
    arm = facts.machine in ARM
    found.append(
        Check("architecture", OK, facts.machine) if arm else Check(
            "architecture", MISSING, f"{facts.machine}: not an Arm board, no Rockchip NPU here",
            "run the agent on the board (rkfarm packages still run here, on ONNX Runtime)",
        )
    )  # fmt: skip
    found.append(Check("kernel", INFO, facts.kernel))
    platform = platform_from_compatible(b"\0".join(e.encode() for e in facts.compatible))
    if not facts.compatible:
        found.append(Check(
            "device tree", MISSING, "no /proc/device-tree/compatible (not a device-tree board, or a container)",
            "run on the board itself; on a Rockchip board whose tree is hidden, set RKFARM_AGENT_PLATFORM=rk3588 "
            "(its SoC)",
        ))  # fmt: skip
    elif platform == UNKNOWN:
        found.append(Check(
            "device tree", MISSING, f"names no Rockchip SoC: {', '.join(facts.compatible)}",
            "the NPU path needs a Rockchip RK35xx/RV11xx board",
        ))  # fmt: skip
    else:
        model = f" ({facts.model})" if facts.model else ""
        found.append(Check("device tree", OK, f"{platform}{model}: {', '.join(facts.compatible)}"))
    if facts.npu_nodes:
        found.append(Check("npu device", OK, ", ".join(_node_text(n) for n in facts.npu_nodes)))
        closed = [n for n in facts.npu_nodes if not n.accessible]
        user = _user()
        if closed and len(closed) == len(facts.npu_nodes):
            groups = sorted({_group_of(n.path, root) for n in closed})
            found.append(Check(
                "npu access", MISSING, f"user {user} cannot open {', '.join(n.path for n in closed)}",
                f"sudo usermod -aG {','.join(groups)} {user} (then log in again or restart the agent)",
            ))  # fmt: skip
        else:
            found.append(Check("npu access", OK, f"user {user} can open the NPU device"))
    else:
        others = f"; other accelerators: {', '.join(map(_node_text, facts.other_accel_nodes))}" if (
            facts.other_accel_nodes) else ""  # fmt: skip
        found.append(Check("npu device", MISSING, f"no /dev/rknpu and no /dev/dri node of the rknpu driver{others}",
                           KERNEL_FIX))  # fmt: skip
    found.append(Check(
        "npu driver", INFO,
        facts.npu_driver_version or "version not readable (root reads /sys/kernel/debug/rknpu/version)",
    ))  # fmt: skip
    if not facts.librknnrt_path:
        why = facts.librknnrt_error or "librknnrt.so not found (RKFARM_RKNNRT_LIB, the loader path, /usr/lib)"
        found.append(Check("librknnrt", MISSING, why, LIBRKNNRT_FIX))
    elif facts.librknnrt_error:
        found.append(Check(
            "librknnrt", MISSING, f"{facts.librknnrt_path} does not load: {facts.librknnrt_error}",
            f"use the build for {facts.machine} ({LIBRKNNRT_FIX})",
        ))  # fmt: skip
    else:
        version = facts.librknnrt_version or "version not stated in the library"
        found.append(Check("librknnrt", OK, f"{facts.librknnrt_path}: {version}"))
    return found


def cpu_check() -> Check:
    """rkfarm's own packages run on ONNX Runtime: say which, or that it is missing (the agent needs it)."""
    from rkfarm_agent.backends import BACKENDS

    backend = BACKENDS["onnxruntime"]
    if backend.available():
        import onnxruntime

        from rkfarm_agent.backends.onnxruntime.session import QDQ_FUSIONS_SOUND_FROM, int8_runs_unfused

        detail = f"{backend.version() or 'onnxruntime'}: rkfarm packages run on the CPU"
        if int8_runs_unfused(onnxruntime.__version__):
            sound = ".".join(map(str, QDQ_FUSIONS_SOUND_FROM))
            detail += f"; int8 ones unfused (slower), as its fused int8 kernels vary run to run (fixed in {sound})"
        return Check("cpu backend", OK, detail)
    return Check("cpu backend", MISSING, "onnxruntime does not import", "reinstall the agent (install-agent.sh)")


def missing(found: list[Check]) -> list[Check]:
    return [c for c in found if c.status == MISSING]


def verdict(found: list[Check]) -> str:
    lacking = [c.name for c in missing(found)]
    if not lacking:
        return "NPU path: ready (vendor .rknn models run on the NPU)"
    return f"NPU path: not ready ({', '.join(lacking)} missing); rkfarm packages run on the CPU"


def report(root: Path = Path("/")) -> dict[str, Any]:
    """Facts, checks and verdict as plain data (``doctor --json``)."""
    facts = board_facts(root)
    npu = checks(facts, root)
    return {
        "facts": asdict(facts),
        "checks": [asdict(c) for c in [*npu, cpu_check()]],
        "npu_ready": not missing(npu),
        "verdict": verdict(npu),
    }


def lines(root: Path = Path("/")) -> tuple[list[str], bool]:
    """The doctor's output lines and whether the NPU path is ready."""
    facts = board_facts(root)
    npu = checks(facts, root)
    return [*(c.line() for c in [*npu, cpu_check()]), verdict(npu)], not missing(npu)


_cache: dict[str, tuple[float, agent_pb2.SystemInfo]] = {}
CACHE_S = 10.0  # Info is asked often (discovery probes); device nodes and libraries change rarely


def system_info(root: Path = Path("/")) -> agent_pb2.SystemInfo:
    """``Info.system``: the facts, and what the NPU path lacks (one line each with its fix)."""
    key = str(root)
    hit = _cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < CACHE_S:
        return hit[1]
    facts = board_facts(root)
    lacking = missing(checks(facts, root))

    def nodes(items: list[NpuNode]) -> list[agent_pb2.NpuNode]:
        return [agent_pb2.NpuNode(path=n.path, driver=n.driver, accessible=n.accessible) for n in items]

    message = agent_pb2.SystemInfo(
        machine=facts.machine, kernel=facts.kernel, device_tree_compatible=facts.compatible,
        device_tree_model=facts.model, npu_nodes=nodes(facts.npu_nodes), npu_driver_version=facts.npu_driver_version,
        librknnrt_path=facts.librknnrt_path, librknnrt_version=facts.librknnrt_version,
        librknnrt_error=facts.librknnrt_error, npu_ready=not lacking,
        npu_missing=[f"{c.name}: {c.detail} -> {c.fix}" for c in lacking],
        other_accel_nodes=nodes(facts.other_accel_nodes),
    )  # fmt: skip
    _cache[key] = (time.monotonic(), message)
    return message
