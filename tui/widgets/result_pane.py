"""The outcome of the last command: a result with its report, or an error in red."""

from __future__ import annotations

from tui.format import escape
from textual.widgets import Static


class ResultPane(Static):
    """Shows one command's outcome as markup."""

    def show_result(self, command: str, text: str, *, ok: bool) -> None:
        style = "green" if ok else "red"
        self.update(f"[b {style}]{escape(command)}[/]\n{text}")
