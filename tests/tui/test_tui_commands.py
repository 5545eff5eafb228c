"""Parsing and completion of the command bar's commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui.commands import CommandError, Deploy, Energy, Help, Invoke, Logs, Scale, complete, parse_command

FUNCTIONS = ["cpu-burn", "hello", "sleep-io"]


def test_invoke_with_json_event() -> None:
    assert parse_command('invoke hello {"name": "x y"}', FUNCTIONS) == Invoke("hello", {"name": "x y"})


def test_invoke_without_event_sends_empty_object() -> None:
    assert parse_command("invoke hello", FUNCTIONS) == Invoke("hello", {})


def test_leading_colon_is_ignored() -> None:
    assert parse_command(":invoke hello", FUNCTIONS) == Invoke("hello", {})


def test_invalid_json_names_line_and_column() -> None:
    with pytest.raises(CommandError, match=r"invalid JSON at line 1, column 9: Expecting ':' delimiter"):
        parse_command('invoke hello {"name" "x"}', FUNCTIONS)


def test_nan_is_invalid_json() -> None:
    with pytest.raises(CommandError, match="invalid JSON: NaN is not valid JSON"):
        parse_command("invoke hello NaN", FUNCTIONS)


def test_unknown_command_lists_commands() -> None:
    with pytest.raises(CommandError, match=r"unknown command 'invok'; commands: invoke, deploy, scale, logs, energy, help"):
        parse_command("invok hello", FUNCTIONS)


def test_unknown_function_lists_functions() -> None:
    with pytest.raises(CommandError, match=r"unknown function 'hallo'; functions: cpu-burn, hello, sleep-io"):
        parse_command("invoke hallo", FUNCTIONS)


def test_any_function_accepted_before_pools_known() -> None:
    assert parse_command("invoke hallo", []) == Invoke("hallo", {})


def test_empty_command_rejected() -> None:
    with pytest.raises(CommandError, match="empty command"):
        parse_command("   ", FUNCTIONS)


def test_scale_options() -> None:
    assert parse_command("scale hello --min 2 --max 5", FUNCTIONS) == Scale("hello", 2, 5)
    assert parse_command("scale hello --max 0", FUNCTIONS) == Scale("hello", None, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scale hello", "give --min N, --max M or both"),
        ("scale hello --min", "missing value after --min"),
        ("scale hello --min two", "invalid value 'two' for --min"),
        ("scale hello --min -1", "invalid value -1 for --min"),
        ("scale hello --warm 1", "unknown option '--warm'"),
        ("scale", "missing function name"),
    ],
)
def test_scale_errors(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_command(text, FUNCTIONS)


def test_deploy_resolves_directory(tmp_path: Path) -> None:
    assert parse_command(f"deploy {tmp_path}", FUNCTIONS) == Deploy(str(tmp_path.resolve()))


def test_deploy_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="directory not found"):
        parse_command(f"deploy {tmp_path / 'nope'}", FUNCTIONS)


def test_logs_energy_help() -> None:
    assert parse_command("logs hello", FUNCTIONS) == Logs("hello")
    assert parse_command("energy", FUNCTIONS) == Energy()
    assert parse_command("help", FUNCTIONS) == Help()
    with pytest.raises(CommandError, match="energy takes no arguments"):
        parse_command("energy now", FUNCTIONS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("inv", "invoke"),
        ("e", "energy"),
        ("invoke", None),
        ("invoke h", "invoke hello"),
        ("logs s", "logs sleep-io"),
        ("scale c", "scale cpu-burn"),
        ("deploy h", None),
        ("invoke hello {", None),
        ("", None),
    ],
)
def test_completion(value: str, expected: str | None) -> None:
    assert complete(value, FUNCTIONS) == expected
