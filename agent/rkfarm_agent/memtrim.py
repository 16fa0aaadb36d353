"""Hand freed memory back to the kernel after sessions close.

A closed session frees its ONNX Runtime session, arenas and buffers, but glibc keeps freed pages in its
per-thread malloc arenas (a busy agent has dozens of RPC threads), so the agent's RSS would stay at its peak
after a load. ``malloc_trim(0)`` returns those pages. It is called from a background thread, only after the
number of open sessions went down (it costs a few milliseconds), and only where glibc provides it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _load_trim()


def release_free_memory() -> bool:
    """Return free heap pages to the kernel; False where the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class MemoryTrimmer:
    """Watches a count (open sessions) and trims the heap shortly after it went down."""

    def __init__(self, count: Callable[[], int], interval_s: float = 1.0) -> None:
        self._count = count
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rkfarm-memtrim", daemon=True)
        if _TRIM is not None:
            self._thread.start()

    def _loop(self) -> None:
        last = self._count()
        again = 0  # ticks left to trim once more: buffers of the closing calls are freed a moment later
        while not self._stop.wait(self._interval_s):
            try:
                now = self._count()
                if now < last or again:
                    release_free_memory()
                    log.debug("sessions %d -> %d: freed memory returned to the system", last, now)
                    again = 2 if now < last else again - 1
                last = now
            except Exception:  # the trimmer must never take the agent down
                log.exception("memory trim failed")

    def close(self) -> None:
        self._stop.set()
