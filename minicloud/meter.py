"""Live watts of the cloud, sampled with psutil about once a second.

Each sample reads the CPU time of every live worker and of the cloud's own
process (gateway, controller and, when embedded, the broker), and turns the
CPU seconds and the memory held into watts with the energy model. The
always-on baseline is a dedicated server of the model's size, on for the
same wall-clock time and doing the same CPU work. Where RAPL counters are
readable, the measured package energy is kept beside the estimate and
shared out to functions by their part of the machine's CPU time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psutil

from minicloud.energy import LAMBDA_MB_PER_VCPU, EnergyModel
from minicloud.rapl import RaplReader

log = logging.getLogger(__name__)


class EnergyMeter:
    """Integrates estimated, and where possible measured, watts over time."""

    def __init__(
        self,
        model: EnergyModel,
        *,
        live_workers: Callable[[], dict[int, tuple[str, int]]],
        rapl: RaplReader | None = None,
    ) -> None:
        self._model = model
        # pid -> (function, memory_mb) of every live worker
        self._live_workers = live_workers
        self._processes: dict[int, psutil.Process] = {}
        self._last_cpu: dict[int, float] = {}
        self._own = psutil.Process()
        self._started = time.monotonic()
        self._last_sample = self._started
        self._own_cpu = _cpu_seconds(self._own)
        self._machine_busy = _machine_busy_seconds()
        self.watts = 0.0
        self.joules = 0.0
        self.cpu_seconds = 0.0

        self._rapl = rapl if rapl is not None else RaplReader()
        if self._rapl.available:
            log.info("measuring package energy from RAPL: %s", ", ".join(domain.name for domain in self._rapl.domains))
        else:
            log.info("no measured energy: %s; the figures are the model's estimates", self._rapl.unavailable_reason)
        self.measured_joules = 0.0
        self.measured_watts = 0.0
        self.measured_by_function: dict[str, float] = {}

    def sample(self) -> None:
        now = time.monotonic()
        interval = now - self._last_sample
        if interval <= 0:
            return
        self._last_sample = now
        model = self._model
        work_watts = model.max_watts_per_vcpu - model.idle_watts_per_vcpu

        # the cloud's own process: gateway, controller and an embedded broker
        own_cpu = _cpu_seconds(self._own)
        cpu_delta = max(0.0, own_cpu - self._own_cpu)
        self._own_cpu = own_cpu
        own_memory_mb = self._own.memory_info().rss / 2**20
        watts = self._held_watts(own_memory_mb) + cpu_delta / interval * work_watts

        # every live worker
        function_cpu: dict[str, float] = {}
        live = self._live_workers()
        for pid in list(self._processes):
            if pid not in live:
                del self._processes[pid]
                self._last_cpu.pop(pid, None)
        for pid, (function, memory_mb) in live.items():
            delta = self._worker_cpu_delta(pid)
            if delta is None:
                continue
            cpu_delta += delta
            function_cpu[function] = function_cpu.get(function, 0.0) + delta
            watts += self._held_watts(memory_mb) + delta / interval * work_watts

        self.watts = model.pue * watts
        self.joules += self.watts * interval
        self.cpu_seconds += cpu_delta
        if self._rapl.available:
            self._add_measured(interval, function_cpu)

    def _worker_cpu_delta(self, pid: int) -> float | None:
        process = self._processes.get(pid)
        try:
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
            cpu = _cpu_seconds(process)
        except psutil.Error:
            return None
        previous = self._last_cpu.get(pid, cpu)
        # A worker's cumulative CPU never goes down; a lower reading is ignored.
        self._last_cpu[pid] = max(cpu, previous)
        return max(0.0, cpu - previous)

    def _add_measured(self, interval: float, function_cpu: dict[str, float]) -> None:
        joules = self._rapl.read_joules()
        self.measured_joules += joules
        self.measured_watts = joules / interval
        busy = _machine_busy_seconds()
        machine_cpu = max(busy - self._machine_busy, 1e-9)
        self._machine_busy = busy
        for function, seconds in function_cpu.items():
            share = min(1.0, seconds / machine_cpu)
            self.measured_by_function[function] = self.measured_by_function.get(function, 0.0) + joules * share

    def process_cpu_ms(self, pid: int | None) -> float | None:
        """Return psutil's CPU milliseconds of a live worker at the last sample, or None."""
        seconds = self._last_cpu.get(pid) if pid is not None else None
        return None if seconds is None else seconds * 1000

    def _held_watts(self, memory_mb: float) -> float:
        """Watts of the idle share of the vCPUs and of the memory that a process holds."""
        model = self._model
        vcpus = memory_mb / LAMBDA_MB_PER_VCPU
        return vcpus * model.idle_watts_per_vcpu + memory_mb / 1024 * model.watts_per_gb

    def state(self, by_function: dict[str, dict[str, float]]) -> dict[str, Any]:
        elapsed = time.monotonic() - self._started
        baseline_joules = self._model.dedicated_joules(cpu_s=self.cpu_seconds, wall_s=elapsed)
        measured = None
        if self._rapl.available:
            measured = {
                "source": "RAPL package counters",
                "joules": round(self.measured_joules, 4),
                "watts": round(self.measured_watts, 4),
                "by_function": {name: round(joules, 6) for name, joules in self.measured_by_function.items()},
            }
        return {
            "ts": round(time.time(), 3),
            "watts": round(self.watts, 4),
            "joules": round(self.joules, 4),
            "by_function": {
                name: {
                    "joules": round(totals["joules"], 6),
                    "cpu_ms": round(totals["cpu_ms"], 3),
                    "invocations": int(totals["invocations"]),
                }
                for name, totals in by_function.items()
            },
            "baseline": {
                "joules": round(baseline_joules, 4),
                "watts": round(baseline_joules / elapsed, 4) if elapsed > 0 else 0.0,
            },
            "model": self._model.to_dict(),
            "measured": measured,
        }


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def _machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)
