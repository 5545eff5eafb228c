"""Framing of the messages between the controller and a worker, over a pipe.

A message is a 4-byte big-endian length, a JSON header of that length, and
an optional body of raw bytes. The body carries a request or a result that
is already JSON text, so the controller passes it on without decoding or
encoding it again.

controller -> worker: {"t": "invoke", "id", "timeout_ms"} + the invoke request's JSON, with "event" in it
worker -> controller: {"t": "ready", "init_ms", "logs"}
                      {"t": "init_error", "error", "logs"}
                      {"t": "done", "ok", "error"?, "duration_ms", "cpu_ms",
                       "max_rss_mb", "logs", "logs_dropped", "exiting"?} + result JSON
"""

from __future__ import annotations

import json
from typing import Any

_HEADER_SIZE = 4
# Made once, because json.dumps with options builds a new encoder per call.
_HEADER_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode(header: dict[str, Any], body: bytes = b"") -> bytes:
    head = _HEADER_ENCODER.encode(header).encode()
    return len(head).to_bytes(_HEADER_SIZE, "big") + head + body


def decode(message: bytes) -> tuple[dict[str, Any], bytes]:
    size = int.from_bytes(message[:_HEADER_SIZE], "big")
    header = json.loads(message[_HEADER_SIZE : _HEADER_SIZE + size])
    return header, message[_HEADER_SIZE + size :]
