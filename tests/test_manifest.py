"""function.toml validation: every invalid manifest names the file, the key and the fix."""

from __future__ import annotations

import pytest

from cloudtest import write_function
from minicloud.errors import ManifestError
from minicloud.manifest import FunctionConfig, load_function, load_functions_dir

HANDLER = "def handler(event, context):\n    return 1\n"


def test_defaults(tmp_path):
    config = load_function(write_function(tmp_path, "plain", HANDLER))
    assert config == FunctionConfig(name="plain", directory=(tmp_path / "plain").resolve())
    assert config.memory_mb == 128
    assert config.timeout_s == 3.0
    assert config.keep_warm_s == 900.0
    assert config.max_concurrency == 10
    assert config.min_warm == 0


def test_integer_and_float_numbers(tmp_path):
    config = load_function(write_function(tmp_path, "numbers", HANDLER, "timeout_s = 1\nkeep_warm_s = 1.5\nmemory_mb = 256.0\n"))
    assert config.timeout_s == 1.0
    assert config.keep_warm_s == 1.5
    assert config.memory_mb == 256


def test_env_and_name(tmp_path):
    manifest = 'name = "renamed"\n[env]\nGREETING = "hi"\n'
    config = load_function(write_function(tmp_path, "folder", HANDLER, manifest))
    assert config.name == "renamed"
    assert config.env == {"GREETING": "hi"}


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        ("colour = 1\n", ["unknown key 'colour'", "valid keys are"]),
        ("memory_mb = 'lots'\n", ["'memory_mb'", "expected a number"]),
        ("memory_mb = true\n", ["'memory_mb'", "expected a number"]),
        ("memory_mb = 64\n", ["'memory_mb'", "out of range", "128"]),
        ("memory_mb = 200.5\n", ["'memory_mb'", "whole number"]),
        ("timeout_s = 0\n", ["'timeout_s'", "out of range"]),
        ("timeout_s = 901\n", ["'timeout_s'", "out of range"]),
        ("keep_warm_s = -1\n", ["'keep_warm_s'", "out of range"]),
        ("max_concurrency = 1.5\n", ["'max_concurrency'", "whole number"]),
        ("min_warm = 3\nmax_concurrency = 2\n", ["'min_warm'", "more than max_concurrency"]),
        ("name = 'a/b'\n", ["'name'", "invalid name"]),
        ("name = 5\n", ["'name'", "expected a non-empty string"]),
        ("[env]\nPORT = 80\n", ["'env.PORT'", "quote the value"]),
        ("[env]\n'BAD-NAME' = 'x'\n", ["'env.BAD-NAME'", "invalid variable name"]),
        ("memory_mb = \n", ["invalid TOML"]),
    ],
)
def test_invalid_manifest_names_file_key_and_fix(tmp_path, manifest, words):
    folder = write_function(tmp_path, "broken", HANDLER, manifest)
    with pytest.raises(ManifestError) as raised:
        load_function(folder)
    message = str(raised.value)
    assert str(folder / "function.toml") in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("handler", "code", "words"),
    [
        ("main.handler", "def other(event, context):\n    pass\n", ["defines no 'handler'"]),
        ("nomodule.handler", HANDLER, ["module 'nomodule' not found", "nomodule.py"]),
        ("handler", HANDLER, ["invalid value 'handler'", "module.function"]),
        ("main.handler", "def handler(event, context)\n    pass\n", ["syntax error", "line 1"]),
    ],
)
def test_invalid_handler(tmp_path, handler, code, words):
    folder = write_function(tmp_path, "broken", code, handler=handler)
    with pytest.raises(ManifestError) as raised:
        load_function(folder)
    message = str(raised.value)
    assert "'handler'" in message
    for word in words:
        assert word in message


def test_handler_in_package_and_imported_name(tmp_path):
    folder = write_function(tmp_path, "packaged", "from helpers import handler\n", handler="app.main.handler")
    (folder / "app").mkdir()
    (folder / "app" / "__init__.py").write_text("")
    (folder / "app" / "main.py").write_text("from .impl import handler\n")
    assert load_function(folder).handler == "app.main.handler"


def test_missing_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="function.toml: missing"):
        load_function(tmp_path / "empty")


def test_broken_function_does_not_stop_others(tmp_path):
    write_function(tmp_path, "good", HANDLER)
    write_function(tmp_path, "bad", HANDLER, "memory_mb = 'x'\n")
    write_function(tmp_path, "also-good", HANDLER)
    configs, failures = load_functions_dir(tmp_path)
    assert sorted(config.name for config in configs) == ["also-good", "good"]
    assert len(failures) == 1
    assert "bad" in str(failures[0])
