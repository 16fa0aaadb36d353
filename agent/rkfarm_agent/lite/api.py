"""``RKNNLite``: RKNN-Toolkit-Lite2's board-side API (``rknnlite.api.RKNNLite``), on the agent's own code.

A board script written for the vendor's Lite2 runs after changing ``from rknnlite.api import RKNNLite`` to
``from rkfarm_agent.lite import RKNNLite`` (or ``rkfarm_agent.lite.api``). It needs only the agent's install:
the model runs in this process, on the agent's backends (ONNX Runtime for rkfarm packages, librknnrt for
vendor ``.rknn`` models) with the agent's input conversion, so it computes what an agent session computes —
no daemon, no host package.

Methods return the vendor's codes (0 ok, -1 fail; ``inference``, ``get_sdk_version`` and
``list_support_target_platform`` return None on failure) and log the reason on the ``rkfarm_agent.lite``
logger. ``RKNNLite(raise_errors=True)`` (or ``RKFARM_RAISE_ERRORS=1``) raises instead; ``last_error`` always
holds the most recent exception.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

from rkfarm_agent import __version__
from rkfarm_agent.backends.base import Array
from rkfarm_agent.lite.errors import NotSupportedError, OptionError, StateError
from rkfarm_agent.lite.models import (
    CORE_MASK_NAMES,
    KeyOptions,
    OpenedModel,
    PathLike,
    check_core_mask,
    machine_platform,
    open_model,
    read_model,
    support_targets,
)
from rkfarm_proto import platforms
from rkfarm_proto.errors import InputError, PackageError
from rkfarm_proto.package import ModelPackage
from rkfarm_proto.records import LoadOptions
from rkfarm_proto.vendor_api import vendor_api

log = logging.getLogger("rkfarm_agent.lite")

P = ParamSpec("P")
R = TypeVar("R")
_FORMAT = "%(levelname).1s %(name)s: %(message)s"
_handlers: dict[str, logging.Handler] = {}


def configure_logging(verbose: bool | str = False, verbose_file: str | None = None) -> None:
    """The vendor's ``verbose`` / ``verbose_file``: the agent's log at DEBUG on stderr and/or in a file (once
    per destination). As with the vendor, a file in a folder that does not exist is not written."""
    root = logging.getLogger("rkfarm_agent")
    if verbose_file and os.path.dirname(verbose_file) and not os.path.isdir(os.path.dirname(verbose_file)):
        log.warning("verbose_file %s: its folder does not exist; the log is not written to a file", verbose_file)
        verbose_file = None
    if verbose and "stream" not in _handlers:
        _handlers["stream"] = logging.StreamHandler(sys.stderr)
        _handlers["stream"].setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(_handlers["stream"])
    if verbose_file and verbose_file not in _handlers:
        _handlers[verbose_file] = logging.FileHandler(verbose_file, encoding="utf-8")
        _handlers[verbose_file].setFormatter(logging.Formatter("%(asctime)s " + _FORMAT))
        root.addHandler(_handlers[verbose_file])
    if verbose or verbose_file:
        root.setLevel(logging.DEBUG)


def _lite_api(failure: Any) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The vendor's failure value and a logged reason instead of an exception (``rkfarm_proto.vendor_api``)."""
    return vendor_api(failure, log)


class RKNNLite:
    """Board-side model runtime, API-compatible with ``rknnlite.api.RKNNLite`` (RKNN-Toolkit-Lite2).

    rkfarm's additions are keyword-only: ``raise_errors``; ``platform`` (the agent's ``--platform``); and the
    agent's key options for encrypted packages, ``farm_key_file`` (one path or several), ``store_dir`` (where
    the agent keeps its identity key) and ``max_crypt_level``; ``custom_ops``, installed modules whose custom-op
    classes models may use (the agent's ``--custom-ops``). Each defaults to the agent's environment variable
    (``RKFARM_AGENT_PLATFORM``, ``RKFARM_AGENT_FARM_KEY_FILE``, ``RKFARM_AGENT_STORE_DIR``,
    ``RKFARM_AGENT_MAX_CRYPT_LEVEL``, ``RKFARM_AGENT_CUSTOM_OPS``), then to the agent's default.
    """

    NPU_CORE_AUTO = platforms.NPU_CORE_AUTO
    NPU_CORE_0 = platforms.NPU_CORE_0
    NPU_CORE_1 = platforms.NPU_CORE_1
    NPU_CORE_2 = platforms.NPU_CORE_2
    NPU_CORE_0_1 = platforms.NPU_CORE_0_1
    NPU_CORE_0_1_2 = platforms.NPU_CORE_0_1_2
    NPU_CORE_ALL = platforms.NPU_CORE_ALL

    def __init__(
        self,
        verbose: bool | str = False,
        verbose_file: str | None = None,
        *,
        raise_errors: bool | None = None,
        platform: str | None = None,
        farm_key_file: PathLike | Sequence[PathLike] | None = None,
        store_dir: PathLike | None = None,
        max_crypt_level: int | None = None,
        custom_ops: Sequence[str] | None = None,
    ) -> None:
        if raise_errors is None:
            raise_errors = os.environ.get("RKFARM_RAISE_ERRORS", "").lower() in ("1", "true", "yes")
        self._raise_errors = raise_errors
        self.last_error: BaseException | None = None
        configure_logging(verbose, verbose_file)
        # wrong options are programming errors, and a constructor has no failure code: they raise OptionError
        self._platform = machine_platform(platform)
        self._keys = KeyOptions.resolve(farm_key_file, store_dir, max_crypt_level)
        # custom ops as the agent takes them: installed modules named here or in RKFARM_AGENT_CUSTOM_OPS
        modules = custom_ops if custom_ops is not None else [
            m for m in os.environ.get("RKFARM_AGENT_CUSTOM_OPS", "").split(",") if m
        ]  # fmt: skip
        if modules:
            from rkfarm_agent.backends.onnxruntime.custom_ops import load_modules

            load_modules(list(modules))
        self._package: ModelPackage | None = None
        self._source = ""
        self._opened: OpenedModel | None = None

    def __enter__(self) -> RKNNLite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- loading -----------------------------------------------------------------------------------------
    @_lite_api(-1)
    def load_rknn(self, path: PathLike) -> int:
        """Load a model file: an rkfarm package (what ``export_rknn()`` writes, whatever its name) or a vendor
        ``.rknn`` (run by librknnrt). The file is read and checked now; it is opened by init_runtime()."""
        if path is None or str(path) == "":
            raise PackageError("no model path given")
        self._close_runtime()
        self._package = None
        self._package = read_model(path)
        self._source = str(path)
        header = self._package.header
        log.info(
            "loaded %s (%s model %s%s)", path, header.source_framework or "unknown",
            header.source_model_name or Path(path).name, ", encrypted" if self._package.encrypted else "",
        )  # fmt: skip
        return 0

    # -- runtime -------------------------------------------------------------------------------------------
    @_lite_api(-1)
    def init_runtime(
        self,
        target: str | None = None,
        device_id: str | None = None,
        async_mode: bool = False,
        core_mask: int = platforms.NPU_CORE_AUTO,
    ) -> int:
        """Open the loaded model on this machine, on ``core_mask``'s NPU cores (``RKNNLite.NPU_CORE_*``)."""
        package = self._package
        if package is None:
            raise StateError("init_runtime() needs a model: call load_rknn() first")
        self._close_runtime()  # as the vendor: the previous runtime goes first, whether or not this one opens
        self._check_target(target, device_id)
        if async_mode:
            raise NotSupportedError("async_mode=True is not supported: RKNNLite runs each inference to its end")
        built_for = platforms.normalize_platform(package.header.target_platform or "")
        if self._platform != platforms.UNKNOWN:
            check_core_mask(core_mask, self._platform, "this board")
            if built_for and built_for != self._platform:
                log.warning("the model was built for %s and runs on %s", built_for, self._platform)
        else:  # a machine that is not a Rockchip board: the model's own platform bounds the mask
            check_core_mask(core_mask, built_for or platforms.UNKNOWN, "the platform the model was built for")
        self._opened = open_model(package, LoadOptions(core_mask=core_mask), self._keys)
        log.info(
            "runtime ready: %s on the %s backend, core_mask %s", self._source, self._opened.backend.name,
            CORE_MASK_NAMES[core_mask],
        )  # fmt: skip
        return 0

    def _check_target(self, target: str | None, device_id: str | None) -> None:
        """RKNNLite runs models on the machine it runs on: a target must be this board, and there is no adb."""
        if device_id is not None:
            raise NotSupportedError(
                f"init_runtime(device_id={device_id!r}): RKNNLite runs the model on this machine and reaches no "
                "other device; to run on another board, use rkfarm's RKNN on the PC with "
                "init_runtime(target=..., device_id=...)"
            )
        if target is None:
            return
        wanted = platforms.normalize_platform(str(target))
        if wanted is None:
            raise OptionError(f"init_runtime: unknown target {target!r}; known: {', '.join(platforms.PLATFORMS)}")
        if wanted != self._platform:
            raise NotSupportedError(
                f"init_runtime(target={target!r}): RKNNLite runs the model on this machine, which is "
                f"{'not a Rockchip board' if self._platform == platforms.UNKNOWN else self._platform}; leave target "
                "out, or run on a board from the PC with rkfarm's RKNN (init_runtime(target=..., device_id=...))"
            )

    def _require_runtime(self, what: str) -> OpenedModel:
        if self._opened is None:
            raise StateError(f"{what} needs a runtime: call load_rknn() and init_runtime() first")
        return self._opened

    @_lite_api(None)
    def inference(
        self,
        inputs: Sequence[npt.ArrayLike] | npt.NDArray[Any],
        data_format: str | Sequence[str | None] | None = None,
        inputs_pass_through: Sequence[int | bool] | None = None,
        get_frame_id: bool = False,
        *,
        data_type: str | Sequence[str | None] | None = None,
    ) -> list[Array] | None:
        """Run once. 4-D image inputs are NHWC by default (``data_format='nchw'`` if not; a 3-D HWC image is a
        batch of one); the model's mean/std are applied, except to pass-through inputs. Returns the outputs.

        ``data_type`` (Lite2 1.x) is accepted only where it names the array's own dtype: rkfarm takes each
        input's type from its array."""
        opened = self._require_runtime("inference()")
        if get_frame_id:
            raise NotSupportedError("get_frame_id is only meaningful in the vendor's async mode, which rkfarm lacks")
        arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        if data_type is not None:
            _check_data_type(arrays, data_type)
        feeds = opened.adapter(arrays, data_format, inputs_pass_through)
        return list(opened.model.run(feeds))

    @_lite_api(None)
    def get_sdk_version(self) -> str:
        """The API and the runtime the model runs on, as the vendor's two lines ``API: ...`` / ``DRV: ...``."""
        opened = self._require_runtime("get_sdk_version()")
        runtime = opened.backend.version() or opened.backend.name
        return f"API: rkfarm-agent {__version__} (RKNNLite, in-process)\nDRV: {runtime} (backend {opened.backend.name})"

    @_lite_api(None)
    def list_support_target_platform(self, rknn_model: PathLike | None = None) -> OrderedDict[str, list[str]]:
        """The platforms a model file runs on (``filled_target_platform``: the one it was built for;
        ``support_target_platform``: those that run it), or every platform when ``rknn_model`` is None."""
        package = None if rknn_model is None else read_model(rknn_model)
        result = support_targets(package, str(rknn_model or ""))
        for key, names in result.items():
            log.info("%-24s %s", key, ", ".join(names) or "-")
        return result

    # -- teardown ------------------------------------------------------------------------------------------
    def _close_runtime(self) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:
            opened.close()

    @_lite_api(None)
    def release(self) -> None:
        """Free the runtime and the model."""
        self._package = None
        self._close_runtime()


def _check_data_type(arrays: Sequence[npt.ArrayLike], data_type: str | Sequence[str | None]) -> None:
    kinds = [data_type] * len(arrays) if isinstance(data_type, str) else list(data_type)
    if len(kinds) != len(arrays):
        raise InputError(f"data_type has {len(kinds)} entries for {len(arrays)} input(s)")
    for i, (array, kind) in enumerate(zip(arrays, kinds)):
        if kind is None:
            continue
        given = np.asarray(array).dtype
        try:
            wanted = np.dtype(kind)
        except TypeError:
            raise InputError(f"input {i}: data_type {kind!r} is not a dtype name") from None
        if given != wanted:
            raise InputError(
                f"input {i}: data_type {kind!r} but the array is {given}: rkfarm takes each input's type from its "
                f"array; convert it (array.astype({wanted.name!r})) or leave data_type out"
            )
