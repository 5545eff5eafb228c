"""Estimated watts of the cloud now and over time, with its joules and the always-on server's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from tui import format


def summary_of(energy: dict[str, Any]) -> str:
    """Return the markup beside the sparkline: watts now, joules, baseline joules and their ratio."""
    if not energy:
        return "[dim]waiting for the energy state[/]"
    baseline = energy.get("baseline", {})
    joules = float(energy.get("joules", 0.0))
    baseline_joules = float(baseline.get("joules", 0.0))
    lines = [
        f"now        [b]{float(energy.get('watts', 0.0)):.3f} W[/] (estimated)",
        f"this cloud {format.joules(joules)} since it started",
        f"always-on  {format.joules(baseline_joules)} at {float(baseline.get('watts', 0.0)):.2f} W over the same time",
    ]
    if joules > 0:
        lines.append(f"[dim]the always-on server spends {baseline_joules / joules:.1f} times as much[/]")
    return "\n".join(lines)


class WattsPanel(Vertical):
    """A sparkline of recent watt samples above the energy summary."""

    def compose(self) -> ComposeResult:
        yield Sparkline([], id="watts-sparkline")
        yield Static(summary_of({}), id="watts-summary")

    def on_mount(self) -> None:
        self.border_title = "Watts"

    def show_energy(self, energy: dict[str, Any], history: Sequence[float]) -> None:
        # Sparkline scales from the lowest sample to the highest, so a change of
        # a few milliwatts fills the full height. A leading 0 anchors the scale
        # at zero watts, and the subtitle gives its top.
        self.query_one("#watts-sparkline", Sparkline).data = [0.0, *history] if history else []
        self.border_subtitle = f"0 to {max(history):.2f} W" if history else ""
        self.query_one("#watts-summary", Static).update(summary_of(energy))
