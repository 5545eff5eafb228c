"""Live watts of the cloud, sampled with psutil about once a second.

Each sample reads the CPU time of every live worker and of the cloud's own
process (gateway, controller and, when embedded, the broker), and turns the
CPU seconds and the memory held into watts with the energy model. The
always-on baseline is a dedicated server of the model's size, on for the
same wall-clock time and doing the same CPU work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psutil

from minicloud.energy import LAMBDA_MB_PER_VCPU, EnergyModel


class EnergyMeter:
    """Integrates estimated watts over time."""

    def __init__(self, model: EnergyModel, *, worker_memory: Callable[[], dict[int, int]]) -> None:
        self._model = model
        # pid -> memory_mb of every live worker
        self._worker_memory = worker_memory
        self._processes: dict[int, psutil.Process] = {}
        self._last_cpu: dict[int, float] = {}
        self._own = psutil.Process()
        self._started = time.monotonic()
        self._last_sample = self._started
        self._own_cpu = self._cpu_seconds(self._own)
        self.watts = 0.0
        self.joules = 0.0
        self.cpu_seconds = 0.0

    def sample(self) -> None:
        now = time.monotonic()
        interval = now - self._last_sample
        if interval <= 0:
            return
        self._last_sample = now
        model = self._model
        work_watts = model.max_watts_per_vcpu - model.idle_watts_per_vcpu

        own_cpu = self._cpu_seconds(self._own)
        cpu_delta = max(0.0, own_cpu - self._own_cpu)
        self._own_cpu = own_cpu
        own_memory_mb = self._own.memory_info().rss / 2**20
        watts = self._held_watts(own_memory_mb) + cpu_delta / interval * work_watts

        live = self._worker_memory()
        for pid in list(self._processes):
            if pid not in live:
                del self._processes[pid]
                self._last_cpu.pop(pid, None)
        for pid, memory_mb in live.items():
            process = self._processes.get(pid)
            try:
                if process is None:
                    process = self._processes[pid] = psutil.Process(pid)
                cpu = self._cpu_seconds(process)
            except psutil.Error:
                continue
            previous = self._last_cpu.get(pid, cpu)
            self._last_cpu[pid] = cpu
            delta = max(0.0, cpu - previous)
            cpu_delta += delta
            watts += self._held_watts(memory_mb) + delta / interval * work_watts

        self.watts = model.pue * watts
        self.joules += self.watts * interval
        self.cpu_seconds += cpu_delta

    def _held_watts(self, memory_mb: float) -> float:
        """Watts of the idle share of the vCPUs and of the memory that a process holds."""
        model = self._model
        vcpus = memory_mb / LAMBDA_MB_PER_VCPU
        return vcpus * model.idle_watts_per_vcpu + memory_mb / 1024 * model.watts_per_gb

    @staticmethod
    def _cpu_seconds(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system + times.children_user + times.children_system

    def state(self, by_function: dict[str, dict[str, float]]) -> dict[str, Any]:
        elapsed = time.monotonic() - self._started
        baseline_joules = self._model.dedicated_joules(cpu_s=self.cpu_seconds, wall_s=elapsed)
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
            # TODO: read /sys/class/powercap/intel-rapl* where it is readable.
            "measured": None,
        }
