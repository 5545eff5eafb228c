"""The app driven by Pilot, with a fake CloudClient and data posted as listener messages."""

from __future__ import annotations

from textual.pilot import Pilot
from textual.widgets import RichLog, Static

from tui.app import MinicloudApp
from tui.messages import BrokerStateChanged, EnergyUpdated, InvocationsFinished, PoolsUpdated
from tui.screens.function_screen import FunctionScreen
from tui.screens.help_screen import HelpScreen
from tui.widgets.command_bar import CommandBar
from tui.widgets.pools_table import PoolsTable
from tui.widgets.request_log import RequestLog
from tui.widgets.workers_table import WorkersTable
from tui_fixtures import FakeCloudClient, energy_state, event, fixed_clock, pools_state, sample_events

SIZE = (160, 50)


def make_app(client: FakeCloudClient) -> MinicloudApp:
    return MinicloudApp(broker_url="mqtt://127.0.0.1:1", client=client, listen=False, clock=fixed_clock)


async def feed(app: MinicloudApp, pilot: Pilot, *, events: list | None = None) -> None:
    app.post_message(BrokerStateChanged("connected", "mqtt://127.0.0.1:1"))
    app.post_message(PoolsUpdated(pools_state()))
    app.post_message(EnergyUpdated(energy_state()))
    app.post_message(InvocationsFinished(sample_events() if events is None else events, 0))
    await pilot.pause()


def text_of(app: MinicloudApp, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


def log_lines(app: MinicloudApp) -> list[str]:
    return [strip.text for strip in app.query_one("#request-lines", RichLog).lines]


async def type_command(pilot: Pilot, text: str) -> None:
    await pilot.press("colon")
    for character in text:
        await pilot.press(character)
    await pilot.press("enter")
    await pilot.pause()


async def test_invoke_from_command_bar(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await feed(app, pilot)
        await type_command(pilot, 'invoke hello {"name": "x"}')
        await app.workers.wait_for_complete()
        await pilot.pause()

        assert fake_client.requests == [("invoke", ("hello", {"name": "x"}))]
        result = text_of(app, "#result")
        assert "COLD" in result
        assert "hello, x!" in result
        assert "init 1.10 ms" in result
        assert "energy 0.85 mJ" in result

        await type_command(pilot, 'invoke hello {"name": "y"}')
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "warm" in text_of(app, "#result")


async def test_function_error_shown_red(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await type_command(pilot, "invoke broken")
        await app.workers.wait_for_complete()
        await pilot.pause()
        result = text_of(app, "#result")
        assert "ValueError: bad input" in result


async def test_unknown_function_error_inline(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await feed(app, pilot)
        await type_command(pilot, "invoke nope")
        assert fake_client.requests == []
        assert "unknown function 'nope'" in text_of(app, "#command-error")


async def test_invalid_json_error_inline(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await feed(app, pilot)
        await type_command(pilot, 'invoke hello {"a": 1,}')
        assert fake_client.requests == []
        assert "invalid JSON at line 1, column 9" in text_of(app, "#command-error")


async def test_unknown_command_error_inline(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await type_command(pilot, "launch hello")
        assert "unknown command 'launch'" in text_of(app, "#command-error")


async def test_error_cleared_when_typing(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await type_command(pilot, "launch")
        await pilot.press("e")
        await pilot.pause()
        assert text_of(app, "#command-error") == ""


async def test_scale_logs_energy_published(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await feed(app, pilot)
        await type_command(pilot, "scale hello --min 1 --max 4")
        await app.workers.wait_for_complete()
        await type_command(pilot, "logs hello")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "greeting x" in text_of(app, "#result")
        await type_command(pilot, "energy")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert fake_client.requests == [("scale", ("hello", 1, 4)), ("logs", "hello"), ("energy", None)]
        assert "always-on" in text_of(app, "#result")


async def test_history_up_down(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await type_command(pilot, "help")
        await type_command(pilot, "energy")
        bar = app.query_one(CommandBar)
        # A command that runs gives the keys back to the views, so q would quit.
        assert not bar.has_focus
        await pilot.press("colon")
        await pilot.press("up")
        assert bar.value == "energy"
        await pilot.press("up")
        assert bar.value == "help"
        await pilot.press("down")
        assert bar.value == "energy"
        await pilot.press("down")
        assert bar.value == ""


async def test_tab_completes_function_name(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await feed(app, pilot)
        await pilot.press("colon", "i", "n")
        await pilot.pause()
        await pilot.press("tab")
        bar = app.query_one(CommandBar)
        assert bar.value == "invoke"
        await pilot.press("space", "s")
        await pilot.pause()
        await pilot.press("tab")
        assert bar.value == "invoke sleep-io"


async def test_pools_cursor_stays_on_update(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await feed(app, pilot)
        table = app.query_one(PoolsTable)
        await pilot.press("down")
        assert table.selected_function == "hello"

        app.post_message(PoolsUpdated(pools_state(queued=5)))
        await pilot.pause()

        assert table.selected_function == "hello"
        assert [row.key.value for row in table.ordered_rows] == ["cpu-burn", "hello", "sleep-io"]
        assert table.get_cell("hello", "queued") == "5"


async def test_request_log_shows_cold_warm_errors(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await feed(app, pilot)
        lines = log_lines(app)
        assert len(lines) == 6
        assert "COLD" in lines[0]
        assert "warm" in lines[1]
        assert "ERROR ValueError" in lines[3]
        assert "ERROR Throttled" in lines[5]


async def test_filter_request_log(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await feed(app, pilot)
        await pilot.press("slash", "c", "o", "l", "d", "enter")
        await pilot.pause()
        lines = log_lines(app)
        assert len(lines) == 2
        assert all("COLD" in line for line in lines)

        # Esc clears the filter again.
        await pilot.press("slash", "escape")
        await pilot.pause()
        assert app.query_one(RequestLog).filter_text == ""
        assert len(log_lines(app)) == 6


async def test_pause_holds_tail(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await feed(app, pilot)
        await pilot.press("p")
        app.post_message(InvocationsFinished([event("00000007-late")], 0))
        await pilot.pause()
        assert app.query_one(RequestLog).paused
        assert len(log_lines(app)) == 6

        await pilot.press("p")
        await pilot.pause()
        assert len(log_lines(app)) == 7


async def test_enter_opens_workers_escape_returns(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await feed(app, pilot)
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, FunctionScreen)
        assert app.screen.function == "hello"
        workers = app.screen.query_one(WorkersTable)
        assert workers.row_count == 2
        assert workers.get_cell("hello-1-1", "age") == "1m05s"

        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, FunctionScreen)
        assert app.query_one(PoolsTable).selected_function == "hello"


async def test_question_mark_lists_bindings(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = text_of(app.screen, "#help-text")
        for description in ("Quit", "Command", "Filter", "Pause log", "Workers", "Previous command", "Command palette"):
            assert description in text
        assert "invoke NAME [JSON]" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_every_binding_has_description(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE):
        for _, bindings in app.binding_groups():
            for binding in bindings:
                assert binding.description, binding.key


async def test_watts_summary_and_status(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await feed(app, pilot)
        summary = text_of(app, "#watts-summary")
        assert "0.250 W" in summary
        assert "12.500 J" in summary
        assert "310.000 J" in summary
        assert "connected" in text_of(app, "#broker-status")

        app.post_message(BrokerStateChanged("reconnecting", "mqtt://127.0.0.1:1"))
        await pilot.pause()
        assert "reconnecting" in text_of(app, "#broker-status")
        assert fake_client.closed


async def test_palette_offers_commands(fake_client: FakeCloudClient) -> None:
    app = make_app(fake_client)
    async with app.run_test(size=SIZE) as pilot:
        await feed(app, pilot)
        from tui.palette import MinicloudCommands

        provider = MinicloudCommands(app.screen)
        hits = [hit.text async for hit in provider.search("invoke hel")]
        assert "invoke hello" in hits
        entries = [text for text, _, _ in provider._entries()]
        for expected in ("energy", "help", "deploy DIR", "logs hello", "scale cpu-burn"):
            assert expected in entries
