"""Command palette entries (Ctrl+P) for the command bar's commands and each function."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from tui.app import MinicloudApp


class MinicloudCommands(Provider):
    """Offers invoke, logs and scale per function, plus deploy, energy and help.

    Commands that need more input put their text in the command bar;
    the others run at once.
    """

    def _entries(self) -> list[tuple[str, str, Callable[[], object]]]:
        app: MinicloudApp = self.app  # type: ignore[assignment]
        entries: list[tuple[str, str, Callable[[], object]]] = [
            ("energy", "Show the energy report", lambda: app.run_command_text("energy")),
            ("help", "List the commands of the command bar", lambda: app.run_command_text("help")),
            ("deploy DIR", "Deploy a function folder: type its path in the command bar", lambda: app.prefill_command("deploy ")),
        ]
        for name in app.model.function_names:
            entries += [
                (f"invoke {name}", f"Invoke {name} with an event typed in the command bar", _prefill(app, f"invoke {name} {{}}")),
                (f"logs {name}", f"Show the recent log lines of {name}", _run(app, f"logs {name}")),
                (f"scale {name}", f"Set the warm floor and the ceiling of {name} in the command bar", _prefill(app, f"scale {name} --min 0 --max 10")),
            ]
        return entries

    async def discover(self) -> Hits:
        for text, help_text, callback in self._entries():
            yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, callback in self._entries():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, text=text, help=help_text)


def _prefill(app: MinicloudApp, text: str) -> Callable[[], object]:
    return lambda: app.prefill_command(text)


def _run(app: MinicloudApp, text: str) -> Callable[[], object]:
    return lambda: app.run_command_text(text)
