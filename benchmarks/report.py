"""Rows of the benchmark table, each figure with its target, printed as Markdown.

A row may also carry a guard, a limit far looser than its target, which
`--guard` turns into a failing exit status. Guards are set to catch gross
regressions on a loaded CI machine, not noise.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

from benchmarks.measure import percentile


@dataclass(frozen=True)
class Target:
    """A bound on one figure, such as "<= 15" ms."""

    text: str
    check: Callable[[float], bool]


def at_most(limit: float, unit: str) -> Target:
    return Target(f"<= {limit:g} {unit}".strip(), lambda value: value <= limit)


def under(limit: float, unit: str) -> Target:
    return Target(f"< {limit:g} {unit}".strip(), lambda value: value < limit)


@dataclass(frozen=True)
class Row:
    broker: str
    measurement: str
    figure: str
    target: Target | None = None
    value: float | None = None
    guard: Target | None = None

    @property
    def status(self) -> str:
        if self.target is None or self.value is None:
            return ""
        return "met" if self.target.check(self.value) else "not met"


def latency_figure(timings: list[float]) -> str:
    return f"p50 {statistics.median(timings):.2f} ms, p95 {percentile(timings, 0.95):.2f} ms (n={len(timings)})"


def markdown_table(rows: list[Row]) -> str:
    lines = ["| broker | measurement | figure | target | result |", "|---|---|---|---|---|"]
    for row in rows:
        target = row.target.text if row.target else ""
        lines.append(f"| {row.broker} | {row.measurement} | {row.figure} | {target} | {row.status} |")
    return "\n".join(lines)


def guard_failures(rows: list[Row]) -> list[str]:
    """Return one line for each row whose value is past its guard, naming the figure, its value and the limit."""
    failures = []
    for row in rows:
        if row.guard is None or row.value is None or row.guard.check(row.value):
            continue
        failures.append(f"{row.broker}: {row.measurement} is {row.value:.2f}, past the guard limit {row.guard.text}")
    return failures
