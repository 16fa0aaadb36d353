"""What RKNNLite opens, and with what: a model file read and checked, the keys and the platform the agent would
use, and the model opened on the agent's own backends, in this process.

A model file is an rkfarm package (what ``export_rknn()`` writes, whatever the file is called) or a vendor
``.rknn``, which only librknnrt runs (the rknnrt backend). Files are told apart by their magic, never by name.

Keys come from the options ``rkfarm-agent serve`` takes, from the same environment variables: farm key files
(``RKFARM_AGENT_FARM_KEY_FILE``, comma-separated), the agent's identity key (``identity.key`` in
``RKFARM_AGENT_STORE_DIR``, for models sealed to this board) and the highest encryption level to open
(``RKFARM_AGENT_MAX_CRYPT_LEVEL``). The platform is the agent's too: ``RKFARM_AGENT_PLATFORM``, else the device tree.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rkfarm_agent.backends import Backend, LoadedModel, backend_for
from rkfarm_agent.config import AgentConfig
from rkfarm_agent.lite.errors import NotSupportedError, OptionError
from rkfarm_agent.sessions import described_header
from rkfarm_agent.system import detect_platform
from rkfarm_proto.crypto import LEVELS, KeyFileError, Keyring, load_or_create_identity, read_farm_key
from rkfarm_proto.errors import ForeignFormatError, PackageError
from rkfarm_proto.package import ModelPackage, read_package, vendor_rknn_version
from rkfarm_proto.platforms import CORE_MASKS, NPU_CORE_ALL, NPU_CORE_AUTO, NPU_CORES, PLATFORMS
from rkfarm_proto.records import LoadOptions
from rkfarm_proto.v1 import package_pb2

log = logging.getLogger(__name__)

ENV_PREFIX = "RKFARM_AGENT_"  # the agent's own variables (rkfarm_agent.cli), read here the same way
PathLike = str | os.PathLike[str]
CORE_MASK_NAMES = {
    0x0: "NPU_CORE_AUTO",
    0x1: "NPU_CORE_0",
    0x2: "NPU_CORE_1",
    0x4: "NPU_CORE_2",
    0x3: "NPU_CORE_0_1",
    0x7: "NPU_CORE_0_1_2",
    0xFFFF: "NPU_CORE_ALL",
}
assert set(CORE_MASK_NAMES) == CORE_MASKS


def _env(name: str) -> str | None:
    return os.environ.get(ENV_PREFIX + name) or None


# -- model files ---------------------------------------------------------------------------------------------
def read_model(path: PathLike) -> ModelPackage:
    """The package in ``path``, checked; a vendor ``.rknn`` (plain or vendor-encrypted) as a package that only
    the rknnrt backend runs. Anything else is a PackageError naming the file and what it is."""
    try:
        return read_package(path)
    except ForeignFormatError as exc:
        if exc.kind == "onnx":
            raise PackageError(
                f"{path}: this is an ONNX model, not a model package: convert it on the PC with rkfarm "
                "(RKNN: load_onnx, build, export_rknn) and load the exported file"
            ) from None
        if exc.kind not in ("rknn", "rknn-encrypted"):
            raise
    source = Path(path)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise PackageError(f"{source}: cannot read: {exc.strerror or exc}") from None
    version = vendor_rknn_version(data)
    log.info(
        "%s is a vendor RKNN model%s: it runs through librknnrt (the rknnrt backend)",
        source, f" (format v{version})" if version is not None else " (vendor-encrypted)",
    )  # fmt: skip
    header = package_pb2.PackageHeader(
        producer="RKNN-Toolkit2 (vendor)",
        source_model_name=source.name,
        source_framework="rknn",
        payload_kind=package_pb2.PAYLOAD_KIND_RKNN,
        payload_size=len(data),
    )
    return ModelPackage(header=header, payload=data)


def support_targets(package: ModelPackage | None, source: str = "") -> OrderedDict[str, list[str]]:
    """The vendor's ``list_support_target_platform`` answer: the platform the model was built for
    (``filled_target_platform``, as recorded) and the platforms that run it (``support_target_platform``,
    upper-case). Without a model: every platform an rkfarm package runs on."""
    everywhere = [p.upper() for p in PLATFORMS]
    if package is None:
        return OrderedDict(support_target_platform=everywhere)
    header = package.header
    if header.payload_kind == package_pb2.PAYLOAD_KIND_RKNN:
        raise NotSupportedError(
            f"{source}: a vendor .rknn names its platforms inside the vendor's closed format, which rkfarm does "
            "not read; only librknnrt can tell (it refuses a model built for another platform at init_runtime)"
        )
    filled = [header.target_platform] if header.target_platform else []
    # the payload is standard ONNX: any agent's onnxruntime backend runs it, whatever it was built for
    return OrderedDict(filled_target_platform=filled, support_target_platform=everywhere)


# -- keys ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyOptions:
    """The agent's key options (``--farm-key-file``, ``--store-dir``, ``--max-crypt-level``)."""

    farm_key_files: tuple[Path, ...]
    store_dir: Path
    max_crypt_level: int

    @classmethod
    def resolve(
        cls,
        farm_key_file: PathLike | Sequence[PathLike] | None = None,
        store_dir: PathLike | None = None,
        max_crypt_level: int | None = None,
    ) -> KeyOptions:
        """Arguments first, then the agent's environment variables, then the agent's defaults."""
        defaults = AgentConfig()
        if farm_key_file is None:
            files = tuple(Path(p) for p in (_env("FARM_KEY_FILE") or "").split(",") if p)
        elif isinstance(farm_key_file, (str, os.PathLike)):
            files = (Path(farm_key_file),)
        else:
            files = tuple(Path(p) for p in farm_key_file)
        folder = Path(store_dir) if store_dir is not None else Path(_env("STORE_DIR") or defaults.store_dir)
        level: object = max_crypt_level
        if level is None:
            text = _env("MAX_CRYPT_LEVEL")
            level = defaults.max_crypt_level if text is None else (int(text) if text.isdigit() else text)
        if isinstance(level, bool) or level not in LEVELS:
            raise OptionError(f"max_crypt_level must be one of {sorted(LEVELS)}, got {level!r}")
        assert isinstance(level, int)
        return cls(files, folder, level)

    def keyring(self, header: package_pb2.PackageHeader) -> Keyring:
        """The keys that may open ``header``'s model: the farm keys, and the agent's identity key when the model
        is sealed to an agent and the key is readable here."""
        farm = [read_farm_key(path) for path in self.farm_key_files]
        identity = None
        path = self.store_dir / "identity.key"
        if any(k.recipient.startswith("agent:") for k in header.encryption.keys) and path.exists():
            try:
                identity = load_or_create_identity(path)
            except (OSError, KeyFileError, ValueError) as exc:
                log.warning(
                    "cannot use the agent identity key %s (%s): models sealed to this board stay shut", path, exc
                )
        log_n = max(LEVELS[level].scrypt_log2_n for level in LEVELS if level <= self.max_crypt_level)
        return Keyring(farm, identity, max_scrypt_log2_n=log_n)


# -- platform and core masks -------------------------------------------------------------------------------------
def machine_platform(override: str | None = None) -> str:
    """This board's platform as the agent reports it: ``override``, else ``RKFARM_AGENT_PLATFORM``, else the
    device tree ('unknown' on a PC)."""
    try:
        return detect_platform(override or _env("PLATFORM"))[0]
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def check_core_mask(core_mask: object, platform: str, whose: str) -> int:
    """``core_mask`` if it is a vendor mask that ``platform`` can have (``whose``: what the platform is, for the
    message: this board, or the model's target)."""
    if isinstance(core_mask, bool) or not isinstance(core_mask, int) or core_mask not in CORE_MASKS:
        raise OptionError(
            f"core_mask {core_mask!r} is not one of the RKNNLite.NPU_CORE_* values "
            f"({', '.join(f'{n} = {m:#x}' for m, n in CORE_MASK_NAMES.items())})"
        )
    cores = NPU_CORES.get(platform, 0)
    if cores and core_mask not in (NPU_CORE_AUTO, NPU_CORE_ALL) and core_mask >> cores:
        named = [str(i) for i in range(16) if core_mask >> i & 1]
        usable = [n for m, n in CORE_MASK_NAMES.items() if m in (NPU_CORE_AUTO, NPU_CORE_ALL) or not m >> cores]
        cores_named = f"core {named[0]}" if len(named) == 1 else f"cores {', '.join(named[:-1])} and {named[-1]}"
        raise OptionError(
            f"core_mask {CORE_MASK_NAMES[core_mask]} names NPU {cores_named}, but {platform} ({whose}) has "
            f"{cores} NPU core{'s' if cores > 1 else ''}: use {', '.join(usable)}"
        )
    return core_mask


# -- opening -----------------------------------------------------------------------------------------------------
@dataclass
class OpenedModel:
    """A model opened in this process, as an agent session holds it: backend, model, full header, adapter."""

    backend: Backend
    model: LoadedModel
    header: package_pb2.PackageHeader
    adapter: Any  # rkfarm_agent.inputs.InputAdapter, or the backend's own (rknnrt)

    def close(self) -> None:
        self.model.close()


def open_model(package: ModelPackage, options: LoadOptions, keys: KeyOptions) -> OpenedModel:
    """Open ``package`` the way an agent's Load does: the backend for its payload kind (before any decryption),
    the plaintext in memory only, the model on the backend, the header completed from the runtime."""
    backend = backend_for(package.header.payload_kind)  # serving=False: one caller, in this process
    payload = keys.keyring(package.header).decrypt(package) if package.encrypted else package.payload
    model = backend.load(package.header, payload, options)
    del payload
    try:
        header = described_header(package.header, model)
        return OpenedModel(backend, model, header, model.make_adapter(header))
    except BaseException:
        model.close()
        raise
