"""Raw MQTT requests to the gateway: every kind of bad input gets a clear error reply."""

from __future__ import annotations

import asyncio
import json

import pytest

from minicloud import protocol
from minicloud.bus import connect

TOPICS = protocol.Topics()
REPLY_TOPIC = "test/replies/raw"


async def _exchange(
    url: str, topic: str, payload: bytes, *, wait_s: float = 5.0, retain: bool = False, stop_after: int = 2
) -> list[dict]:
    """Publish one payload; collect the replies that arrive within wait_s, up to stop_after."""
    replies: list[dict] = []
    async with connect(url) as connection:
        await connection.subscribe(REPLY_TOPIC)
        await connection.publish(topic, payload, retain=retain)

        async def collect() -> None:
            async for message in connection.messages():
                # amqtt 0.12 may also deliver retained messages of other topics here.
                if message.topic != REPLY_TOPIC:
                    continue
                replies.append(json.loads(message.payload))
                if len(replies) >= stop_after:
                    return

        try:
            await asyncio.wait_for(collect(), wait_s)
        except asyncio.TimeoutError:
            pass
    return replies


def _request(**fields) -> bytes:
    return json.dumps({"reply_to": REPLY_TOPIC, **fields}).encode()


@pytest.fixture
def cloud(start_cloud):
    return start_cloud()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("payload", "expected_type", "words"),
    [
        (b'{"reply_to": "test/replies/raw", "event": ', "InvalidRequest", "not valid UTF-8 JSON"),
        (b'[1, 2, 3]', None, None),  # valid JSON but no object: nowhere to reply, so only logged
        (_request(id=17), "InvalidRequest", '"id" must be a non-empty string'),
        (_request(timeout_ms="soon"), "InvalidRequest", '"timeout_ms" must be a positive integer'),
        (_request(timeout_ms=-5), "InvalidRequest", '"timeout_ms" must be a positive integer'),
        (b'{"reply_to": "test/replies/raw", "event": NaN}', "InvalidRequest", "NaN is not valid JSON"),
        (b'\xff\xfe{"reply_to": "test/replies/raw"}', "InvalidRequest", "not valid UTF-8 JSON"),
    ],
)
async def test_invalid_request_gets_clear_error(cloud, payload, expected_type, words):
    replies = await _exchange(cloud.url, TOPICS.invoke("hello"), payload, wait_s=1.5)
    if expected_type is None:
        assert replies == []
    else:
        assert len(replies) == 1
        assert replies[0]["ok"] is False
        assert replies[0]["error"]["type"] == expected_type
        assert replies[0]["error"]["source"] == "platform"
        assert words in replies[0]["error"]["message"]

    # The gateway keeps working after any of them.
    good = await _exchange(cloud.url, TOPICS.invoke("hello"), _request(id="after", event={"name": "z"}), wait_s=10, stop_after=1)
    assert good[0]["ok"] is True
    assert good[0]["result"]["message"] == "hello, z!"


@pytest.mark.timeout(60)
async def test_unknown_function_is_not_found(cloud):
    replies = await _exchange(cloud.url, TOPICS.invoke("nope"), _request(id="r1"), wait_s=1.0)
    assert len(replies) == 1
    assert replies[0]["id"] == "r1"
    assert replies[0]["error"]["type"] == "FunctionNotFound"
    assert "hello" in replies[0]["error"]["message"]  # it lists what is deployed


@pytest.mark.timeout(60)
async def test_oversized_request_is_payload_too_large(cloud):
    event = "x" * (protocol.MAX_PAYLOAD_BYTES + 10)
    replies = await _exchange(cloud.url, TOPICS.invoke("hello"), _request(id="big", event=event), wait_s=3.0)
    assert len(replies) == 1
    assert replies[0]["error"]["type"] == "PayloadTooLarge"


@pytest.mark.timeout(60)
async def test_request_without_id_gets_one(cloud):
    replies = await _exchange(cloud.url, TOPICS.invoke("hello"), _request(event={}), wait_s=5.0, stop_after=1)
    assert len(replies) == 1
    assert replies[0]["ok"] is True
    assert replies[0]["id"]
    assert replies[0]["report"]["request_id"] == replies[0]["id"]


@pytest.mark.timeout(60)
async def test_duplicate_id_runs_once(cloud):
    payload = _request(id="twice", event={"name": "d"})
    async with connect(cloud.url) as connection:
        await connection.subscribe(REPLY_TOPIC)
        await connection.publish(TOPICS.invoke("hello"), payload)
        await asyncio.sleep(0.5)
        await connection.publish(TOPICS.invoke("hello"), payload)
        replies = []

        async def collect() -> None:
            async for message in connection.messages():
                if message.topic == REPLY_TOPIC:
                    replies.append(json.loads(message.payload))

        try:
            await asyncio.wait_for(collect(), 3.0)
        except asyncio.TimeoutError:
            pass
    # The copy gets the same reply, or none: never a second run.
    assert 1 <= len(replies) <= 2
    assert all(reply == replies[0] for reply in replies)
    assert replies[0]["result"]["warm_invocations"] >= 1
    async with connect(cloud.url):
        pass
    from minicloud.client import AsyncClient

    async with AsyncClient(cloud.url) as client:
        after = await client.invoke("hello", {})
    # One run for "twice", then this one: a second run of "twice" would make it 3.
    assert after.result["warm_invocations"] == replies[0]["result"]["warm_invocations"] + 1


@pytest.mark.timeout(60)
async def test_retained_request_never_runs(cloud):
    from minicloud.client import AsyncClient

    async with AsyncClient(cloud.url) as client:
        before = await client.invoke("hello", {})
    replies = await _exchange(cloud.url, TOPICS.invoke("hello"), _request(id="kept"), retain=True, wait_s=1.5)
    assert replies == []
    async with AsyncClient(cloud.url) as client:
        after = await client.invoke("hello", {})
    assert after.result["warm_invocations"] == before.result["warm_invocations"] + 1


@pytest.mark.timeout(60)
async def test_no_reply_to_runs_and_publishes_event(cloud):
    async with connect(cloud.url) as connection:
        await connection.subscribe(TOPICS.invocation_events, qos=0)
        await connection.publish(TOPICS.invoke("hello"), json.dumps({"id": "fire", "event": {}}).encode())
        event = None
        async for message in connection.messages():
            body = json.loads(message.payload)
            if body["id"] == "fire":
                event = body
                break
    assert event["function"] == "hello"
    assert event["ok"] is True
    assert event["report"]["request_id"] == "fire"


@pytest.mark.timeout(60)
async def test_id_rejected_before_running_can_be_retried(cloud, tmp_path):
    from cloudtest import write_function
    from minicloud.client import AsyncClient

    first = await _exchange(cloud.url, TOPICS.invoke("later"), _request(id="retry-me"), wait_s=3, stop_after=1)
    assert first[0]["error"]["type"] == "FunctionNotFound"

    folder = write_function(tmp_path, "later", "def handler(event, context):\n    return 'ran'\n")
    async with AsyncClient(cloud.url) as client:
        await client.deploy(str(folder))
    second = await _exchange(cloud.url, TOPICS.invoke("later"), _request(id="retry-me"), wait_s=10, stop_after=1)
    assert second[0]["ok"] is True
    assert second[0]["result"] == "ran"


@pytest.mark.timeout(60)
async def test_broken_control_request_gets_error(cloud):
    payload = json.dumps({"id": "c9", "reply_to": REPLY_TOPIC, "timeout_ms": 0}).encode()
    replies = await _exchange(cloud.url, TOPICS.control("ls"), payload, wait_s=3, stop_after=1)
    assert replies[0]["id"] == "c9"
    assert replies[0]["error"]["type"] == "InvalidRequest"
