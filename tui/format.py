"""Text forms of numbers and times shared by the widgets."""

from __future__ import annotations

import time

MISSING = "-"


def clock_time(ts: float) -> str:
    """Return the local wall-clock time of a Unix timestamp as HH:MM:SS."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def milliseconds(value: float | None) -> str:
    if value is None:
        return MISSING
    if value >= 100:
        return f"{value:.0f} ms"
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def joules(value: float | None) -> str:
    if value is None:
        return MISSING
    if value == 0:
        return "0 J"
    if value < 0.01:
        return f"{value * 1000:.2f} mJ"
    return f"{value:.3f} J"


def share(value: float | None) -> str:
    return MISSING if value is None else f"{value * 100:.0f}%"


def age(seconds: float) -> str:
    """Return a duration in seconds as 42s, 3m05s or 2h07m."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def escape(text: str) -> str:
    """Escape every "[" so Textual markup shows the text as it is.

    textual.markup.escape (Textual 8.2) leaves "[JSON]" alone because it does
    not look like a style tag, yet the markup parser still drops it.
    NOTE: a backslash right before "[" in `text` is still read as an escape.
    """
    return text.replace("[", "\\[")
