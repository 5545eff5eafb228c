"""Messages that the bus listener, the launcher and the command runner post to the app."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class BrokerStateChanged(Message):
    """The bus connection changed: "connecting", "connected", "reconnecting" or "stopped"."""

    def __init__(self, state: str, url: str) -> None:
        super().__init__()
        self.state = state
        self.url = url


class PoolsUpdated(Message):
    """The newest retained pools state arrived."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        self.state = state


class EnergyUpdated(Message):
    """The newest retained energy state arrived."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        self.state = state


class InvocationsFinished(Message):
    """A batch of invocation events arrived; `dropped` counts events lost to the buffer bound."""

    def __init__(self, events: list[dict[str, Any]], dropped: int) -> None:
        super().__init__()
        self.events = events
        self.dropped = dropped


class EmbeddedCloudChanged(Message):
    """The embedded cloud launch progressed; `text` describes the step for the status bar."""

    def __init__(self, text: str, *, failed: bool = False) -> None:
        super().__init__()
        self.text = text
        self.failed = failed


class CommandFinished(Message):
    """A command from the command bar or the palette finished; `text` is markup for the result pane."""

    def __init__(self, command: str, text: str, *, ok: bool) -> None:
        super().__init__()
        self.command = command
        self.text = text
        self.ok = ok
