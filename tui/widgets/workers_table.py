"""The workers of one function: pid, state, age, invocations, CPU and memory."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from tui import format

COLUMNS = (
    ("id", "Worker"),
    ("pid", "PID"),
    ("state", "State"),
    ("age", "Age"),
    ("invocations", "Invocations"),
    ("cpu", "CPU"),
    ("rss", "RSS"),
)
STATE_STYLES = {"starting": "yellow", "idle": "green", "busy": "bold cyan", "draining": "magenta"}


def cells_of(worker: dict[str, Any], now: float) -> dict[str, str | Text]:
    """Return one worker's cells by column key; age counts from `since`, the time of its last state change."""
    state = str(worker.get("state", ""))
    since = worker.get("since")
    rss = worker.get("rss_mb")
    return {
        "id": str(worker.get("id", "")),
        "pid": str(worker.get("pid") or format.MISSING),
        "state": Text(state, style=STATE_STYLES.get(state, "")),
        "age": format.age(now - since) if isinstance(since, (int, float)) else format.MISSING,
        "invocations": str(worker.get("invocations", 0)),
        "cpu": format.milliseconds(worker.get("cpu_ms")),
        "rss": f"{rss:.1f} MB" if isinstance(rss, (int, float)) else format.MISSING,
    }


class WorkersTable(DataTable):
    """Workers keyed by worker id; rows change in place as the pool state changes."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self._cells_by_key: dict[str, dict[str, str | Text]] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show_workers(self, workers: list[dict[str, Any]], now: float) -> None:
        ids = {str(worker.get("id")) for worker in workers}
        for removed in [worker_id for worker_id in self._cells_by_key if worker_id not in ids]:
            self.remove_row(removed)
            del self._cells_by_key[removed]
        for worker in workers:
            worker_id = str(worker.get("id"))
            cells = cells_of(worker, now)
            previous = self._cells_by_key.get(worker_id)
            if previous is None:
                self.add_row(*(cells[key] for key, _ in COLUMNS), key=worker_id)
            else:
                for key, value in cells.items():
                    if previous.get(key) != value:
                        self.update_cell(worker_id, key, value, update_width=True)
            self._cells_by_key[worker_id] = cells
