"""The real UI against a real cloud: invoke hello from the command bar, twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import RichLog, Static

from tui.app import MinicloudApp
from tui.widgets.pools_table import PoolsTable
from tui_fixtures import free_port

READY_TIMEOUT_S = 30.0


@pytest.fixture
def cloud_url(tmp_path: Path) -> Iterator[str]:
    """Run `minicloud up` on a free port until the test ends; yield its broker URL."""
    port = free_port()
    log_path = tmp_path / "cloud.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "minicloud", "up", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "minicloud ready" not in log_path.read_text(errors="replace"):
            assert process.poll() is None, f"the cloud exited early:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"no 'minicloud ready' within {READY_TIMEOUT_S} s:\n{log_path.read_text()}"
            time.sleep(0.1)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(35)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


async def wait_until(pilot: Pilot, condition: Callable[[], bool], description: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {description}"
        await pilot.pause(0.1)


async def type_command(pilot: Pilot, text: str) -> None:
    await pilot.press("colon")
    for character in text:
        await pilot.press(character)
    await pilot.press("enter")


def workers_of(table: PoolsTable, function: str) -> int:
    return sum(int(table.get_cell(function, state)) for state in ("starting", "idle", "busy", "draining"))


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_invoke_hello_cold_then_warm(cloud_url: str) -> None:
    app = MinicloudApp(broker_url=cloud_url)
    async with app.run_test(size=(160, 50)) as pilot:
        table = app.query_one(PoolsTable)
        result = app.query_one("#result", Static)
        request_lines = app.query_one("#request-lines", RichLog)
        await wait_until(pilot, lambda: "hello" in app.model.function_names and table.row_count == len(app.model.function_names), "the pools state")
        assert "connected" in str(app.query_one("#broker-status", Static).render())

        await type_command(pilot, 'invoke hello {"name":"x"}')
        await wait_until(pilot, lambda: "hello, x!" in str(result.render()), "the first result")
        assert "COLD" in str(result.render())
        await wait_until(pilot, lambda: any("COLD" in line.text for line in request_lines.lines), "a cold start in the request log")
        await wait_until(pilot, lambda: workers_of(table, "hello") == 1, "one hello worker in the pools table")

        await type_command(pilot, 'invoke hello {"name":"y"}')
        await wait_until(pilot, lambda: "hello, y!" in str(result.render()), "the second result")
        assert "warm" in str(result.render())
        await wait_until(pilot, lambda: any("warm" in line.text for line in request_lines.lines), "a warm start in the request log")
        await wait_until(pilot, lambda: table.get_cell("hello", "cold") == "50%", "a cold share of 50%")
        await wait_until(pilot, lambda: len(app.model.watts_history) >= 2, "two energy samples")
