"""Chaos soak: thousands of invocations while workers are killed and bad messages arrive.

Every request must get exactly one reply, of an expected kind, before its
deadline plus 1 s, and the cloud's own counts must match what the client saw.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import threading
import time
from collections import Counter, defaultdict

import psutil
import pytest

from cloudtest import write_function
from minicloud import errors, protocol
from minicloud.bus import connect

TOPICS = protocol.Topics()
REPLY_TOPIC = "soak/replies"
REQUESTS = 2000
TIMEOUT_MS = 8000
FUNCTION_TIMEOUT_S = 3

FUNCTIONS = {
    "echo": "def handler(event, context):\n    return event\n",
    "burn": "import time\n\ndef handler(event, context):\n    end = time.process_time() + 0.002\n    while time.process_time() < end:\n        pass\n    return 1\n",
    "nap": "import time\n\ndef handler(event, context):\n    time.sleep(0.02)\n    return 2\n",
    "flaky": "def handler(event, context):\n    if event['n'] % 7 == 0:\n        raise ValueError('every seventh fails')\n    return 3\n",
}
EXPECTED_ERRORS = {errors.WORKER_CRASHED, errors.THROTTLED, "ValueError"}

BAD_MESSAGES = [
    b"{not json",
    b"[1, 2]",
    json.dumps({"reply_to": "soak/bad", "timeout_ms": "soon"}).encode(),
    json.dumps({"reply_to": "soak/bad", "id": 7}).encode(),
    b"",
]


def _kill_workers(cloud, stop: threading.Event, kills: list[int]) -> None:
    rng = random.Random(7)
    while not stop.wait(0.3):
        pids = sorted(cloud.worker_pids())
        if not pids:
            continue
        victim = rng.choice(pids)
        try:
            psutil.Process(victim).send_signal(signal.SIGKILL)
            kills.append(victim)
        except psutil.Error:
            pass


async def _soak(url: str) -> dict:
    sent: dict[str, tuple[str, float]] = {}
    replies: dict[str, list[tuple[dict, float]]] = defaultdict(list)
    events: Counter[str] = Counter()
    rng = random.Random(11)

    async with connect(url) as listener, connect(url) as sender:
        await listener.subscribe(REPLY_TOPIC)
        await listener.subscribe(TOPICS.invocation_events, qos=0)

        async def collect() -> None:
            async for message in listener.messages():
                body = json.loads(message.payload)
                if message.topic == REPLY_TOPIC:
                    replies[body["id"]].append((body, time.monotonic()))
                elif message.topic == TOPICS.invocation_events:
                    events[body["id"]] += 1

        collector = asyncio.create_task(collect())
        names = sorted(FUNCTIONS)
        for number in range(REQUESTS):
            function = names[number % len(names)]
            request_id = f"soak-{number}"
            payload = json.dumps({"id": request_id, "reply_to": REPLY_TOPIC, "event": {"n": number}, "timeout_ms": TIMEOUT_MS})
            sent[request_id] = (function, time.monotonic())
            await sender.publish(TOPICS.invoke(function), payload.encode())
            if number % 40 == 0:
                await sender.publish(TOPICS.invoke(rng.choice(names)), rng.choice(BAD_MESSAGES))
            await asyncio.sleep(0.003)

        deadline = time.monotonic() + TIMEOUT_MS / 1000 + FUNCTION_TIMEOUT_S + 5
        while time.monotonic() < deadline and len(replies) < len(sent):
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # room for a duplicate reply or a late event to show up
        collector.cancel()
    return {"sent": sent, "replies": replies, "events": events}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_chaos_soak(start_cloud, tmp_path):
    for name, code in FUNCTIONS.items():
        write_function(tmp_path, name, code, f"max_concurrency = 4\ntimeout_s = {FUNCTION_TIMEOUT_S}\nqueue_size = 500\n")
    cloud = start_cloud(tmp_path)
    stop = threading.Event()
    kills: list[int] = []
    killer = threading.Thread(target=_kill_workers, args=(cloud, stop, kills), daemon=True)
    killer.start()
    try:
        outcome = asyncio.run(_soak(cloud.url))
    finally:
        stop.set()
        killer.join(5)

    sent, replies, events = outcome["sent"], outcome["replies"], outcome["events"]
    lost = [request_id for request_id in sent if request_id not in replies]
    doubled = [request_id for request_id, got in replies.items() if len(got) > 1]
    late = []
    kinds: Counter[str] = Counter()
    for request_id, got in replies.items():
        body, arrived = got[0]
        kinds["ok" if body["ok"] else body["error"]["type"]] += 1
        if arrived - sent[request_id][1] > TIMEOUT_MS / 1000 + FUNCTION_TIMEOUT_S + 1:
            late.append(request_id)
    print(f"\nsoak: {len(sent)} requests, {len(kills)} workers killed, {len(replies)} replied, "
          f"{len(lost)} lost, {len(doubled)} replied twice, {len(late)} late; kinds {dict(kinds)}")

    assert lost == []
    assert doubled == []
    assert late == []
    assert set(kinds) - {"ok"} <= EXPECTED_ERRORS
    assert kinds["ok"] > REQUESTS * 0.8
    assert len(kills) >= 5

    # The cloud's event stream and energy counts agree with the replies.
    assert all(events[request_id] == 1 for request_id in sent)
    reported = Counter(sent[request_id][0] for request_id, got in replies.items() if got[0][0]["report"] is not None)
    with cloud.client() as client:
        by_function = client.energy()["by_function"]
    for function in FUNCTIONS:
        assert by_function[function]["invocations"] == reported[function], function
