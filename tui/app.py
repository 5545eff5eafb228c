"""The minicloud terminal UI: pools, requests, watts and a command bar over the bus."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Static
from textual.worker import Worker, WorkerState

from minicloud import protocol
from tui.cloud_client import BusCloudClient, CloudClient
from tui.commands import Command, CommandError, parse_command
from tui.format import escape
from tui.embedded import EmbeddedCloud, default_log_path
from tui.listener import BusListener
from tui.messages import BrokerStateChanged, CommandFinished, EmbeddedCloudChanged, EnergyUpdated, InvocationsFinished, PoolsUpdated
from tui.model import CloudModel, ConnectionInfo
from tui.palette import MinicloudCommands
from tui.runner import run_command
from tui.screens.function_screen import FunctionScreen
from tui.screens.help_screen import HelpScreen
from tui.widgets.broker_status import BrokerStatus
from tui.widgets.command_bar import CommandBar
from tui.widgets.pools_table import PoolsTable
from tui.widgets.request_log import RequestLog
from tui.widgets.result_pane import ResultPane
from tui.widgets.watts_panel import WattsPanel

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 0.5


class MinicloudApp(App[int]):
    """The main screen; bus data arrives as messages from the listener worker."""

    CSS_PATH = "app.tcss"
    TITLE = "minicloud"
    COMMANDS = App.COMMANDS | {MinicloudCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("colon", "focus_command", "Command", key_display=":"),
        Binding("slash", "filter_requests", "Filter", key_display="/"),
        Binding("p", "toggle_pause", "Pause log"),
        Binding("question_mark", "show_help", "Keys", key_display="?"),
    ]

    def __init__(
        self,
        *,
        broker_url: str,
        namespace: str = protocol.DEFAULT_NAMESPACE,
        client: CloudClient | None = None,
        launcher: EmbeddedCloud | None = None,
        listen: bool = True,
        clock: Callable[[], float] = time.time,
        handle_signals: bool = False,
    ) -> None:
        super().__init__()
        self.broker_url = broker_url
        self.topics = protocol.Topics(namespace)
        self.client = client or BusCloudClient(broker_url, namespace)
        self.launcher = launcher
        self.listen = listen
        self.clock = clock
        self.handle_signals = handle_signals
        self.model = CloudModel()
        self.connection = ConnectionInfo(url=broker_url)

    def compose(self) -> ComposeResult:
        yield BrokerStatus(id="broker-status")
        with Horizontal(id="top"):
            yield PoolsTable(id="pools")
            yield WattsPanel(id="watts")
        with Horizontal(id="middle"):
            yield RequestLog(id="requests")
            yield ResultPane("[dim]Type : then a command, for example invoke hello {\"name\": \"x\"}[/]", id="result")
        with Vertical(id="command-area"):
            yield Static(id="command-error")
            yield CommandBar(lambda: self.model.function_names, id="command-bar")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(PoolsTable).border_title = "Pools"
        self.query_one(ResultPane).border_title = "Result"
        self.query_one(PoolsTable).focus()
        self.connection.set_state("connecting", self.broker_url, self.clock())
        self.refresh_status()
        self.set_interval(STATUS_INTERVAL_S, self.refresh_status)
        if self.listen:
            self.listen_to_bus()
        if self.handle_signals:
            # A closed terminal (SIGHUP) or a kill (SIGTERM) quits like q does, so
            # the terminal is restored and an embedded cloud is stopped.
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGHUP, signal.SIGTERM):
                loop.add_signal_handler(signum, self.exit)

    async def on_unmount(self) -> None:
        await self.client.close()

    # -- the bus -------------------------------------------------------------

    @work(group="bus", exit_on_error=False, name="bus listener")
    async def listen_to_bus(self) -> None:
        if self.launcher is not None:
            await self.launcher.ensure(lambda text: self.post_message(EmbeddedCloudChanged(text)))
            if self.launcher.started:
                self.post_message(EmbeddedCloudChanged(f"embedded cloud pid {self.launcher.process.pid}, log {self.launcher.log_path}"))
            else:
                self.post_message(EmbeddedCloudChanged(self.launcher.waiting_note))
        await BusListener(self.broker_url, self.topics, self.post_message).run()

    def on_broker_state_changed(self, message: BrokerStateChanged) -> None:
        self.connection.set_state(message.state, message.url, self.clock())
        if message.state == "connected" and self.launcher is not None and self.launcher.waiting_note:
            # The cloud that the note waited for has come.
            self.launcher.waiting_note = ""
            self.post_message(EmbeddedCloudChanged(""))
        if message.state == "reconnecting":
            # The command connection died with the broker; the next command opens a new one.
            self.run_worker(self.client.close(), group="client", exit_on_error=False)
        self.refresh_status()

    def on_embedded_cloud_changed(self, message: EmbeddedCloudChanged) -> None:
        self.connection.note = message.text
        self.connection.note_is_error = message.failed
        self.refresh_status()

    def on_pools_updated(self, message: PoolsUpdated) -> None:
        self.model.apply_pools(message.state)
        self.refresh_views()

    def on_energy_updated(self, message: EnergyUpdated) -> None:
        self.model.apply_energy(message.state)
        self.query_one(WattsPanel).show_energy(self.model.energy, self.model.watts_history)
        self.refresh_views()

    def on_invocations_finished(self, message: InvocationsFinished) -> None:
        records = self.model.add_events(message.events, self.clock())
        self.model.dropped_events += message.dropped
        self.connection.dropped_events = self.model.dropped_events
        self.query_one(RequestLog).add(records)
        self.refresh_views()

    def refresh_views(self) -> None:
        self.query_one(PoolsTable).show_rows(self.model.pool_rows())
        if isinstance(self.screen, FunctionScreen):
            self.screen.show_model(self.model, self.clock())

    def refresh_status(self) -> None:
        now = self.clock()
        for screen in self.screen_stack:
            for status in screen.query(BrokerStatus):
                status.show_info(self.connection, now)

    # -- commands ------------------------------------------------------------

    @on(Input.Submitted, "#command-bar")
    def submit_command(self, event: Input.Submitted) -> None:
        bar = self.query_one(CommandBar)
        bar.remember(event.value.strip())
        bar.value = ""
        self.run_command_text(event.value)

    @on(Input.Changed, "#command-bar")
    def clear_command_error(self, event: Input.Changed) -> None:
        # Clearing the bar after a submit also sends Changed, which must not hide that command's error.
        if event.value:
            self.query_one("#command-error", Static).update("")

    def run_command_text(self, text: str) -> None:
        """Parse a command line and run it, or show why it cannot run under the command bar."""
        try:
            command = parse_command(text, self.model.function_names)
        except CommandError as exc:
            self.query_one("#command-error", Static).update(f"[b red]error:[/] {escape(str(exc))}")
            return
        self.query_one(ResultPane).show_result(text.strip(), "[dim]running...[/]", ok=True)
        self.execute_command(command, text.strip())
        # As in k9s, a command that runs hands the keys back to the views, so q
        # quits again. ":" and the up arrow bring the command back.
        if self.query_one(CommandBar).has_focus:
            self.query_one(PoolsTable).focus()

    @work(group="commands", exit_on_error=False, name="command")
    async def execute_command(self, command: Command, text: str) -> None:
        outcome = await run_command(command, self.client)
        self.post_message(CommandFinished(text, outcome.text, ok=outcome.ok))

    def on_command_finished(self, message: CommandFinished) -> None:
        self.query_one(ResultPane).show_result(message.command, message.text, ok=message.ok)

    def prefill_command(self, text: str) -> None:
        bar = self.query_one(CommandBar)
        bar.value = text
        bar.cursor_position = len(text)
        bar.focus()

    # -- the request log -----------------------------------------------------

    @on(Input.Changed, "#request-filter")
    def change_filter(self, event: Input.Changed) -> None:
        log_widget = self.query_one(RequestLog)
        log_widget.set_filter(event.value)
        log_widget.show_all(self.model.requests)

    @on(Input.Submitted, "#request-filter")
    def close_filter(self) -> None:
        self.query_one(RequestLog).action_close_filter()

    # -- actions ---------------------------------------------------------------

    def action_focus_command(self) -> None:
        self.query_one(CommandBar).focus()

    def action_filter_requests(self) -> None:
        self.query_one(RequestLog).open_filter()

    def action_toggle_pause(self) -> None:
        log_widget = self.query_one(RequestLog)
        if not log_widget.toggle_pause():
            log_widget.show_all(self.model.requests)

    def action_show_help(self) -> None:
        self.push_screen(HelpScreen(self.binding_groups()))

    def binding_groups(self) -> list[tuple[str, list[Binding]]]:
        """Return every binding of the UI, grouped by where it applies."""
        palette = Binding(self.COMMAND_PALETTE_BINDING, "command_palette", "Command palette: the same commands")
        quit_binding = Binding("ctrl+q", "quit", "Quit")
        return [
            ("Everywhere", [*self.BINDINGS, quit_binding, palette, *Screen.BINDINGS]),
            ("Pools table", PoolsTable.BINDINGS),
            ("Command bar", CommandBar.BINDINGS),
            ("Request filter", RequestLog.BINDINGS),
            ("Function workers", FunctionScreen.BINDINGS),
        ]

    @on(PoolsTable.RowSelected, "#pools")
    def open_function(self, event: PoolsTable.RowSelected) -> None:
        function = event.row_key.value
        if function is None:
            return
        screen = FunctionScreen(function)
        self.push_screen(screen)
        screen.call_after_refresh(self.refresh_views)
        self.call_after_refresh(self.refresh_status)

    # -- failures ----------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Report any worker that failed: the bus listener, the launcher or a command."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        log.error("%s failed", event.worker.name, exc_info=error)
        self.notify(f"{event.worker.name} failed: {error}", title="Error", severity="error", timeout=10)
        if event.worker.group == "bus":
            self.post_message(EmbeddedCloudChanged(f"{error}", failed=True))


def _log_to_file(path: Path) -> None:
    """Send log records to a file, because the terminal belongs to the UI."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def run_tui(*, broker_url: str, namespace: str) -> int:
    """Run the UI until the user quits; stop the embedded cloud when this call started one."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print(
            "minicloud: the terminal UI needs a terminal; from a script, use minicloud up, "
            "minicloud invoke or the Python client instead",
            file=sys.stderr,
        )
        return 2
    _log_to_file(default_log_path().with_name("tui.log"))
    launcher = EmbeddedCloud(broker_url, namespace)
    app = MinicloudApp(broker_url=broker_url, namespace=namespace, launcher=launcher, handle_signals=True)
    try:
        app.run()
    finally:
        if launcher.started:
            print(f"minicloud: stopping the embedded cloud (pid {launcher.process.pid})", file=sys.stderr)
            launcher.stop()
    return app.return_code or 0
