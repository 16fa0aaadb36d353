"""Logging for the RKNN-compatible facade: the vendor's ``verbose`` / ``verbose_file`` arguments.

The library only logs to the ``rkfarm`` logger. A handler is attached only when a user asks for one,
through ``RKNN(verbose=True)`` / ``RKNN(verbose_file=...)`` or the CLI, as the vendor toolkit does.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "rkfarm"
_FORMAT = "%(levelname).1s %(name)s: %(message)s"
_installed: dict[str, logging.Handler] = {}


def configure(verbose: bool | str = False, verbose_file: str | None = None) -> None:
    """Attach (once) a stderr handler at DEBUG for verbose, and a file handler for ``verbose_file``."""
    root = logging.getLogger(LOGGER_NAME)
    if verbose and "stream" not in _installed:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
        _installed["stream"] = handler
    if verbose_file and verbose_file not in _installed:
        file_handler = logging.FileHandler(verbose_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s " + _FORMAT))
        root.addHandler(file_handler)
        _installed[verbose_file] = file_handler
    if verbose or verbose_file:
        root.setLevel(logging.DEBUG)
