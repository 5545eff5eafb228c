"""Run parsed commands against a CloudClient and describe the outcome as markup."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tui.format import escape

from minicloud.cli import format_energy, format_log_line
from minicloud.client import InvocationError
from minicloud.errors import BusError
from tui import format
from tui.cloud_client import CloudClient
from tui.commands import COMMANDS, Command, Deploy, Energy, Help, Invoke, Logs, Scale

# Longer results are cut in the result pane; the whole result is in the reply.
MAX_RESULT_CHARS = 2000
LOG_LINES = 50


@dataclass(frozen=True)
class Outcome:
    """The markup for the result pane and whether the command succeeded."""

    text: str
    ok: bool


def report_line(report: dict[str, Any] | None) -> str:
    """Return markup for an invocation report: start kind, times, CPU and energy."""
    if not report:
        return "[dim]no report: the request was rejected before it ran[/]"
    start = report.get("start")
    parts = ["[b black on yellow] COLD [/]" if start == "cold" else "[b green]warm[/]"]
    if start == "cold" and report.get("init_ms") is not None:
        parts.append(f"init {format.milliseconds(report['init_ms'])}")
    parts += [
        f"duration {format.milliseconds(report.get('duration_ms'))}",
        f"queue {format.milliseconds(report.get('queue_ms'))}",
        f"billed {report.get('billed_ms')} ms",
        f"CPU {format.milliseconds(report.get('cpu_ms'))}",
        f"RSS {report.get('max_rss_mb')} MB",
        f"energy {format.joules(report.get('energy_j'))}",
        f"worker {escape(str(report.get('worker_id')))} (pid {report.get('pid')})",
    ]
    return "  ".join(parts)


def _json_text(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"\n... ({len(text) - MAX_RESULT_CHARS} more characters)"
    return escape(text)


def help_text() -> str:
    lines = [f"[b cyan]{escape(f'{spec.usage:<32}')}[/] {escape(spec.help)}" for spec in COMMANDS]
    lines.append("[dim]Tab or Right accepts a completion, Up and Down walk the history, ? lists the keys[/]")
    return "\n".join(lines)


async def run_command(command: Command, client: CloudClient) -> Outcome:
    """Run one command; InvocationError and BusError become a failed Outcome, other errors propagate."""
    try:
        return await _run(command, client)
    except InvocationError as exc:
        error = exc.error
        text = f"[b red]{escape(str(error.get('type')))}[/]: {escape(str(error.get('message')))}"
        if exc.report:
            text += "\n" + report_line(exc.report)
        return Outcome(text, ok=False)
    except BusError as exc:
        return Outcome(f"[b red]Unavailable[/]: {escape(str(exc))}", ok=False)


async def _run(command: Command, client: CloudClient) -> Outcome:
    if isinstance(command, Invoke):
        result = await client.invoke(command.function, command.event)
        return Outcome(f"{report_line(result.report)}\n{_json_text(result.result)}", ok=True)
    if isinstance(command, Deploy):
        reply = await client.deploy(command.directory)
        return Outcome(f"{escape(str(reply.get('function')))} {escape(str(reply.get('status')))} from {escape(command.directory)}", ok=True)
    if isinstance(command, Scale):
        reply = await client.scale(command.function, min_warm=command.min_warm, max_concurrency=command.max_concurrency)
        config = reply.get("config", {})
        return Outcome(f"{escape(command.function)}: min_warm={config.get('min_warm')} max_concurrency={config.get('max_concurrency')}", ok=True)
    if isinstance(command, Logs):
        lines = await client.logs(command.function, limit=LOG_LINES)
        body = "\n".join(escape(format_log_line(line)) for line in lines) or "[dim]no log lines yet[/]"
        return Outcome(body, ok=True)
    if isinstance(command, Energy):
        return Outcome(escape(format_energy(await client.energy())), ok=True)
    if isinstance(command, Help):
        return Outcome(help_text(), ok=True)
    raise TypeError(f"unsupported command {command!r}")
