"""The state of the broker connection, shown at all times."""

from __future__ import annotations

from tui.format import escape
from textual.widgets import Static

from tui import format
from tui.model import ConnectionInfo

STATE_MARKUP = {
    "connected": "[b green]● connected[/]",
    "connecting": "[b yellow]◌ connecting[/]",
    "reconnecting": "[b yellow]◌ reconnecting[/]",
    "lost": "[b red]✖ lost[/]",
    "stopped": "[b red]■ stopped[/]",
}


def status_markup(info: ConnectionInfo, now: float) -> str:
    """Return one line: connection state, broker URL, the embedded cloud's progress and dropped events."""
    state = info.shown_state(now)
    parts = [STATE_MARKUP.get(state, escape(state)), escape(info.url)]
    if state != "connected" and info.since:
        parts.append(f"since {format.clock_time(info.since)}")
    if info.note:
        style = "red" if info.note_is_error else "dim"
        parts.append(f"[{style}]{escape(info.note)}[/]")
    if info.dropped_events:
        parts.append(f"[yellow]{info.dropped_events} events not shown (too many at once)[/]")
    return "  ".join(parts)


class BrokerStatus(Static):
    """The connection status line."""

    def show_info(self, info: ConnectionInfo, now: float) -> None:
        self.update(status_markup(info, now))
