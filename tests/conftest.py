"""Fixtures that run real clouds: `minicloud up` as a child process on a free port."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cloudtest import SAMPLE_FUNCTIONS, CloudProcess, alive, require_mosquitto, running_mosquitto


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Tests marked both_brokers run once per broker: the cloud's embedded one,
    # and a Mosquitto of their own.
    if "start_cloud" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_brokers"):
        metafunc.parametrize("cloud_broker", ["embedded", "mosquitto"], indirect=True)


@pytest.fixture
def cloud_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """The URL of a Mosquitto for start_cloud to use, or None for the cloud's embedded broker."""
    if getattr(request, "param", "embedded") == "embedded":
        yield None
        return
    require_mosquitto()
    folder = tmp_path_factory.mktemp("mosquitto")
    with running_mosquitto(folder / "mosquitto.conf", "allow_anonymous true\n") as port:
        yield f"mqtt://127.0.0.1:{port}"


@pytest.fixture
def start_cloud(cloud_broker: str | None) -> Iterator[Any]:
    """Start clouds on free ports; every one is stopped, and its processes checked, at the end."""
    clouds: list[CloudProcess] = []
    seen: dict[int, psutil.Process] = {}

    def start(
        *function_dirs: Path,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        broker_url: str | None = None,
    ) -> CloudProcess:
        cloud = CloudProcess(list(function_dirs) or [SAMPLE_FUNCTIONS], extra_args, env, broker_url or cloud_broker)
        clouds.append(cloud)
        return cloud

    def remember_descendants() -> None:
        for cloud in clouds:
            try:
                for process in psutil.Process(cloud.pid).children(recursive=True):
                    seen[process.pid] = process
            except psutil.NoSuchProcess:
                pass

    start.remember_descendants = remember_descendants  # type: ignore[attr-defined]
    yield start

    remember_descendants()
    for cloud in clouds:
        cloud.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(process) for process in seen.values()):
        time.sleep(0.1)
    leftovers = [process for process in seen.values() if alive(process)]
    for process in leftovers:
        process.kill()
    assert not leftovers, f"processes left behind: {[process.pid for process in leftovers]}"
