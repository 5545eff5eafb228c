"""Fixtures of the UI tests: UTC clock times and a fake CloudClient."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tui_fixtures import FakeCloudClient


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Show clock times in UTC, so text with times does not depend on the machine's time zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def fake_client() -> FakeCloudClient:
    return FakeCloudClient()
