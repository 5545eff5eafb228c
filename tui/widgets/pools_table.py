"""A table with one row per function: workers by state, queue, latency, CPU and energy."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from tui import format
from tui.model import PoolRow

COLUMNS = (
    ("function", "Function"),
    ("starting", "Starting"),
    ("idle", "Idle"),
    ("busy", "Busy"),
    ("draining", "Draining"),
    ("queued", "Queued"),
    ("invocations", "Invocations"),
    ("cold", "Cold"),
    ("p50", "p50"),
    ("p95", "p95"),
    ("cpu", "CPU"),
    ("energy", "Energy"),
)


def cells_of(row: PoolRow) -> dict[str, str | Text]:
    """Return the cell values of one row by column key."""
    name = Text(row.function, style="bold red") if row.init_error else Text(row.function)
    cells: dict[str, str | Text] = {"function": name}
    for state, count in row.workers_by_state.items():
        cells[state] = str(count)
    cells.update(
        queued=str(row.queued),
        invocations=str(row.invocations),
        cold=format.share(row.cold_share),
        p50=format.milliseconds(row.p50_ms),
        p95=format.milliseconds(row.p95_ms),
        cpu=format.milliseconds(row.cpu_ms),
        energy=format.joules(row.energy_j),
    )
    return cells


class PoolsTable(DataTable):
    """Pools by function; cells change in place, so row order and the cursor stay put."""

    BINDINGS = [Binding("enter", "select_cursor", "Workers", tooltip="Open the workers and requests of the function")]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self._cells_by_key: dict[str, dict[str, str | Text]] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show_rows(self, rows: list[PoolRow]) -> None:
        """Add, change and remove rows to match `rows`; unchanged cells are not touched."""
        names = {row.function for row in rows}
        for removed in [name for name in self._cells_by_key if name not in names]:
            self.remove_row(removed)
            del self._cells_by_key[removed]
        for row in rows:
            cells = cells_of(row)
            previous = self._cells_by_key.get(row.function)
            if previous is None:
                self.add_row(*(cells[key] for key, _ in COLUMNS), key=row.function)
            else:
                for key, value in cells.items():
                    if previous.get(key) != value:
                        self.update_cell(row.function, key, value, update_width=True)
            self._cells_by_key[row.function] = cells

    @property
    def selected_function(self) -> str | None:
        if self.row_count == 0:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return row_key.value
