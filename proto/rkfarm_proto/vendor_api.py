"""The vendor's error convention, shared by ``rkfarm.RKNN`` (host) and ``rkfarm_agent.lite.RKNNLite`` (board).

A method fails with the vendor's failure value (-1, or None) and a logged reason; the exception is kept in the
object's ``last_error``, and raised instead when the object was made with ``raise_errors=True``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from rkfarm_proto.errors import RkfarmError

P = ParamSpec("P")
R = TypeVar("R")


def vendor_api(failure: Any, log: logging.Logger) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a method of an object with ``last_error`` and ``_raise_errors``: exceptions become ``failure``."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            self: Any = args[0]
            try:
                result = fn(*args, **kwargs)
            except RkfarmError as exc:
                self.last_error = exc
                if self._raise_errors:
                    raise
                log.error("%s: %s", fn.__name__, exc)
                return failure  # type: ignore[no-any-return]
            except Exception as exc:  # a bug or an unexpected library failure: keep the vendor contract
                self.last_error = exc
                if self._raise_errors:
                    raise
                log.exception("%s failed unexpectedly: %s", fn.__name__, exc)
                return failure  # type: ignore[no-any-return]
            self.last_error = None
            return result

        return wrapper

    return decorate
