"""A list of every key binding of the UI, and the commands of the command bar."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tui.format import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.commands import COMMANDS


def bindings_text(groups: Iterable[tuple[str, Iterable[Binding]]], key_display: Callable[[Binding], str]) -> str:
    """Return markup with one line per binding, grouped by where the binding applies."""
    lines: list[str] = []
    for title, bindings in groups:
        lines.append(f"[b]{escape(title)}[/]")
        for binding in bindings:
            keys = ", ".join(key_display(key) for key in Binding.make_bindings([binding]))
            lines.append(f"  [b cyan]{escape(f'{keys:<16}')}[/] {escape(binding.description)}")
        lines.append("")
    lines.append("[b]Command bar commands[/]")
    for spec in COMMANDS:
        lines.append(f"  [b cyan]{escape(f'{spec.usage:<32}')}[/] {escape(spec.help)}")
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    """Key bindings and commands; Esc, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close help")]

    def __init__(self, groups: list[tuple[str, list[Binding]]]) -> None:
        super().__init__()
        self._groups = groups

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            groups = [*self._groups, ("Help screen", self.BINDINGS)]
            yield Static(bindings_text(groups, self.app.get_key_display), id="help-text")

    def on_mount(self) -> None:
        self.query_one("#help-body").border_title = "Keys"
        self.query_one("#help-body").border_subtitle = "Esc closes"
