"""Hand freed memory back to the kernel: after sessions, streams or uploads end, and after RSS grew.

A closed session frees its ONNX Runtime session, arenas and buffers, but glibc keeps freed pages in its
per-thread malloc arenas (a busy agent has dozens of RPC threads), so the agent's RSS would stay at its peak
after a load. ``malloc_trim(0)`` returns those pages. It is called from a background thread, only after the
number of open sessions, streams and uploads went down (``MemoryTrimmer``) or RSS grew past a floor
(``HeapTrimmer``: what closed connections free stays in the arenas too); a trim costs a few milliseconds and
happens only where glibc provides it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable

import psutil

log = logging.getLogger(__name__)
MiB = 1024 * 1024


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


class HeapTrimmer:
    """Every ``interval_s``, trims the heap if RSS grew by more than ``growth_bytes`` since the last trim.

    The floor follows RSS down and moves up after each trim, so memory in use (loaded models) costs one trim,
    not one per tick; a trim takes a few milliseconds.
    """

    def __init__(self, interval_s: float = 10.0, growth_bytes: int = 16 * MiB) -> None:
        self._interval_s = interval_s
        self._growth = growth_bytes
        self._process = psutil.Process()
        self._floor = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rkfarm-heaptrim", daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        return int(self._process.memory_info().rss)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                rss = self._rss()
                if rss - self._floor > self._growth and release_free_memory():
                    rss = self._rss()
                    log.debug("heap trimmed: RSS %.0f MiB", rss / MiB)
                    self._floor = rss
                self._floor = min(self._floor, rss)
            except Exception:  # the trimmer must never take the agent down
                log.exception("heap trim failed")
                return

    def close(self) -> None:
        self._stop.set()
