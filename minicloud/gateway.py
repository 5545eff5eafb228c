"""The gateway: turns invoke messages into invocations and their outcomes into replies.

    {ns}/invoke/{function} -> parse + validate -> de-duplicate -> Controller.submit()
    Controller on_complete -> {reply_to} (one reply) + {ns}/events/invocations

The gateway owns the table of request ids seen in the last ten minutes, so
a request that arrives twice (a QoS 1 redelivery) runs once, and the copy
gets the first one's reply. It never raises into the bus: every bad
request gets an error reply or, when it names no reply topic, is logged
and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from minicloud import errors, protocol
from minicloud.bus import Message
from minicloud.controller import INIT_TIMEOUT_S, Controller, Outcome
from minicloud.errors import BusError, PlatformError
from minicloud.pool import Invocation

log = logging.getLogger(__name__)

DEDUPLICATION_WINDOW_S = 600.0
MAX_REMEMBERED_REQUESTS = 100_000
# Replies that met a broker outage are held this long, at most this many.
UNDELIVERED_TTL_S = 60.0
MAX_UNDELIVERED = 10_000

Publish = Callable[..., Awaitable[None]]


class _ReplyTarget:
    """The destination of a request's one reply: topic and MQTT 5 correlation data."""

    __slots__ = ("reply_to", "correlation_data")

    def __init__(self, reply_to: str | None, correlation_data: bytes | None) -> None:
        self.reply_to = reply_to
        self.correlation_data = correlation_data


class Gateway:
    """Receives invoke requests from the bus and publishes their replies and events."""

    def __init__(
        self,
        controller: Controller,
        topics: protocol.Topics,
        publish: Publish,
        *,
        was_retained: Callable[[str, bytes], bool] = lambda topic, payload: False,
    ) -> None:
        self._controller = controller
        self._was_retained = was_retained
        self._topics = topics
        self._publish = publish
        # request id -> (monotonic expiry, reply payload or None while running)
        self._seen: OrderedDict[str, tuple[float, bytes | None]] = OrderedDict()
        self._accepting = True
        # (monotonic expiry, topic, payload, correlation data) of replies that met a broker outage
        self._undelivered: deque[tuple[float, str, bytes, bytes | None]] = deque(maxlen=MAX_UNDELIVERED)
        self.unparseable_count = 0
        self.retained_count = 0

    def __repr__(self) -> str:
        return f"<Gateway remembered={len(self._seen)} unparseable={self.unparseable_count}>"

    def stop_accepting(self) -> None:
        self._accepting = False

    def handle(self, message: Message) -> None:
        """Handle one message on {ns}/invoke/{function}."""
        function = self._topics.function_of_invoke(message.topic)
        if function is None or not message.payload:
            return  # An empty payload is how a retained request is cleared.
        if message.retain or self._was_retained(message.topic, message.payload):
            self._drop_retained(message)
            return

        target = _ReplyTarget(message.response_topic, message.correlation_data)
        try:
            request = protocol.parse_request(
                message.payload, response_topic=message.response_topic, correlation_data=message.correlation_data
            )
        except PlatformError as exc:
            self._reject_unparsed(function, message, target, exc)
            return
        target.reply_to = request.reply_to
        if request.reply_to is not None and self._topics.is_forbidden_reply_topic(request.reply_to):
            # No reply can be sent, so only the invocation event reports it.
            log.warning(
                "rejected request %s for %s: reply_to %s is one of the cloud's own topics; use a topic under %s",
                request.id, function, request.reply_to, self._topics.replies_prefix,
            )
            self._answer_now(request.id, function, _ReplyTarget(None, None), errors.INVALID_REQUEST, "reply_to is one of the cloud's own topics")
            return

        if self._is_duplicate(request, target):
            return
        if not self._accepting:
            self._answer_now(request.id, function, target, errors.UNAVAILABLE, "the cloud is shutting down; retry later")
            return
        if not self._controller.has_function(function):
            known = ", ".join(sorted(self._controller.pools)) or "none"
            self._answer_now(
                request.id, function, target, errors.FUNCTION_NOT_FOUND,
                f"function {function!r} not found; deployed functions: {known}",
            )
            return

        config = self._controller.pools[function].config
        now = time.monotonic()
        wait_s = request.timeout_ms / 1000 if request.timeout_ms else config.timeout_s + INIT_TIMEOUT_S
        invocation = Invocation(
            request_id=request.id,
            function=function,
            # The request as it came: the worker decodes it and takes "event",
            # so the event is never encoded again on its way.
            request_json=message.payload,
            received=now,
            queue_deadline=now + wait_s,
            context=target,
        )
        self._controller.submit(invocation)

    def complete(self, invocation: Invocation, outcome: Outcome) -> None:
        """Publish the reply and the event of a finished invocation (the controller's on_complete)."""
        if outcome.ok:
            reply = protocol.success_reply(invocation.request_id, outcome.result_json, outcome.report)
            error_type = None
        else:
            reply = protocol.error_reply(invocation.request_id, outcome.error, outcome.report)
            error_type = outcome.error["type"] if outcome.error else None
        if outcome.report is None:
            # Rejected before it ran (throttled, timed out in the queue): a retry may run.
            self._seen.pop(invocation.request_id, None)
        else:
            self._remember(invocation.request_id, reply)
        target: _ReplyTarget = invocation.context
        if target is not None and target.reply_to:
            self._send(target.reply_to, reply, target.correlation_data)
        event = protocol.invocation_event(invocation.request_id, invocation.function, outcome.ok, error_type, outcome.report)
        self._send(self._topics.invocation_events, event, None, qos=0)

    # -- helpers -------------------------------------------------------------

    def _drop_retained(self, message: Message) -> None:
        # A retained request would run again at every restart of the cloud, so
        # it never runs, and it is cleared from the broker.
        self.retained_count += 1
        log.warning("ignored a retained invoke request on %s; retained requests never run", message.topic)
        if message.payload:
            self._spawn(self._publish(message.topic, b"", qos=1, retain=True))

    def _reject_unparsed(self, function: str, message: Message, target: _ReplyTarget, exc: PlatformError) -> None:
        reply_to = protocol.salvage_reply_to(message.payload) or target.reply_to
        request_id = protocol.salvage_id(message.payload) or protocol.new_request_id()
        if reply_to is not None and self._topics.is_forbidden_reply_topic(reply_to):
            reply_to = None
        if reply_to is None:
            self.unparseable_count += 1
            log.warning(
                "rejected a request on %s with no reply topic (%d so far): %s: %s",
                message.topic, self.unparseable_count, exc.error_type, exc.message,
            )
            return
        log.info("rejected request %s for %s: %s: %s", request_id, function, exc.error_type, exc.message)
        target.reply_to = reply_to
        self._answer_now(request_id, function, target, exc.error_type, exc.message)

    def _answer_now(self, request_id: str, function: str, target: _ReplyTarget, error_type: str, message: str) -> None:
        # The request never ran, so a retry with the same id must be able to.
        self._seen.pop(request_id, None)
        reply = protocol.error_reply(request_id, errors.platform_error(error_type, message), None)
        if target.reply_to:
            self._send(target.reply_to, reply, target.correlation_data)
        event = protocol.invocation_event(request_id, function, False, error_type, None)
        self._send(self._topics.invocation_events, event, None, qos=0)

    def _is_duplicate(self, request: protocol.InvokeRequest, target: _ReplyTarget) -> bool:
        now = time.monotonic()
        self._forget_expired(now)
        entry = self._seen.get(request.id)
        if entry is None:
            self._seen[request.id] = (now + DEDUPLICATION_WINDOW_S, None)
            return False
        _, reply = entry
        log.info("request %s arrived again; %s", request.id, "sending its reply again" if reply else "it is still running")
        if reply is not None and target.reply_to:
            self._send(target.reply_to, reply, target.correlation_data)
        return True

    def _remember(self, request_id: str, reply: bytes) -> None:
        entry = self._seen.get(request_id)
        if entry is not None:
            self._seen[request_id] = (entry[0], reply)

    def _forget_expired(self, now: float) -> None:
        seen = self._seen
        while seen:
            request_id, (expires, _) = next(iter(seen.items()))
            if expires > now and len(seen) <= MAX_REMEMBERED_REQUESTS:
                break
            seen.popitem(last=False)

    def _send(self, topic: str, payload: bytes, correlation_data: bytes | None, *, qos: int = 1) -> None:
        if qos == 0:
            self._spawn(self._publish(topic, payload, qos=0, correlation_data=correlation_data))
        else:
            self._spawn(self._send_reply(topic, payload, correlation_data))

    async def _send_reply(self, topic: str, payload: bytes, correlation_data: bytes | None) -> None:
        try:
            await self._publish(topic, payload, qos=1, correlation_data=correlation_data)
        except BusError as exc:
            # The broker is away: keep the reply and send it after reconnecting.
            if len(self._undelivered) == self._undelivered.maxlen:
                log.error("a reply to %s was lost: %d replies already wait for the broker", topic, len(self._undelivered))
            else:
                log.warning("holding a reply to %s until the broker is back: %s", topic, exc)
            self._undelivered.append((time.monotonic() + UNDELIVERED_TTL_S, topic, payload, correlation_data))

    def resend_undelivered(self) -> None:
        """Send the replies held while the broker was away (call after reconnecting)."""
        now = time.monotonic()
        held, self._undelivered = self._undelivered, deque(maxlen=MAX_UNDELIVERED)
        expired = 0
        for expires, topic, payload, correlation_data in held:
            if expires < now:
                expired += 1
                continue
            self._spawn(self._send_reply(topic, payload, correlation_data))
        if held:
            log.info("sending %d held replies (%d expired)", len(held) - expired, expired)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        task.add_done_callback(_log_publish_failure)


def _log_publish_failure(task: asyncio.Future[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, BusError):
        log.error("a reply or event was lost: %s", exc)
    elif exc is not None:
        log.error("publishing failed", exc_info=exc)
