"""Batching and bounds of the bus listener, fed messages without a broker."""

from __future__ import annotations

import json

from minicloud.bus import Message
from minicloud.protocol import Topics
from tui import listener
from tui.listener import BusListener
from tui.messages import EnergyUpdated, InvocationsFinished, PoolsUpdated
from tui_fixtures import energy_state, event, pools_state

TOPICS = Topics()


def make_listener() -> BusListener:
    return BusListener("mqtt://127.0.0.1:1", TOPICS, lambda message: None)


def bus_message(topic: str, body: object) -> Message:
    return Message(topic, json.dumps(body).encode(), retain=False)


def test_drain_keeps_newest_state_only() -> None:
    bus_listener = make_listener()
    bus_listener.store(bus_message(TOPICS.pools_state, pools_state(queued=1)))
    bus_listener.store(bus_message(TOPICS.pools_state, pools_state(queued=2)))
    bus_listener.store(bus_message(TOPICS.energy_state, energy_state(watts=1.0)))
    bus_listener.store(bus_message(TOPICS.energy_state, energy_state(watts=2.0)))

    messages = bus_listener.drain()

    pools = [m for m in messages if isinstance(m, PoolsUpdated)]
    energy = [m for m in messages if isinstance(m, EnergyUpdated)]
    assert len(pools) == 1
    assert pools[0].state["functions"]["hello"]["queued"] == 2
    assert len(energy) == 1
    assert energy[0].state["watts"] == 2.0
    assert bus_listener.drain() == []


def test_events_batched_in_one_message() -> None:
    bus_listener = make_listener()
    for i in range(10):
        bus_listener.store(bus_message(TOPICS.invocation_events, event(f"id-{i}")))

    messages = bus_listener.drain()

    assert len(messages) == 1
    assert isinstance(messages[0], InvocationsFinished)
    assert [e["id"] for e in messages[0].events] == [f"id-{i}" for i in range(10)]
    assert messages[0].dropped == 0


def test_event_flood_is_bounded_and_counted() -> None:
    bus_listener = make_listener()
    total = listener.EVENT_BUFFER_SIZE + 1234
    for i in range(total):
        bus_listener.store(bus_message(TOPICS.invocation_events, event(f"id-{i}")))

    (message,) = bus_listener.drain()

    assert isinstance(message, InvocationsFinished)
    assert len(message.events) == listener.EVENT_BUFFER_SIZE
    assert message.dropped == 1234
    assert message.events[-1]["id"] == f"id-{total - 1}"


def test_invalid_payload_ignored() -> None:
    bus_listener = make_listener()
    bus_listener.store(Message(TOPICS.invocation_events, b"{not json", retain=False))
    bus_listener.store(Message(TOPICS.pools_state, b"[1, 2]", retain=True))

    (message,) = bus_listener.drain()

    assert isinstance(message, InvocationsFinished)
    assert message.events == []


def test_other_topics_ignored() -> None:
    bus_listener = make_listener()
    bus_listener.store(bus_message(TOPICS.logs("hello"), {"lines": []}))
    assert bus_listener.drain() == []
