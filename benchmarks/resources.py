"""CPU and memory of processes, read with psutil."""

from __future__ import annotations

import time

import psutil


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """Return user + system CPU seconds of the process and each live descendant, by PID."""
    root = psutil.Process(pid)
    seconds = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            seconds[process.pid] = _cpu_seconds(process)
        except psutil.NoSuchProcess:
            pass
    return seconds


def idle_cpu_percent(tree_pids: list[int], single_pids: list[int], seconds: float) -> dict[int, float]:
    """Return the CPU% of one core of each process over one shared window of `seconds`.

    Each PID of `tree_pids` counts with its descendants, each of
    `single_pids` alone. A descendant that starts during the window counts
    from zero. NOTE: the CPU time of a descendant that exits during the
    window is lost, so an idle cloud that starts and stops workers reads low.
    """
    before_trees = {pid: tree_cpu_seconds(pid) for pid in tree_pids}
    before_single = {pid: _cpu_seconds(psutil.Process(pid)) for pid in single_pids}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    percents = {}
    for pid in tree_pids:
        after = tree_cpu_seconds(pid)
        used = sum(value - before_trees[pid].get(child, 0.0) for child, value in after.items())
        percents[pid] = 100 * used / elapsed
    for pid in single_pids:
        percents[pid] = 100 * (_cpu_seconds(psutil.Process(pid)) - before_single[pid]) / elapsed
    return percents


def memory_mb(pid: int) -> tuple[float, float]:
    """Return the process's unique memory (USS) and resident memory (RSS), in MB of 10**6 bytes."""
    info = psutil.Process(pid).memory_full_info()
    return info.uss / 1e6, info.rss / 1e6
