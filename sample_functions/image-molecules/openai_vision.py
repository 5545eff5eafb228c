"""Find chemical structures in an image with an OpenAI vision model, as an alternative to OSRA.

The handler uses this module only when OPENAI_API_KEY is set in the
function's [env]. It sends one chat completions request with the image as
a data URI and requests JSON with every structure's SMILES and its box in
pixels. It uses only the standard library (urllib).

NOTE: the tests check build_request and parse_reply offline. The request
has not been sent to the real API from this repository's tests, and a
model's boxes are estimates, less exact than OSRA's.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from image_input import ImageInfo

API_URL = "https://api.openai.com/v1/chat/completions"
DEFAULT_MODEL = "gpt-4o-mini"

PROMPT = """\
The image is {width}x{height} pixels. Find every chemical structure drawing in it.
Reply with JSON only, in this form:
{{"molecules": [{{"smiles": "CCO", "box": [x1, y1, x2, y2]}}]}}
where smiles is the structure's SMILES and box is its bounding box in pixels:
x1, y1 the top-left corner and x2, y2 the bottom-right corner, with the origin
at the top-left of the image. Reply {{"molecules": []}} when there is none."""


class VisionModelError(RuntimeError):
    """The vision model request failed or its reply cannot be used."""


def recognise(image: bytes, info: ImageInfo, api_key: str, model: str, timeout_s: float) -> list[tuple[str, list[int]]]:
    """Request the structures in the image from the model and return (SMILES, [x1, y1, x2, y2]) pairs."""
    request = build_request(image, info, api_key, model)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode("utf-8", "replace")
        raise VisionModelError(f"the OpenAI API returned HTTP {exc.code} for model {model!r}: {detail}; check OPENAI_API_KEY and OPENAI_MODEL") from None
    except (urllib.error.URLError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise VisionModelError(f"the request to {API_URL} failed: {reason}; check the network, or remove OPENAI_API_KEY to use OSRA") from None
    except json.JSONDecodeError as exc:
        raise VisionModelError(f"the OpenAI API reply is not JSON: {exc}") from None
    return parse_reply(body, info)


def build_request(image: bytes, info: ImageInfo, api_key: str, model: str) -> urllib.request.Request:
    data_uri = f"data:{info.mime_type};base64,{base64.b64encode(image).decode('ascii')}"
    payload = {
        "model": model,
        "response_format": {"type": "json_object"},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": PROMPT.format(width=info.width, height=info.height)},
                    {"type": "image_url", "image_url": {"url": data_uri}},
                ],
            }
        ],
    }
    return urllib.request.Request(
        API_URL,
        data=json.dumps(payload).encode("utf-8"),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        method="POST",
    )


def parse_reply(body: dict[str, Any], info: ImageInfo) -> list[tuple[str, list[int]]]:
    """Return the (SMILES, box) pairs of a chat completions reply, each box clipped to the image."""
    try:
        content = body["choices"][0]["message"]["content"]
        molecules = json.loads(content)["molecules"]
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
        raise VisionModelError(f"the model's reply has no JSON 'molecules' list ({type(exc).__name__}: {exc})") from None
    if not isinstance(molecules, list):
        raise VisionModelError(f"'molecules' in the model's reply is a {type(molecules).__name__}, not a list")

    structures = []
    for entry in molecules:
        smiles = entry.get("smiles") if isinstance(entry, dict) else None
        box = entry.get("box") if isinstance(entry, dict) else None
        if not isinstance(smiles, str) or not smiles.strip():
            raise VisionModelError(f"a molecule in the model's reply has no SMILES string: {entry!r}")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(value, (int, float)) for value in box)):
            raise VisionModelError(f"a molecule in the model's reply has no box of four numbers: {entry!r}")
        x1, y1, x2, y2 = (round(value) for value in box)
        x1, x2 = sorted((_clip(x1, info.width), _clip(x2, info.width)))
        y1, y2 = sorted((_clip(y1, info.height), _clip(y2, info.height)))
        structures.append((smiles.strip(), [x1, y1, x2, y2]))
    return structures


def _clip(value: int, size: int) -> int:
    return min(max(value, 0), size - 1)
