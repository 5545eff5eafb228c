"""CPU time of one invocation, to the millisecond, child processes included.

Three parts are added up:

- the worker's own CPU, from time.process_time_ns() (nanosecond resolution,
  not the 10 ms clock tick of /proc);
- children the handler started and waited for, from the change in
  getrusage(RUSAGE_CHILDREN);
- children still running when the handler returns, from psutil (clock-tick
  resolution), counted once: a child that lives on is charged only for
  what it used since the last invocation.

Scanning for running children costs milliseconds, so it happens only when
a process was created on the machine during the invocation (the last pid
in /proc/loadavg changed) or a child from an earlier invocation lives on.
"""

from __future__ import annotations

import os
import resource
import time

import psutil


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """Measures the CPU time of consecutive invocations in one worker."""

    def __init__(self) -> None:
        try:
            self._loadavg_fd: int | None = os.open("/proc/loadavg", os.O_RDONLY)
        except OSError:
            self._loadavg_fd = None  # Not Linux: scan for children every time.
        self._process = psutil.Process()
        # pid -> CPU seconds of a running child already charged to an invocation
        self._charged: dict[int, float] = {}
        self._start_ns = 0
        self._start_children = 0.0
        self._start_last_pid: bytes | None = None

    def start(self) -> None:
        self._start_last_pid = self._last_pid()
        self._start_children = _children_seconds()
        self._start_ns = time.process_time_ns()

    def stop(self) -> float:
        """Return the CPU milliseconds used since start(), children included."""
        own_ms = (time.process_time_ns() - self._start_ns) / 1e6
        reaped_s = _children_seconds() - self._start_children
        running_s = 0.0
        if self._charged or self._last_pid() != self._start_last_pid or self._start_last_pid is None:
            running_s, already_charged_s = self._running_children_seconds()
            # A child charged earlier and reaped now is in RUSAGE_CHILDREN whole.
            reaped_s = max(0.0, reaped_s - already_charged_s)
        return own_ms + (reaped_s + running_s) * 1000

    def _running_children_seconds(self) -> tuple[float, float]:
        """Return (CPU of running children not charged yet, CPU charged to children now gone)."""
        new_charge: dict[int, float] = {}
        uncharged = 0.0
        try:
            children = self._process.children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            try:
                times = child.cpu_times()
            except psutil.Error:
                continue
            total = times.user + times.system + times.children_user + times.children_system
            uncharged += max(0.0, total - self._charged.get(child.pid, 0.0))
            new_charge[child.pid] = total
        gone = sum(seconds for pid, seconds in self._charged.items() if pid not in new_charge)
        self._charged = new_charge
        return uncharged, gone

    def _last_pid(self) -> bytes | None:
        if self._loadavg_fd is None:
            return None
        # The fifth field of /proc/loadavg is the pid most recently created.
        return os.pread(self._loadavg_fd, 128, 0).rsplit(b" ", 1)[-1]
