"""Parse the command bar's text into a typed command, or raise CommandError naming the problem."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minicloud import protocol


@dataclass(frozen=True)
class CommandSpec:
    """One command of the command bar, with its usage and help line."""

    name: str
    usage: str
    help: str


COMMANDS = (
    CommandSpec("invoke", "invoke NAME [JSON]", "invoke a function with a JSON event (default {})"),
    CommandSpec("deploy", "deploy DIR", "deploy or update the function folder DIR"),
    CommandSpec("scale", "scale NAME [--min N] [--max M]", "set the workers kept warm and the most workers at once"),
    CommandSpec("logs", "logs NAME", "show the function's recent stdout and stderr lines"),
    CommandSpec("energy", "energy", "show the energy report"),
    CommandSpec("help", "help", "list the commands"),
)
COMMAND_NAMES = tuple(spec.name for spec in COMMANDS)
# Commands whose first argument is a function name.
FUNCTION_COMMANDS = ("invoke", "scale", "logs")


class CommandError(ValueError):
    """A command line that cannot run; the message names the problem and the fix."""


@dataclass(frozen=True)
class Invoke:
    function: str
    event: Any


@dataclass(frozen=True)
class Deploy:
    directory: str


@dataclass(frozen=True)
class Scale:
    function: str
    min_warm: int | None
    max_concurrency: int | None


@dataclass(frozen=True)
class Logs:
    function: str


@dataclass(frozen=True)
class Energy:
    pass


@dataclass(frozen=True)
class Help:
    pass


Command = Invoke | Deploy | Scale | Logs | Energy | Help


def parse_command(text: str, functions: Collection[str]) -> Command:
    """Parse one command line.

    `functions` are the known function names; an empty collection means the
    names are not known yet, and any name is accepted.
    """
    # A leading ":" is the key that opened the command bar, typed once more.
    words = text.strip().removeprefix(":").split(maxsplit=1)
    if not words:
        raise CommandError("empty command; type help for the list of commands")
    name = words[0]
    rest = words[1] if len(words) > 1 else ""
    if name not in COMMAND_NAMES:
        raise CommandError(f"unknown command {name!r}; commands: {', '.join(COMMAND_NAMES)}")
    parser = _PARSERS[name]
    return parser(rest, functions)


def _parse_invoke(rest: str, functions: Collection[str]) -> Invoke:
    parts = rest.split(maxsplit=1)
    if not parts:
        raise CommandError("missing function name; usage: invoke NAME [JSON]")
    function = _check_function(parts[0], functions)
    event_text = parts[1] if len(parts) > 1 else "{}"
    return Invoke(function, parse_event(event_text))


def parse_event(text: str) -> Any:
    """Decode an event as JSON; raise CommandError with the line and column of a syntax error."""
    try:
        return protocol.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except ValueError as exc:
        raise CommandError(f"invalid JSON: {exc}") from exc


def _parse_deploy(rest: str, functions: Collection[str]) -> Deploy:
    directory = rest.strip()
    if not directory:
        raise CommandError("missing directory; usage: deploy DIR")
    path = Path(directory).expanduser().resolve()
    if not path.is_dir():
        raise CommandError(f"directory not found: {path}")
    return Deploy(str(path))


def _parse_scale(rest: str, functions: Collection[str]) -> Scale:
    words = rest.split()
    if not words:
        raise CommandError("missing function name; usage: scale NAME [--min N] [--max M]")
    function = _check_function(words[0], functions)
    options: dict[str, int] = {}
    arguments = words[1:]
    while arguments:
        option = arguments.pop(0)
        if option not in ("--min", "--max"):
            raise CommandError(f"unknown option {option!r}; usage: scale NAME [--min N] [--max M]")
        if not arguments:
            raise CommandError(f"missing value after {option}")
        options[option] = _parse_count(option, arguments.pop(0))
    if not options:
        raise CommandError("give --min N, --max M or both")
    return Scale(function, options.get("--min"), options.get("--max"))


def _parse_count(option: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise CommandError(f"invalid value {text!r} for {option}: expected a whole number") from None
    if value < 0:
        raise CommandError(f"invalid value {value} for {option}: expected 0 or more")
    return value


def _parse_logs(rest: str, functions: Collection[str]) -> Logs:
    words = rest.split()
    if len(words) != 1:
        raise CommandError("usage: logs NAME")
    return Logs(_check_function(words[0], functions))


def _parse_energy(rest: str, functions: Collection[str]) -> Energy:
    if rest.strip():
        raise CommandError("energy takes no arguments")
    return Energy()


def _parse_help(rest: str, functions: Collection[str]) -> Help:
    return Help()


def _check_function(name: str, functions: Collection[str]) -> str:
    if functions and name not in functions:
        raise CommandError(f"unknown function {name!r}; functions: {', '.join(sorted(functions))}")
    return name


_PARSERS = {
    "invoke": _parse_invoke,
    "deploy": _parse_deploy,
    "scale": _parse_scale,
    "logs": _parse_logs,
    "energy": _parse_energy,
    "help": _parse_help,
}


def complete(value: str, functions: Collection[str]) -> str | None:
    """Return the completed command line for a prefix, or None when nothing fits.

    The first word completes to a command name, and the second word of
    invoke, scale and logs completes to a function name.
    """
    if " " not in value:
        return _first_match(value, COMMAND_NAMES)
    command, _, rest = value.partition(" ")
    if command not in FUNCTION_COMMANDS or " " in rest:
        return None
    function = _first_match(rest, sorted(functions))
    return f"{command} {function}" if function else None


def _first_match(prefix: str, candidates: Collection[str]) -> str | None:
    if not prefix:
        return None
    for candidate in candidates:
        if candidate.startswith(prefix) and candidate != prefix:
            return candidate
    return None
