"""The energy model: CPU seconds and wall seconds to estimated joules.

Defaults follow the Cloud Carbon Footprint methodology's AWS coefficients,
which come from SPECpower_ssj2008 results: 0.74 W per vCPU at idle, 3.5 W
per vCPU at full load, 0.392 W per GB of memory. PUE is 1.0 for a machine
on a desk; CCF uses 1.135 for AWS. Every figure is an estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# AWS Lambda allots one vCPU per 1,769 MB of memory.
LAMBDA_MB_PER_VCPU = 1769.0


@dataclass(frozen=True)
class EnergyModel:
    """Power coefficients of the model, in watts."""

    idle_watts_per_vcpu: float = 0.74
    max_watts_per_vcpu: float = 3.5
    watts_per_gb: float = 0.392
    pue: float = 1.0
    # The always-on server that the baseline compares with.
    baseline_vcpus: int = 2
    baseline_memory_gb: float = 4.0

    def invocation_joules(self, *, cpu_s: float, wall_s: float, memory_mb: float) -> float:
        """Estimate one invocation: idle share of its vCPUs, CPU work, and memory, times PUE."""
        vcpus = memory_mb / LAMBDA_MB_PER_VCPU
        memory_gb = memory_mb / 1024
        idle = vcpus * wall_s * self.idle_watts_per_vcpu
        work = cpu_s * (self.max_watts_per_vcpu - self.idle_watts_per_vcpu)
        memory = wall_s * memory_gb * self.watts_per_gb
        return self.pue * (idle + work + memory)

    def dedicated_joules(self, *, cpu_s: float, wall_s: float) -> float:
        """Estimate an always-on server of baseline_vcpus and baseline_memory_gb doing the same CPU work."""
        idle = self.baseline_vcpus * self.idle_watts_per_vcpu * wall_s
        work = cpu_s * (self.max_watts_per_vcpu - self.idle_watts_per_vcpu)
        memory = self.baseline_memory_gb * self.watts_per_gb * wall_s
        return self.pue * (idle + work + memory)

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["source"] = "Cloud Carbon Footprint AWS coefficients (SPECpower_ssj2008)"
        return body
