"""Memory limits: the resident memory of busy workers, checked often.

While at least one worker is busy, a timer reads each busy worker's
resident set size from /proc/PID/statm every CHECK_INTERVAL_S, and reports
the workers past their function's memory_mb. With no busy worker the timer
stops, so an idle cloud does no work here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 0.05
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def resident_mb(pid: int) -> float | None:
    """Return a process's resident memory in MB, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * _PAGE_SIZE / 2**20


class MemoryWatch:
    """Calls `on_exceeded(worker_id, resident_mb)` for a watched worker past its limit."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_exceeded: Callable[[str, float], None]) -> None:
        self._loop = loop
        self._on_exceeded = on_exceeded
        # worker id -> (pid, limit in MB)
        self._watched: dict[str, tuple[int, float]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<MemoryWatch watched={len(self._watched)}>"

    def watch(self, worker_id: str, pid: int, limit_mb: float) -> None:
        self._watched[worker_id] = (pid, limit_mb)
        if self._timer is None:
            self._timer = self._loop.call_later(CHECK_INTERVAL_S, self._check)

    def unwatch(self, worker_id: str) -> None:
        self._watched.pop(worker_id, None)

    def stop(self) -> None:
        self._watched.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        for worker_id, (pid, limit_mb) in list(self._watched.items()):
            used_mb = resident_mb(pid)
            if used_mb is not None and used_mb > limit_mb:
                del self._watched[worker_id]
                self._on_exceeded(worker_id, used_mb)
        if self._watched:
            self._timer = self._loop.call_later(CHECK_INTERVAL_S, self._check)
