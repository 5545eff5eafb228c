"""The energy model: CPU seconds and wall seconds to estimated joules.

Defaults follow the Cloud Carbon Footprint methodology's AWS coefficients,
which come from SPECpower_ssj2008 results: 0.74 W per vCPU at idle, 3.5 W
per vCPU at full load, 0.392 W per GB of memory. PUE is 1.0 for a machine
on a desk; CCF uses 1.135 for AWS. Every figure is an estimate.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
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

    def with_values(self, values: dict[str, Any], *, origin: str) -> EnergyModel:
        """Return a copy with `values` applied; raise ValueError naming the origin, key and fix."""
        known = {field.name for field in fields(self)}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"{origin}: unknown key {key!r}; valid keys are {', '.join(sorted(known))}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{origin}: key {key!r}: expected a number, got {value!r}")
            if value < 0 or (key in _POSITIVE_KEYS and value == 0):
                raise ValueError(f"{origin}: key {key!r}: {value!r} is out of range; use a number above 0")
        model = replace(self, **values)
        if model.max_watts_per_vcpu < model.idle_watts_per_vcpu:
            raise ValueError(
                f"{origin}: max_watts_per_vcpu ({model.max_watts_per_vcpu}) is below idle_watts_per_vcpu "
                f"({model.idle_watts_per_vcpu}); a busy vCPU draws at least its idle power"
            )
        if model.pue < 1.0:
            raise ValueError(f"{origin}: key 'pue': {model.pue} is below 1.0; a PUE counts overhead on top of the IT load")
        return model


_POSITIVE_KEYS = {"max_watts_per_vcpu", "pue", "baseline_vcpus"}


def load_energy_model(path: str | Path | None, overrides: dict[str, Any] | None = None) -> EnergyModel:
    """Build the model from the defaults, the [energy] table of a cloud config file, then overrides.

    Raises ValueError naming the file or option, the key and the fix.
    """
    model = EnergyModel()
    if path is not None:
        config_file = Path(path)
        try:
            document = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{config_file}: cannot be read: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{config_file}: invalid TOML: {exc}") from exc
        section = document.get("energy", {})
        if not isinstance(section, dict):
            raise ValueError(f"{config_file}: 'energy' must be a table: [energy]")
        model = model.with_values(section, origin=f"{config_file} [energy]")
    if overrides:
        model = model.with_values(overrides, origin="command line")
    return model
