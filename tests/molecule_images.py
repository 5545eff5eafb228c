"""Helpers for the image-molecules tests: the function's modules, test images, and tool checks."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import sys
import tomllib
import zlib
from pathlib import Path
from types import ModuleType

import pytest

from cloudtest import SAMPLE_FUNCTIONS

FUNCTION_DIR = SAMPLE_FUNCTIONS / "image-molecules"
CAFFEINE = "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"
PARACETAMOL = "CC(=O)NC1=CC=C(C=C1)O"

# The function's sibling modules (image_input, osra_runner, openai_vision,
# make_event) import each other by bare name, as they do in a worker, where
# the function's folder is first on sys.path.
if str(FUNCTION_DIR) not in sys.path:
    sys.path.append(str(FUNCTION_DIR))


def load_handler_module() -> ModuleType:
    """Import the function's main.py under a name that no other test's main.py uses."""
    name = "image_molecules_main"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FUNCTION_DIR / "main.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _missing(reason: str) -> None:
    """Skip the test, or fail it when CI is set, where every tool must be installed."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


def require_rdkit() -> None:
    if importlib.util.find_spec("rdkit") is None:
        _missing("rdkit is not installed; install it with: pip install -e '.[molecules]'")


def require_osra() -> str:
    """Return the path of osra, or skip or fail the test when it is missing."""
    path = shutil.which("osra")
    if path is None:
        _missing("osra is not installed; install it with: apt-get install osra")
    return path


def pair_png(panel_px: int = 400) -> bytes:
    """Draw caffeine (left) and paracetamol (right) in square panels of panel_px pixels and return the PNG bytes."""
    import make_event

    return make_event.draw_png([CAFFEINE, PARACETAMOL], panel_px)


def panel_centre(index: int, panel_px: int = 400) -> tuple[int, int]:
    return panel_px * index + panel_px // 2, panel_px // 2


def canonical(smiles: str) -> str:
    from rdkit import Chem

    molecule = Chem.MolFromSmiles(smiles)
    assert molecule is not None, f"RDKit cannot parse {smiles!r}"
    return Chem.MolToSmiles(molecule)


def blank_png(width: int = 300, height: int = 200) -> bytes:
    """Encode a white 8-bit RGB PNG with zlib alone, so no image library is needed."""
    row = b"\x00" + b"\xff" * (3 * width)  # filter type 0, then the pixels

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b"")


def png_to_jpeg(png: bytes) -> bytes:
    """Re-encode a PNG as JPEG with Pillow (a dependency of the rdkit wheels)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        output = io.BytesIO()
        image.convert("RGB").save(output, format="JPEG", quality=90)
    return output.getvalue()


def copy_function(destination: Path, *, timeout_s: float | None = None, env: dict[str, str] | None = None) -> Path:
    """Copy the function's folder to destination/image-molecules, with another timeout_s or more [env] variables."""
    folder = destination / "image-molecules"
    shutil.copytree(FUNCTION_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = (folder / "function.toml").read_text()
    if timeout_s is not None:
        assert "timeout_s = 30\n" in manifest
        manifest = manifest.replace("timeout_s = 30\n", f"timeout_s = {timeout_s}\n")
    # [env] is the last table of the manifest, so lines appended at the end belong to it.
    for name, value in (env or {}).items():
        manifest += f"{name} = {json.dumps(value)}\n"
    assert tomllib.loads(manifest).get("env", {}) == (env or {})
    (folder / "function.toml").write_text(manifest)
    return folder
