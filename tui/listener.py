"""Listen to the cloud's state and events on the bus and post them to the app in batches.

Bus callbacks only store messages: the newest pools and energy state, and
invocation events in a bounded buffer. Every `interval_s` the listener turns
what arrived into at most one message of each kind, so a flood of events
costs one screen update per interval and a fixed amount of memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from textual.message import Message

from minicloud import protocol
from minicloud.bus import Bus
from minicloud.bus import Message as BusMessage
from tui.messages import BrokerStateChanged, EnergyUpdated, InvocationsFinished, PoolsUpdated

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.25
EVENT_BUFFER_SIZE = 5000


class BusListener:
    """Subscribes to the pools, energy and invocation topics of one namespace."""

    def __init__(self, broker_url: str, topics: protocol.Topics, post: Callable[[Message], Any], *, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.broker_url = broker_url
        self.topics = topics
        self._post = post
        self._interval_s = interval_s
        self._pools: bytes | None = None
        self._energy: bytes | None = None
        self._events: deque[bytes] = deque(maxlen=EVENT_BUFFER_SIZE)
        self._received_events = 0

    async def run(self) -> None:
        """Connect, then post batches until cancelled; the bus reconnects on its own."""
        bus = Bus(
            self.broker_url,
            subscriptions=[self.topics.pools_state, self.topics.energy_state, self.topics.invocation_events],
            on_message=self.store,
            on_state=self._state_changed,
            name="tui",
        )
        self._post(BrokerStateChanged("connecting", str(bus.url)))
        bus.start()
        try:
            while True:
                await asyncio.sleep(self._interval_s)
                for message in self.drain():
                    self._post(message)
        finally:
            await bus.stop()

    def store(self, message: BusMessage) -> None:
        if message.topic == self.topics.invocation_events:
            self._events.append(message.payload)
            self._received_events += 1
        elif message.topic == self.topics.pools_state:
            self._pools = message.payload
        elif message.topic == self.topics.energy_state:
            self._energy = message.payload

    def drain(self) -> list[Message]:
        """Return the messages for what arrived since the last call, and empty the buffers."""
        messages: list[Message] = []
        pools, self._pools = self._pools, None
        energy, self._energy = self._energy, None
        if pools is not None and (state := _decode(pools)) is not None:
            messages.append(PoolsUpdated(state))
        if energy is not None and (state := _decode(energy)) is not None:
            messages.append(EnergyUpdated(state))
        if self._events:
            payloads = list(self._events)
            self._events.clear()
            dropped = self._received_events - len(payloads)
            self._received_events = 0
            events = [event for payload in payloads if (event := _decode(payload)) is not None]
            messages.append(InvocationsFinished(events, dropped))
        return messages

    def _state_changed(self, state: str) -> None:
        self._post(BrokerStateChanged(state, self.broker_url))


def _decode(payload: bytes) -> dict[str, Any] | None:
    try:
        value = protocol.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        log.warning("ignored a bus message that is not valid JSON: %s", exc)
        return None
    return value if isinstance(value, dict) else None
