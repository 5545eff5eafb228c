"""A live, bounded log of finished invocations that can be filtered and paused."""

from __future__ import annotations

from collections.abc import Iterable

from tui.format import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, RichLog

from tui import format
from tui.model import REQUEST_LOG_SIZE, RequestRecord, matches_filter


def line_of(record: RequestRecord) -> Text:
    """Return one log line: time, function, cold or warm, latency, CPU, energy, and any error."""
    line = Text()
    line.append(format.clock_time(record.received_at), style="dim")
    line.append(f"  {record.function:<16.16} ")
    if record.start == "cold":
        line.append("COLD", style="bold black on yellow")
    elif record.start == "warm":
        line.append("warm", style="green")
    else:
        line.append("  - ", style="dim")
    line.append(f"  {format.milliseconds(record.latency_ms):>10}")
    line.append(f"  cpu {format.milliseconds(record.cpu_ms):>9}")
    line.append(f"  {format.joules(record.energy_j):>9}")
    if not record.ok:
        line.append(f"  ERROR {record.error_type or 'unknown'}", style="bold red")
    line.append(f"  {record.request_id[:8]}", style="dim")
    return line


class RequestLog(Vertical):
    """The request log with its filter box; records come from the app's model."""

    BINDINGS = [Binding("escape", "clear_filter", "Clear filter", show=False)]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.paused = False
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: function, request id, cold, warm, error or error type", id="request-filter")
        yield RichLog(max_lines=REQUEST_LOG_SIZE, wrap=False, id="request-lines")

    def on_mount(self) -> None:
        self.query_one("#request-filter", Input).display = False
        self._update_title()

    def add(self, records: Iterable[RequestRecord]) -> None:
        """Append the records that match the filter, unless the tail is paused."""
        if self.paused:
            return
        lines = self.query_one("#request-lines", RichLog)
        for record in records:
            if matches_filter(record, self.filter_text):
                lines.write(line_of(record))

    def show_all(self, records: Iterable[RequestRecord]) -> None:
        """Replace the log with the matching records, after a filter change or a resume."""
        lines = self.query_one("#request-lines", RichLog)
        lines.clear()
        for record in records:
            if matches_filter(record, self.filter_text):
                lines.write(line_of(record))

    def open_filter(self) -> None:
        box = self.query_one("#request-filter", Input)
        box.display = True
        box.focus()

    def action_close_filter(self) -> None:
        """Hide the filter box and keep its filter, shown in the title (Enter)."""
        box = self.query_one("#request-filter", Input)
        box.display = bool(self.filter_text)
        self.screen.focus_next()

    def action_clear_filter(self) -> None:
        """Clear the filter and hide its box (Esc), as Esc does in k9s."""
        box = self.query_one("#request-filter", Input)
        box.value = ""  # Input.Changed reaches the app, which shows every record again.
        box.display = False
        self.screen.focus_next()

    def toggle_pause(self) -> bool:
        self.paused = not self.paused
        self._update_title()
        return self.paused

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        self._update_title()

    def _update_title(self) -> None:
        title = "Requests"
        if self.filter_text:
            title += f" matching {escape(self.filter_text)!s}"
        if self.paused:
            title += " [b yellow](paused, p resumes)[/]"
        self.border_title = title
