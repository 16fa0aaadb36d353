"""Where a package is opened: the simulator in this process, or a board agent chosen by platform and id.

``init_runtime()`` and the CLI's ``--device`` both come here, so a target is resolved, checked and fallen
back on in one place.
"""

from __future__ import annotations

import logging

from rkfarm.errors import StateError
from rkfarm.keys import host_keyring
from rkfarm.remote.client import default_timeout_s
from rkfarm.remote.discovery import Device, resolve
from rkfarm.remote.runtime import RemoteRuntime
from rkfarm.runtime import Runtime
from rkfarm.runtime.simulator import SimulatorRuntime
from rkfarm_proto.package import ModelPackage
from rkfarm_proto.platforms import UNKNOWN, normalize_platform
from rkfarm_proto.records import LoadOptions

log = logging.getLogger(__name__)
FALLBACK_PLATFORM = "rk3588"  # asked for when neither the agent nor the package names a platform


def open_simulator(package: ModelPackage, options: LoadOptions) -> Runtime:
    """The package on ONNX Runtime in this process; an encrypted one is decrypted in memory with the farm key."""
    payload = host_keyring().decrypt(package) if package.encrypted else package.payload
    return SimulatorRuntime(package, payload, options)


def open_agent(
    package: ModelPackage,
    target: str,
    device_id: str | None,
    options: LoadOptions,
    timeout_s: float | None = None,
    *,
    exclusive: bool = False,
) -> Runtime:
    """The package on an agent of platform ``target``: ``device_id`` (an id or host:port) or the only one
    found. An agent that reports no platform (a PC) serves only when no agent of the platform is found.

    ``timeout_s`` (default ``RKFARM_TIMEOUT_S``, else 30 s; ``init_runtime(timeout_s=)``, or the variable, which is
    how a vendor script sets it): each call's deadline, and how long asking the agent who it is and
    opening the session are retried while it is unreachable, slow or busy (Load gets 4x). ``exclusive``: the
    session holds the board (``RemoteRuntime``)."""
    platform = normalize_platform(target)
    if platform is None:
        raise StateError(f"init_runtime: unknown target {target!r}; use a platform name such as 'rk3588'")
    timeout_s = default_timeout_s(timeout_s)
    device = resolve(device_id, platform, call_timeout_s=timeout_s)
    if device.platform not in (platform, UNKNOWN):
        raise StateError(
            f"init_runtime: agent {device.agent_id} is a {device.platform} board, not {platform}; "
            "pick another device_id or change target"
        )
    if device.platform == UNKNOWN:
        log.warning("agent %s reports no Rockchip platform (a PC?); running there anyway", device.agent_id)
    if package.header.target_platform and package.header.target_platform != platform:
        log.warning("the model was built for %s and runs on %s", package.header.target_platform, platform)
    return RemoteRuntime(package, device, options, timeout_s=timeout_s, exclusive=exclusive)


def device_target(
    device_id: str, package: ModelPackage, target: str | None = None, timeout_s: float | None = None
) -> tuple[str, Device]:
    """For ``--device`` without a platform: the platform to ask for — ``target``, else the agent's own, else the
    package's, else rk3588 — and the agent (asked for ``timeout_s``, as in ``open_agent``)."""
    device = resolve(device_id, None, call_timeout_s=timeout_s)
    own = device.platform if device.platform != UNKNOWN else ""
    return target or own or package.header.target_platform or FALLBACK_PLATFORM, device
