"""The host's one retry loop: an attempt repeated while its error is retryable, with backoff, up to a deadline.

Waiting for an agent to answer, waiting for an upload slot and re-opening a lost session all use it, so they
back off the same way and never wait past the deadline their caller gave.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Pauses between attempts: ``first_s``, multiplied by ``factor`` after each, never more than ``max_s``."""

    first_s: float = 0.05
    factor: float = 2.0
    max_s: float = 1.0

    def pauses(self) -> Iterator[float]:
        pause = self.first_s
        while True:
            yield pause
            pause = min(self.max_s, pause * self.factor)


def retry(
    attempt: Callable[[], T],
    *,
    until: float,
    retryable: Callable[[Exception], bool],
    backoff: Backoff = Backoff(),
    what: str = "call",
) -> T:
    """``attempt()``'s result; its error when not ``retryable`` or once ``time.monotonic()`` reaches ``until``."""
    pauses = backoff.pauses()
    tries = 0
    while True:
        try:
            return attempt()
        except Exception as exc:
            tries += 1
            remaining = until - time.monotonic()
            if remaining <= 0 or not retryable(exc):
                raise
            pause = min(next(pauses), remaining)
            log.debug("%s failed (try %d: %s); again in %.2f s", what, tries, exc, pause)
            time.sleep(pause)
