"""The newest finished invocations of one function."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from tui import format
from tui.model import RequestRecord

RECENT_REQUESTS = 50

COLUMNS = (
    ("time", "Time"),
    ("request", "Request"),
    ("start", "Start"),
    ("latency", "Latency"),
    ("cpu", "CPU"),
    ("energy", "Energy"),
    ("worker", "Worker"),
    ("error", "Error"),
)


def cells_of(record: RequestRecord) -> tuple[str | Text, ...]:
    start = Text("COLD", style="bold black on yellow") if record.is_cold else Text(record.start or format.MISSING, style="green")
    error = Text(record.error_type or "error", style="bold red") if not record.ok else Text("")
    return (
        format.clock_time(record.received_at),
        record.request_id[:8],
        start,
        format.milliseconds(record.latency_ms),
        format.milliseconds(record.cpu_ms),
        format.joules(record.energy_j),
        record.worker_id or format.MISSING,
        error,
    )


class RecentRequests(DataTable):
    """Up to RECENT_REQUESTS rows, oldest first; new requests are appended and the oldest removed."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self._keys: list[str] = []

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show_records(self, records: list[RequestRecord]) -> None:
        wanted = {record.request_id for record in records}
        for key in [key for key in self._keys if key not in wanted]:
            self.remove_row(key)
            self._keys.remove(key)
        for record in records:
            if record.request_id not in self._keys:
                self.add_row(*cells_of(record), key=record.request_id)
                self._keys.append(record.request_id)
