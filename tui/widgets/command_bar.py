"""The command line: completion of commands and function names, and history with Up and Down."""

from __future__ import annotations

from collections.abc import Callable, Collection

from textual import events
from textual.binding import Binding
from textual.suggester import Suggester
from textual.widgets import Input

from tui.commands import complete

HISTORY_SIZE = 200


class CommandSuggester(Suggester):
    """Suggests the rest of a command name or, after invoke, scale and logs, a function name."""

    def __init__(self, functions: Callable[[], Collection[str]]) -> None:
        # No cache: the function names change while the UI runs.
        super().__init__(use_cache=False, case_sensitive=True)
        self._functions = functions

    async def get_suggestion(self, value: str) -> str | None:
        return complete(value, self._functions())


class CommandBar(Input):
    """An Input that remembers submitted commands; Right or Tab accepts a suggestion."""

    BINDINGS = [
        Binding("up", "history_previous", "Previous command", show=False),
        Binding("down", "history_next", "Next command", show=False),
        Binding("tab", "accept_suggestion", "Complete", show=False),
        Binding("escape", "leave", "Leave command bar", show=False),
    ]

    def __init__(self, functions: Callable[[], Collection[str]], **kwargs: object) -> None:
        super().__init__(
            placeholder=": invoke NAME [JSON] | deploy DIR | scale NAME --min N --max M | logs NAME | energy | help",
            suggester=CommandSuggester(functions),
            **kwargs,  # type: ignore[arg-type]
        )
        self.history: list[str] = []
        self._position = 0

    async def _on_key(self, event: events.Key) -> None:
        # ":" opens the command bar, so typed again into an empty bar it is not part of the command.
        if event.character == ":" and not self.value:
            event.stop()
            event.prevent_default()
            return
        await super()._on_key(event)

    def remember(self, command: str) -> None:
        command = command.removeprefix(":").strip()
        if command and (not self.history or self.history[-1] != command):
            self.history.append(command)
            del self.history[:-HISTORY_SIZE]
        self._position = len(self.history)

    def action_history_previous(self) -> None:
        if self._position > 0:
            self._position -= 1
            self._show(self.history[self._position])

    def action_history_next(self) -> None:
        if self._position < len(self.history):
            self._position += 1
            self._show(self.history[self._position] if self._position < len(self.history) else "")

    def action_accept_suggestion(self) -> None:
        if self._suggestion:
            self.value = self._suggestion
            self.cursor_position = len(self.value)
        else:
            self.screen.focus_next()

    def action_leave(self) -> None:
        self.screen.focus_next()

    def _show(self, text: str) -> None:
        self.value = text
        self.cursor_position = len(text)
