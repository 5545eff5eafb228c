"""The drill-down of one function: its configuration, workers and recent requests."""

from __future__ import annotations

from tui.format import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from tui.model import CloudModel
from tui.widgets.broker_status import BrokerStatus
from tui.widgets.recent_requests import RECENT_REQUESTS, RecentRequests
from tui.widgets.workers_table import WorkersTable


def config_line(name: str, config: dict[str, object], init_error: str | None) -> str:
    if not config:
        return f"[b]{escape(name)}[/]  [red]not deployed[/]"
    line = (
        f"[b]{escape(name)}[/]  handler {escape(str(config.get('handler')))}  "
        f"memory {config.get('memory_mb')} MB  timeout {config.get('timeout_s')} s  "
        f"min warm {config.get('min_warm')}  max {config.get('max_concurrency')}  "
        f"keep warm {config.get('keep_warm_s')} s"
    )
    if init_error:
        line += f"\n[b red]init failed: {escape(init_error)}[/]"
    return line


class FunctionScreen(Screen):
    """Workers and recent requests of one function, refreshed with the main screen."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back", tooltip="Return to the pools")]

    def __init__(self, function: str) -> None:
        super().__init__()
        self.function = function

    def compose(self) -> ComposeResult:
        yield BrokerStatus(id="function-broker-status")
        yield Static(id="function-config")
        yield WorkersTable(id="workers")
        yield RecentRequests(id="recent-requests")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(WorkersTable).border_title = f"Workers of {self.function}"
        self.query_one(RecentRequests).border_title = f"Last {RECENT_REQUESTS} requests to {self.function}"

    def show_model(self, model: CloudModel, now: float) -> None:
        row = model.pool_row(self.function)
        self.query_one("#function-config", Static).update(config_line(self.function, model.config_of(self.function), row.init_error))
        self.query_one(WorkersTable).show_workers(model.workers_of(self.function), now)
        self.query_one(RecentRequests).show_records(model.recent_requests(self.function, RECENT_REQUESTS))
