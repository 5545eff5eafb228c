"""Measured package energy from Linux's powercap RAPL counters, where readable.

Each CPU package has a domain `/sys/class/powercap/intel-rapl:N` (AMD
processors use the same driver and names) with a `name` of "package-N",
a cumulative `energy_uj` counter in microjoules, and `max_energy_range_uj`,
where the counter wraps to zero. Subdomains such as `intel-rapl:0:0` (core,
uncore, dram) are parts of a package and are not added again.

Most virtual machines expose no RAPL, and since Linux 5.10 `energy_uj` is
readable by root only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_DOMAIN = re.compile(r"^intel-rapl:\d+$")


@dataclass
class _Domain:
    name: str
    energy_file: Path
    max_range_uj: int
    last_uj: int


class RaplReader:
    """Reads package energy; `available` is False where no counter is readable."""

    def __init__(self, root: Path = POWERCAP_ROOT) -> None:
        self.root = root
        self.domains: list[_Domain] = []
        self.unavailable_reason: str | None = None
        self._discover()

    @property
    def available(self) -> bool:
        return bool(self.domains)

    def _discover(self) -> None:
        if not self.root.is_dir():
            self.unavailable_reason = f"{self.root} does not exist (common on virtual machines)"
            return
        failures = []
        for folder in sorted(self.root.iterdir()):
            if not _PACKAGE_DOMAIN.match(folder.name):
                continue
            try:
                name = (folder / "name").read_text().strip()
                if not name.startswith("package"):
                    continue
                max_range = int((folder / "max_energy_range_uj").read_text())
                energy = int((folder / "energy_uj").read_text())
            except (OSError, ValueError) as exc:
                failures.append(f"{folder.name}: {exc}")
                continue
            self.domains.append(_Domain(name, folder / "energy_uj", max_range, energy))
        if not self.domains:
            detail = "; ".join(failures) if failures else "no package domains"
            self.unavailable_reason = f"no readable RAPL package counter under {self.root} ({detail})"

    def read_joules(self) -> float:
        """Return the joules used by all packages since the previous call (or since discovery)."""
        total_uj = 0
        for domain in self.domains:
            try:
                current = int(domain.energy_file.read_text())
            except (OSError, ValueError) as exc:
                log.warning("reading %s failed: %s", domain.energy_file, exc)
                continue
            if current >= domain.last_uj:
                total_uj += current - domain.last_uj
            else:
                # The counter wrapped at max_energy_range_uj.
                total_uj += domain.max_range_uj - domain.last_uj + current
            domain.last_uj = current
        return total_uj / 1e6
