"""Topic names and message shapes of the minicloud bus.

This module is the only place that builds topic strings. Every payload is
UTF-8 JSON. Requests are parsed into frozen dataclasses here, so the gateway,
the controller, the CLI and the TUI agree on one shape.

    client --invoke/{function}--> gateway --pipe--> worker
    client <------{reply_to}----- gateway <--pipe-- worker
                                  gateway --events/invocations--> anyone
    controller --state/pools, state/energy (retained)--> anyone
    client --control/{action}--> controller --{reply_to}--> client
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from minicloud import errors

DEFAULT_NAMESPACE = "minicloud"

# AWS Lambda's limit for a synchronous request or response: 6 MB.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024

CONTROL_ACTIONS = ("deploy", "scale", "remove", "ls", "energy", "logs")

WORKER_STATES = ("starting", "idle", "busy", "draining")


@dataclass(frozen=True)
class Topics:
    """The topic names under one namespace."""

    namespace: str = DEFAULT_NAMESPACE

    def invoke(self, function: str) -> str:
        return f"{self.namespace}/invoke/{function}"

    @property
    def invoke_all(self) -> str:
        return f"{self.namespace}/invoke/+"

    @property
    def invocation_events(self) -> str:
        return f"{self.namespace}/events/invocations"

    @property
    def pools_state(self) -> str:
        return f"{self.namespace}/state/pools"

    @property
    def energy_state(self) -> str:
        return f"{self.namespace}/state/energy"

    def logs(self, function: str) -> str:
        return f"{self.namespace}/logs/{function}"

    @property
    def logs_all(self) -> str:
        return f"{self.namespace}/logs/+"

    def control(self, action: str) -> str:
        return f"{self.namespace}/control/{action}"

    @property
    def control_all(self) -> str:
        return f"{self.namespace}/control/+"

    @property
    def replies_prefix(self) -> str:
        return f"{self.namespace}/replies/"

    def new_reply_topic(self, username: str | None = None) -> str:
        """Return a fresh reply topic for one client, under its user name when it has one.

        The ACL that `minicloud acl` writes lets each user read only
        NS/replies/USERNAME/#, so no user can read another's replies.
        """
        if username:
            return f"{self.replies_prefix}{username}/{uuid.uuid4().hex}"
        return f"{self.replies_prefix}{uuid.uuid4().hex}"

    def is_forbidden_reply_topic(self, topic: str) -> bool:
        """Return whether a reply to `topic` would land on one of the cloud's own topics.

        Replies may go anywhere outside the namespace and under NS/replies/.
        A reply on NS/invoke/... would run as a request, and one on
        NS/state/... would pass for the cloud's state, so those are refused.
        """
        return topic.startswith(f"{self.namespace}/") and not topic.startswith(self.replies_prefix)

    def function_of_invoke(self, topic: str) -> str | None:
        """Return the function name of an invoke topic, or None for another topic."""
        return self._last_level(topic, "invoke")

    def action_of_control(self, topic: str) -> str | None:
        """Return the action of a control topic, or None for another topic."""
        return self._last_level(topic, "control")

    def function_of_logs(self, topic: str) -> str | None:
        return self._last_level(topic, "logs")

    def _last_level(self, topic: str, kind: str) -> str | None:
        prefix = f"{self.namespace}/{kind}/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix) :]
        if not rest or "/" in rest:
            return None
        return rest


def new_request_id() -> str:
    return str(uuid.uuid4())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Made once: json.dumps and json.loads build a new encoder or decoder on
# every call that passes options, which shows on the warm path.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def dumps(value: Any) -> bytes:
    """Encode a value as compact JSON; NaN and infinities are rejected."""
    return _ENCODER.encode(value).encode()


def loads(payload: bytes | str) -> Any:
    """Decode JSON text; NaN and Infinity, which JSON does not allow, are rejected."""
    if isinstance(payload, (bytes, bytearray)):
        # As json.loads does: UTF-8, or UTF-16 or UTF-32 when a BOM or the zero bytes show it.
        payload = payload.decode(json.detect_encoding(payload), "surrogatepass")
    return _DECODER.decode(payload)


@dataclass(frozen=True)
class InvokeRequest:
    """A request on `{ns}/invoke/{function}` or `{ns}/control/{action}`.

    `id` is set by the gateway when the client sent none. With no
    `reply_to`, the invocation runs and only its event is published.
    """

    id: str
    reply_to: str | None = None
    event: Any = field(default_factory=dict)
    timeout_ms: int | None = None
    # Correlation Data of an MQTT 5 request, sent back unchanged on the reply.
    correlation_data: bytes | None = None

    def to_payload(self) -> bytes:
        body: dict[str, Any] = {"id": self.id, "event": self.event}
        if self.reply_to is not None:
            body["reply_to"] = self.reply_to
        if self.timeout_ms is not None:
            body["timeout_ms"] = self.timeout_ms
        return dumps(body)


def oversized_request_error(size: int) -> errors.PlatformError:
    return errors.PlatformError(
        errors.PAYLOAD_TOO_LARGE,
        f"request is {size} bytes, over the limit of {MAX_PAYLOAD_BYTES} bytes; send a smaller event or pass a reference to the data",
    )


def parse_request(
    payload: bytes, *, response_topic: str | None = None, correlation_data: bytes | None = None
) -> InvokeRequest:
    """Parse and validate an invoke or control request.

    Raises PlatformError (PayloadTooLarge or InvalidRequest) with a message
    that names the bad field. The MQTT 5 Response Topic is used when the
    payload names no `reply_to`.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise oversized_request_error(len(payload))
    try:
        body = loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.PlatformError(
            errors.INVALID_REQUEST, f"request is not valid UTF-8 JSON: {exc}"
        ) from exc
    if not isinstance(body, dict):
        raise errors.PlatformError(
            errors.INVALID_REQUEST,
            f"request must be a JSON object, got {type(body).__name__}; "
            'send {"event": ..., "reply_to": ...}',
        )

    request_id = body.get("id")
    if request_id is None:
        request_id = new_request_id()
    elif not isinstance(request_id, str) or not request_id:
        raise errors.PlatformError(errors.INVALID_REQUEST, f'"id" must be a non-empty string, got {request_id!r}')

    reply_to = body.get("reply_to", response_topic)
    if reply_to is not None and not _is_valid_publish_topic(reply_to):
        raise errors.PlatformError(
            errors.INVALID_REQUEST,
            f'"reply_to" must be a topic name without wildcards, got {reply_to!r}',
        )

    timeout_ms = body.get("timeout_ms")
    if timeout_ms is not None and (
        isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0
    ):
        raise errors.PlatformError(
            errors.INVALID_REQUEST, f'"timeout_ms" must be a positive integer, got {timeout_ms!r}'
        )

    return InvokeRequest(
        id=request_id,
        reply_to=reply_to,
        event=body.get("event", {}),
        timeout_ms=timeout_ms,
        correlation_data=correlation_data,
    )


def _is_valid_publish_topic(topic: Any) -> bool:
    return isinstance(topic, str) and 0 < len(topic) <= 65535 and "+" not in topic and "#" not in topic


@dataclass(frozen=True)
class Report:
    """The cost of one invocation: times, CPU, memory and energy."""

    request_id: str
    function: str
    worker_id: str | None
    pid: int | None
    start: str  # "cold" or "warm"
    init_ms: float | None
    queue_ms: float
    duration_ms: float
    billed_ms: int
    cpu_ms: float
    max_rss_mb: float
    memory_mb: int
    energy_j: float

    def to_dict(self) -> dict[str, Any]:
        body = {
            "request_id": self.request_id,
            "function": self.function,
            "worker_id": self.worker_id,
            "pid": self.pid,
            "start": self.start,
            "queue_ms": round(self.queue_ms, 3),
            "duration_ms": round(self.duration_ms, 3),
            "billed_ms": self.billed_ms,
            "cpu_ms": round(self.cpu_ms, 3),
            "max_rss_mb": round(self.max_rss_mb, 2),
            "memory_mb": self.memory_mb,
            "energy_j": round(self.energy_j, 9),
        }
        if self.start == "cold" and self.init_ms is not None:
            body["init_ms"] = round(self.init_ms, 3)
        return body


def billed_ms(duration_ms: float) -> int:
    """Round a duration up to a whole millisecond, as billing does."""
    return max(1, math.ceil(duration_ms))


def success_reply(request_id: str, result_json: bytes, report: dict[str, Any] | None) -> bytes:
    """Build a success reply around a result that is already JSON text.

    The result is spliced in as it came from the worker, so a large result
    is encoded once, in the worker, and never decoded on the way.
    """
    head = b'{"id":' + dumps(request_id) + b',"ok":true,"result":'
    return head + result_json + b',"report":' + dumps(report) + b"}"


def error_reply(request_id: str, error: dict[str, Any], report: dict[str, Any] | None) -> bytes:
    return dumps({"id": request_id, "ok": False, "error": error, "report": report})


def invocation_event(
    request_id: str, function: str, ok: bool, error_type: str | None, report: dict[str, Any] | None
) -> bytes:
    body: dict[str, Any] = {"id": request_id, "function": function, "ok": ok, "report": report}
    if error_type is not None:
        body["error_type"] = error_type
    return dumps(body)


# Finds "reply_to" in text that is not valid JSON, so that a client whose
# JSON is broken still learns why, instead of waiting for a reply.
_REPLY_TO_PATTERN = re.compile(rb'"reply_to"\s*:\s*"([^"\\+#]{1,1024})"')


def salvage_reply_to(payload: bytes) -> str | None:
    """Find a usable reply topic in a request that failed validation, or return None."""
    try:
        body = loads(payload)
    except (ValueError, UnicodeDecodeError):
        match = _REPLY_TO_PATTERN.search(payload[:65536])
        if match is None:
            return None
        try:
            return match.group(1).decode()
        except UnicodeDecodeError:
            return None
    if isinstance(body, dict) and _is_valid_publish_topic(body.get("reply_to")):
        return body["reply_to"]
    return None


def salvage_id(payload: bytes) -> str | None:
    """Find the id of a request that failed validation, or return None."""
    try:
        body = loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(body, dict) and isinstance(body.get("id"), str) and body["id"]:
        return body["id"]
    return None
