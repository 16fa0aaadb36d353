"""Farm keys on the host: where the key file lives, making one, and encrypting packages.

The farm key file (``RKFARM_FARM_KEY_FILE``, default ``~/.config/rkfarm/farm.key``, mode 0600) is the secret
shared by the host and the boards of one farm (``rkfarm-agent serve --farm-key-file``). A model can instead
be sealed to chosen agents' public keys, so that only those boards can open it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from rkfarm.errors import RemoteError
from rkfarm_proto.crypto import (
    KeyFileError,
    Keyring,
    encrypt_package,
    new_farm_key,
    public_fingerprint,
    read_farm_key,
    write_private,
)
from rkfarm_proto.package import ModelPackage

log = logging.getLogger(__name__)


def default_farm_key_path() -> Path:
    return Path(os.environ.get("RKFARM_FARM_KEY_FILE", str(Path.home() / ".config" / "rkfarm" / "farm.key")))


def make_farm_key(path: Path | None = None) -> Path:
    """Create a new farm key file (0600); refuses to overwrite an existing one."""
    target = path or default_farm_key_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_private(target, new_farm_key().encode())
    except FileExistsError:
        raise KeyFileError(f"{target}: a key file already exists; remove it first to replace it") from None
    return target


def ensure_farm_key(path: Path | None = None) -> Path:
    """The farm key file, made (0600) on first use so that encrypting needs no set-up, as with the vendor."""
    target = path or default_farm_key_path()
    if target.exists():
        return target
    try:
        make_farm_key(target)
    except KeyFileError:
        return target  # another process made it meanwhile
    except OSError as exc:
        raise KeyFileError(f"{target}: cannot create the farm key: {exc.strerror or exc}") from None
    log.warning(
        "created the farm key %s (mode 0600). Boards need it to open models encrypted for it: copy it to each "
        "board and install the agent with `deploy/install-agent.sh --farm-key FILE` (or run "
        "`rkfarm-agent serve --farm-key-file FILE`); keep it secret",
        target,
    )
    return target


def host_keyring(key_file: Path | None = None) -> Keyring:
    """The host's keys: the farm key file if there is one."""
    path = key_file or default_farm_key_path()
    if key_file is None and not path.exists():
        return Keyring()
    return Keyring([read_farm_key(path)])


def agent_public_keys(devices: Sequence[str]) -> list[bytes]:
    """Public identity keys of agents (ids or host:port), asked with Info."""
    from rkfarm.remote.client import AgentClient
    from rkfarm.remote.discovery import resolve

    keys = []
    for device_id in devices:
        device = resolve(device_id, None)
        with AgentClient(device.address) as client:
            public = client.info().public_key
        if len(public) != 32:
            raise RemoteError(f"agent {device.agent_id} has no identity key to seal to (agent too old?)")
        log.info("sealing to agent %s (key %s)", device.agent_id, public_fingerprint(public))
        keys.append(public)
    return keys


def encrypt(
    package: ModelPackage,
    crypt_level: int = 1,
    recipients: Sequence[str] = (),
    key_file: Path | None = None,
    algorithm: str = "AES-256-GCM",
) -> ModelPackage:
    """Encrypt for the farm key, or seal to ``recipients`` (agent ids or host:port) only."""
    if recipients:
        return encrypt_package(package, crypt_level, None, agent_public_keys(recipients), algorithm)
    path = key_file or default_farm_key_path()
    return encrypt_package(package, crypt_level, read_farm_key(path), (), algorithm)
