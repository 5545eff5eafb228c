"""Find the molecule drawn at a point of an image and return its SMILES, formula and weight.

Event: {"imageBase64": "<PNG or JPEG, base64>", "x": 120, "y": 80}, with the
point in pixels from the top-left corner. OSRA finds every structure in the
image with its box, RDKit canonicalises each SMILES and computes the formula
and average molecular weight, and the structure whose box contains the point
is returned (or the nearest one, with "match": "nearest"). A box is
[x1, y1, x2, y2]: the top-left and bottom-right corners in pixels.

With OPENAI_API_KEY in the function's [env], an OpenAI vision model finds
the structures instead of OSRA (see openai_vision.py).

OSRA runs as a child process that the handler waits for, so its CPU time
is part of the invocation's cpu_ms.
"""

from __future__ import annotations

import math
import os
from typing import Any

from image_input import ImageInfo, decode_base64, read_image_info
from osra_runner import recognise

try:
    from rdkit import Chem
    from rdkit.Chem import Descriptors, rdMolDescriptors
except ImportError:
    Chem = None

# Seconds of the invocation's timeout kept back from structure recognition,
# for RDKit and the reply, so a slow recognition ends with a clear error
# before the platform kills the worker.
RESERVED_S = 1.0
MIN_RECOGNITION_S = 0.5


class InvalidEvent(ValueError):
    """The event lacks a field or has one of the wrong type."""


class PointOutsideImage(ValueError):
    """The point (x, y) is not inside the image."""


class NoStructureFound(LookupError):
    """The image has no chemical structure that could be recognised."""


class TimeLeftTooShort(TimeoutError):
    """Too little of the invocation's timeout is left to run structure recognition."""


class RdkitNotInstalled(RuntimeError):
    """The rdkit package is not installed in the cloud's Python."""


def handler(event: Any, context: Any) -> dict[str, Any]:
    image_base64, x, y = parse_event(event)
    image = decode_base64(image_base64)
    info = read_image_info(image)
    check_point(x, y, info)
    if Chem is None:
        raise RdkitNotInstalled(
            "the rdkit package is not installed; install it with: pip install -e '.[molecules]' "
            "in the minicloud repository, or pip install rdkit"
        )

    timeout_s = recognition_timeout_s(context.get_remaining_time_in_millis())
    api_key = os.environ.get("OPENAI_API_KEY")
    extra: dict[str, Any] = {}
    if api_key:
        import openai_vision  # only imported when the vision backend is configured

        model = os.environ.get("OPENAI_MODEL") or openai_vision.DEFAULT_MODEL
        structures = openai_vision.recognise(image, info, api_key, model, timeout_s)
        extra["backend"] = f"openai:{model}"
    else:
        osra = recognise(image, "." + info.format, timeout_s)
        structures = osra.structures
        extra["backend"] = "osra"
        extra["osra_cpu_ms"] = osra.cpu_ms

    if not structures:
        raise NoStructureFound(
            f"no chemical structure was found in the {info.width}x{info.height} {info.format.upper()} image; "
            "send a sharper image with the structure drawn in dark lines on a light background"
        )
    molecules = [describe_molecule(smiles, box) for smiles, box in structures]
    chosen, distance = pick_molecule(molecules, x, y)
    return {
        **chosen,
        "match": "inside" if distance == 0 else "nearest",
        "distance_px": round(distance, 1),
        "point": [x, y],
        "image": {"format": info.format, "width": info.width, "height": info.height},
        **extra,
        "all": molecules,
    }


def parse_event(event: Any) -> tuple[str, int, int]:
    """Return (imageBase64, x, y) from the event, or raise InvalidEvent naming the bad field."""
    if not isinstance(event, dict):
        raise InvalidEvent(f'the event must be a JSON object such as {{"imageBase64": "...", "x": 10, "y": 20}}, got {type(event).__name__}')
    image_base64 = event.get("imageBase64")
    if not isinstance(image_base64, str):
        got = "nothing" if image_base64 is None else type(image_base64).__name__
        raise InvalidEvent(f"imageBase64 must be a string with the PNG or JPEG file in base64, got {got}")
    coordinates = []
    for name in ("x", "y"):
        value = event.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidEvent(f"{name} must be a whole number of pixels from the top-left corner, got {value!r}")
        coordinates.append(value)
    return image_base64, coordinates[0], coordinates[1]


def check_point(x: int, y: int, info: ImageInfo) -> None:
    if not (0 <= x < info.width and 0 <= y < info.height):
        raise PointOutsideImage(
            f"the point ({x}, {y}) is outside the {info.width}x{info.height} image; "
            f"x must be 0 to {info.width - 1} and y 0 to {info.height - 1}"
        )


def recognition_timeout_s(remaining_ms: int) -> float:
    """Return the seconds structure recognition may take: the time left, less RESERVED_S."""
    timeout_s = remaining_ms / 1000 - RESERVED_S
    if timeout_s < MIN_RECOGNITION_S:
        raise TimeLeftTooShort(
            f"only {remaining_ms} ms of the invocation are left, too little to run structure recognition; "
            f"raise timeout_s in function.toml to a few seconds or more"
        )
    return timeout_s


def describe_molecule(smiles: str, box: list[int]) -> dict[str, Any]:
    """Return the canonical SMILES, box, formula and molecular weight of one recognised structure.

    A SMILES that RDKit cannot parse is kept as recognised, with formula and
    molecular_weight set to None and the reason in "error".
    """
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        return {
            "smiles": smiles,
            "box": box,
            "formula": None,
            "molecular_weight": None,
            "error": "RDKit cannot parse this SMILES, so the structure was probably misread",
        }
    return {
        "smiles": Chem.MolToSmiles(molecule),
        "box": box,
        "formula": rdMolDescriptors.CalcMolFormula(molecule),
        "molecular_weight": round(Descriptors.MolWt(molecule), 3),
    }


def pick_molecule(molecules: list[dict[str, Any]], x: int, y: int) -> tuple[dict[str, Any], float]:
    """Return the molecule whose box contains (x, y), or else the nearest one, and its distance in pixels.

    When several boxes contain the point, the smallest box wins.
    """

    def rank(molecule: dict[str, Any]) -> tuple[float, int]:
        x1, y1, x2, y2 = molecule["box"]
        return box_distance(molecule["box"], x, y), (x2 - x1) * (y2 - y1)

    chosen = min(molecules, key=rank)
    return chosen, box_distance(chosen["box"], x, y)


def box_distance(box: list[int], x: int, y: int) -> float:
    """Return the distance in pixels from (x, y) to the box [x1, y1, x2, y2], 0 when the box contains it."""
    x1, y1, x2, y2 = box
    dx = max(x1 - x, 0, x - x2)
    dy = max(y1 - y, 0, y - y2)
    return math.hypot(dx, dy)
