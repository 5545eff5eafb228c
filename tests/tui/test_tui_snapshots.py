"""Screenshots of the main screen, the workers drill-down and the help screen, with fixed data and clock."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot

from tui.app import MinicloudApp
from tui.messages import BrokerStateChanged, EnergyUpdated, InvocationsFinished, PoolsUpdated
from tui_fixtures import FakeCloudClient, energy_state, fixed_clock, pools_state, sample_events

SIZE = (160, 50)
WATTS = [0.05, 0.06, 0.05, 0.9, 1.6, 1.5, 0.3, 0.1, 0.25]


def make_app() -> MinicloudApp:
    return MinicloudApp(broker_url="mqtt://127.0.0.1:1", client=FakeCloudClient(), listen=False, clock=fixed_clock)


async def feed(pilot: Pilot) -> None:
    app = pilot.app
    app.post_message(BrokerStateChanged("connected", "mqtt://127.0.0.1:1"))
    app.post_message(PoolsUpdated(pools_state()))
    for watts in WATTS:
        app.post_message(EnergyUpdated(energy_state(watts=watts)))
    app.post_message(InvocationsFinished(sample_events(), 0))
    await pilot.pause()


@pytest.mark.usefixtures("utc")
def test_main_screen_snapshot(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=feed)


@pytest.mark.usefixtures("utc")
def test_workers_screen_snapshot(snap_compare) -> None:
    async def open_hello(pilot: Pilot) -> None:
        await feed(pilot)
        await pilot.press("down", "enter")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=open_hello)


@pytest.mark.usefixtures("utc")
def test_help_screen_snapshot(snap_compare) -> None:
    async def open_help(pilot: Pilot) -> None:
        await feed(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=open_help)
