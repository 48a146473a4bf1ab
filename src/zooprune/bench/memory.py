"""Peak resident memory of a block of code, by sampling the process RSS in a background thread.

``tracemalloc`` only sees Python's own allocator, not torch's tensor memory, and
``getrusage().ru_maxrss`` is a peak over the whole process life that cannot be reset, so the
bench samples ``/proc/self/statm`` every ``interval`` seconds and reports the largest RSS seen
during the block minus the RSS when it started. Before each block ``malloc_trim(0)`` (glibc)
hands freed heap pages back to the OS, so memory freed by an earlier run does not hide this
run's growth. Caveats: a spike shorter than the interval can be missed; where
``/proc/self/statm`` is missing (non-Linux) the ``ru_maxrss`` growth during the block is used,
which reads 0 whenever the block stays below an earlier peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

_STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """Current resident set size in bytes, or None where ``/proc/self/statm`` does not exist."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def max_rss_bytes() -> int:
    """Peak RSS of the process so far (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def trim_heap() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``); a no-op elsewhere."""
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None:
            trim(0)
    except OSError:
        return


class PeakRSS:
    """``with PeakRSS() as mem: ...`` then ``mem.peak_delta`` = peak RSS during the block - RSS at entry (bytes)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.start = 0
        self.peak = 0
        self.peak_delta = 0
        self.method = "statm"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            now = rss_bytes()
            if now is not None and now > self.peak:
                self.peak = now
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        trim_heap()
        current = rss_bytes()
        if current is None:
            self.method = "ru_maxrss"
            self.start = max_rss_bytes()
        else:
            self.start = current
            self.peak = current
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is not None:
            now = rss_bytes() or 0
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, now)
        else:
            self.peak = max_rss_bytes()
        self.peak_delta = max(0, self.peak - self.start)
