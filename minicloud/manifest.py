"""Load and validate function folders: `function.toml` plus Python code.

Validation is static. The handler's module is parsed, never imported, so
deploying a function runs none of its code in the controller. The
module-level code runs later, in the worker, as the init phase.
"""

from __future__ import annotations

import ast
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minicloud.errors import ManifestError

MANIFEST_NAME = "function.toml"

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MODULE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

# Lambda's memory range is 128 MB to 10,240 MB, and its timeout at most 900 s.
MEMORY_RANGE_MB = (128, 10240)
MAX_TIMEOUT_S = 900.0
MAX_KEEP_WARM_S = 7 * 24 * 3600.0
MAX_CONCURRENCY = 1000
MAX_QUEUE_SIZE = 100_000


@dataclass(frozen=True)
class FunctionConfig:
    """A validated function: where its code is and how its pool behaves."""

    name: str
    directory: Path
    handler: str = "main.handler"
    memory_mb: int = 128
    timeout_s: float = 3.0
    keep_warm_s: float = 900.0
    max_concurrency: int = 10
    min_warm: int = 0
    queue_size: int = 100
    env: dict[str, str] = field(default_factory=dict)

    @property
    def handler_module(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def handler_function(self) -> str:
        return self.handler.rsplit(".", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        """Return the config as sent in the pools state; env values are left out."""
        body = asdict(self)
        body["directory"] = str(self.directory)
        body["env"] = sorted(self.env)
        return body


# The kind of value each manifest key takes; "whole" is a number with no fraction.
_KEYS: dict[str, str] = {
    "name": "string",
    "handler": "string",
    "memory_mb": "whole",
    "timeout_s": "number",
    "keep_warm_s": "number",
    "max_concurrency": "whole",
    "min_warm": "whole",
    "queue_size": "whole",
    "env": "table",
}

_RANGES: dict[str, tuple[float, float]] = {
    "memory_mb": MEMORY_RANGE_MB,
    "timeout_s": (0.001, MAX_TIMEOUT_S),
    "keep_warm_s": (0.0, MAX_KEEP_WARM_S),
    "max_concurrency": (0, MAX_CONCURRENCY),
    "min_warm": (0, MAX_CONCURRENCY),
    "queue_size": (0, MAX_QUEUE_SIZE),
}


def load_function(directory: str | Path) -> FunctionConfig:
    """Load one function folder; raise ManifestError naming the file, the key and the fix."""
    folder = Path(directory).resolve()
    manifest = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ManifestError(f"{folder}: not a directory; a function is a folder with a {MANIFEST_NAME}")
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: missing; create it with at least handler = \"main.handler\"")

    try:
        raw = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{manifest}: invalid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{manifest}: cannot be read: {exc}") from exc

    values = _validate_keys(manifest, raw)
    values.setdefault("name", folder.name)
    if not NAME_PATTERN.match(values["name"]):
        raise ManifestError(
            f"{manifest}: key 'name': invalid name {values['name']!r}; use 1 to 64 letters, "
            "digits, '-', '_' or '.', starting with a letter or digit"
        )
    config = FunctionConfig(directory=folder, **values)

    if config.min_warm > config.max_concurrency:
        raise ManifestError(
            f"{manifest}: key 'min_warm': {config.min_warm} is more than max_concurrency "
            f"({config.max_concurrency}); lower min_warm or raise max_concurrency"
        )
    _check_handler(manifest, folder, config.handler)
    return config


def load_functions_dir(directory: str | Path) -> tuple[list[FunctionConfig], list[ManifestError]]:
    """Load every function folder below `directory`; a broken one does not stop the others."""
    configs: list[FunctionConfig] = []
    failures: list[ManifestError] = []
    for folder in sorted(Path(directory).iterdir()):
        if not (folder / MANIFEST_NAME).is_file():
            continue
        try:
            configs.append(load_function(folder))
        except ManifestError as exc:
            failures.append(exc)
    return configs, failures


def _validate_keys(manifest: Path, raw: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        kind = _KEYS.get(key)
        if kind is None:
            known = ", ".join(_KEYS)
            raise ManifestError(f"{manifest}: unknown key {key!r}; valid keys are {known}")
        if kind == "string":
            if not isinstance(value, str) or not value:
                raise ManifestError(f"{manifest}: key {key!r}: expected a non-empty string, got {value!r}")
            values[key] = value
        elif kind == "table":
            values[key] = _validate_env(manifest, value)
        else:
            values[key] = _validate_number(manifest, key, value, whole=kind == "whole")
    return values


def _validate_number(manifest: Path, key: str, value: Any, *, whole: bool) -> float | int:
    # bool is a subclass of int in Python, and `true` is no number of workers.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ManifestError(f"{manifest}: key {key!r}: expected a number, got {value!r}")
    if whole:
        if value != int(value):
            raise ManifestError(f"{manifest}: key {key!r}: expected a whole number, got {value!r}")
        value = int(value)
    low, high = _RANGES[key]
    if not low <= value <= high:
        raise ManifestError(f"{manifest}: key {key!r}: {value!r} is out of range; use {low:g} to {high:g}")
    return value if whole else float(value)


def _validate_env(manifest: Path, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ManifestError(f"{manifest}: key 'env': expected a table such as [env] NAME = \"value\"")
    env: dict[str, str] = {}
    for name, text in value.items():
        if not ENV_NAME_PATTERN.match(name):
            raise ManifestError(f"{manifest}: key 'env.{name}': invalid variable name; use letters, digits and '_'")
        if not isinstance(text, str):
            raise ManifestError(
                f"{manifest}: key 'env.{name}': expected a string, got {text!r}; quote the value"
            )
        env[name] = text
    return env


def _check_handler(manifest: Path, folder: Path, handler: str) -> None:
    """Check that the handler's module exists and defines the handler name."""
    module_name, _, function_name = handler.rpartition(".")
    if not module_name or not MODULE_PATTERN.match(module_name) or not function_name.isidentifier():
        raise ManifestError(
            f"{manifest}: key 'handler': invalid value {handler!r}; use module.function, such as \"main.handler\""
        )

    relative = Path(*module_name.split("."))
    candidates = [folder / relative.with_suffix(".py"), folder / relative / "__init__.py"]
    source_file = next((path for path in candidates if path.is_file()), None)
    if source_file is None:
        raise ManifestError(
            f"{manifest}: key 'handler': module {module_name!r} not found; "
            f"expected {candidates[0].relative_to(folder)} in {folder}"
        )

    try:
        tree = ast.parse(source_file.read_bytes(), filename=str(source_file))
    except SyntaxError as exc:
        raise ManifestError(
            f"{manifest}: key 'handler': {source_file.name} line {exc.lineno}: syntax error: {exc.msg}"
        ) from exc

    if function_name not in _top_level_names(tree):
        raise ManifestError(
            f"{manifest}: key 'handler': {source_file.name} defines no {function_name!r}; "
            f"define def {function_name}(event, context) or fix the handler name"
        )


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names
