"""Starting, finding and stopping the embedded cloud on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tui.embedded import EmbeddedCloud, EmbeddedCloudError, broker_answers
from tui_fixtures import free_port


@pytest.mark.timeout(30)
async def test_nothing_answers_on_free_port() -> None:
    assert not await broker_answers(f"mqtt://127.0.0.1:{free_port()}", timeout=2.0)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_embedded_cloud_starts_and_stops(tmp_path: Path) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    cloud = EmbeddedCloud(url, "minicloud", log_path=tmp_path / "embedded.log")
    steps: list[str] = []
    try:
        await cloud.ensure(steps.append)
        assert cloud.started
        pid = cloud.process.pid
        assert await broker_answers(url)
        assert any("starting an embedded cloud" in step for step in steps)
    finally:
        status = cloud.stop()
    assert status == 0
    assert not cloud.started
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "minicloud ready" in (tmp_path / "embedded.log").read_text()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_second_launch_attaches(tmp_path: Path) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    first = EmbeddedCloud(url, "minicloud", log_path=tmp_path / "first.log")
    second = EmbeddedCloud(url, "minicloud", log_path=tmp_path / "second.log")
    try:
        await first.ensure(lambda step: None)
        await second.ensure(lambda step: None)
        assert first.started
        assert not second.started
    finally:
        first.stop()
        second.stop()


@pytest.mark.timeout(60)
async def test_child_exit_reported(tmp_path: Path) -> None:
    # A listening socket that never speaks MQTT: the probe times out and the child cannot bind the port.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        url = f"mqtt://127.0.0.1:{blocker.getsockname()[1]}"
        cloud = EmbeddedCloud(url, "minicloud", log_path=tmp_path / "embedded.log")
        try:
            with pytest.raises(EmbeddedCloudError, match=r"exited with status .*embedded\.log"):
                await cloud.ensure(lambda step: None)
        finally:
            cloud.stop()


@pytest.mark.timeout(30)
async def test_no_open_cloud_for_a_secured_url(tmp_path: Path) -> None:
    # A URL with a user name or TLS names a secured cloud, which an embedded one is not.
    for url in (f"mqtt://bob@127.0.0.1:{free_port()}", f"mqtts://127.0.0.1:{free_port()}"):
        cloud = EmbeddedCloud(url, "minicloud", log_path=tmp_path / "embedded.log")
        await cloud.ensure(lambda step: None)
        assert not cloud.started
        assert "waiting for it" in cloud.waiting_note


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_refused_login_is_reported(tmp_path: Path) -> None:
    from minicloud.passwords import set_password

    passwords = tmp_path / "passwords"
    set_password(passwords, "alice", "right")
    port = free_port()
    secured = subprocess.Popen(
        [sys.executable, "-m", "minicloud", "up", "--port", str(port), "--auth", str(passwords), "--functions", str(tmp_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in secured.stderr:
            if line.startswith("minicloud ready"):
                break
        # An anonymous URL on this host would start an embedded cloud, but a broker accepts connections there.
        cloud = EmbeddedCloud(f"mqtt://127.0.0.1:{port}", "minicloud", log_path=tmp_path / "embedded.log")
        with pytest.raises(EmbeddedCloudError, match="refused the user name or password"):
            await cloud.ensure(lambda step: None)
        assert not cloud.started
    finally:
        secured.terminate()
        secured.wait(30)
