"""An amqtt plugin that lets the gateway see that a request was published retained.

MQTT 3.1.1 brokers clear the retain flag on messages delivered to a client
that was already subscribed, so a gateway on 3.1.1 cannot tell a retained
request from a live one. The embedded broker runs in the gateway's own
process, so this plugin records each retained publish where the gateway
can look it up. On an MQTT 5 broker, the subscription's Retain As
Published option does the same job.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from amqtt.plugins.base import BasePlugin

_MAX_RECORDED = 1000


class RetainedPublishes:
    """Digests of recently published retained messages, by topic."""

    def __init__(self) -> None:
        self._recorded: OrderedDict[tuple[str, bytes], None] = OrderedDict()

    def record(self, topic: str, payload: bytes) -> None:
        self._recorded[(topic, hashlib.sha256(payload).digest())] = None
        while len(self._recorded) > _MAX_RECORDED:
            self._recorded.popitem(last=False)

    def was_retained(self, topic: str, payload: bytes) -> bool:
        """Return whether this exact message was published retained, and forget it."""
        key = (topic, hashlib.sha256(payload).digest())
        if key in self._recorded:
            del self._recorded[key]
            return True
        return False


RETAINED_PUBLISHES = RetainedPublishes()


class RetainedPublishRecorder(BasePlugin):  # type: ignore[type-arg]
    """Records every retained publish in RETAINED_PUBLISHES."""

    async def on_broker_message_received(self, *, client_id: str, message: Any) -> None:
        packet = getattr(message, "publish_packet", None)
        if packet is not None and packet.retain_flag and message.data:
            RETAINED_PUBLISHES.record(message.topic, bytes(message.data))
