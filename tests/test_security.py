"""A secured bus on both brokers: passwords, the ACL that `minicloud acl` writes, and what it refuses.

Each test runs twice: on the embedded broker (`minicloud up --auth --acl`)
and on Mosquitto with `password_file` and `acl_file`. The users are the
cloud, an admin (alice) and a client (bob).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudtest import CloudProcess, free_port, require_mosquitto, running_mosquitto, secured_mosquitto_settings, wait_until, write_function
from minicloud import protocol
from minicloud.acl import render_acl
from minicloud.bus import connect
from minicloud.client import AsyncClient, Client, FunctionError, InvocationError
from minicloud.passwords import set_password

TOPICS = protocol.Topics()
PASSWORDS = {"minicloud": "cloud-pass-1", "alice": "admin-pass-2", "bob": "client-pass-3"}

ECHO = """
import os

def handler(event, context):
    return {"echo": event, "broker_password_seen": "MINICLOUD_BROKER_PASSWORD" in os.environ}
"""

COUNTER = """
calls = 0

def handler(event, context):
    global calls
    calls += 1
    return calls
"""

BOOM = """
def handler(event, context):
    raise ValueError("boom on purpose")
"""

# Connects to the broker with a bare MQTT 3.1.1 CONNECT, as any code on the
# host could, and returns the CONNACK's return code (0 accepted, 5 not authorised).
PROBE_BROKER = """
import socket

def handler(event, context):
    client_id = b"handler-probe"
    variable_header = b"\\x00\\x04MQTT\\x04\\x02\\x00\\x3c"
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = variable_header + payload
    with socket.create_connection(("127.0.0.1", event["port"]), timeout=5) as connection:
        connection.sendall(bytes([0x10, len(body)]) + body)
        connack = connection.recv(4)
    return {"connack_code": connack[3] if len(connack) == 4 else None}
"""


@dataclass
class SecuredCloud:
    broker: str
    port: int
    cloud: CloudProcess
    folder: Path

    def url(self, user: str) -> str:
        return f"mqtt://{user}:{PASSWORDS[user]}@127.0.0.1:{self.port}"


def _write_security_files(folder: Path) -> tuple[Path, Path]:
    passwords = folder / "passwords"
    for user, password in PASSWORDS.items():
        set_password(passwords, user, password)
    acl = folder / "acl"
    acl.write_text(render_acl(admins=["alice"]))
    return passwords, acl


def _write_functions(folder: Path) -> Path:
    functions = folder / "functions"
    write_function(functions, "echo", ECHO, "keep_warm_s = 1\n")
    write_function(functions, "boom", BOOM)
    write_function(functions, "counter", COUNTER, "max_concurrency = 1\n")
    write_function(functions, "probe-broker", PROBE_BROKER)
    return functions


@pytest.fixture(params=["embedded", "mosquitto"])
def secured(request, start_cloud, tmp_path):
    passwords, acl = _write_security_files(tmp_path)
    functions = _write_functions(tmp_path)
    if request.param == "embedded":
        cloud = start_cloud(functions, extra_args=["--auth", str(passwords), "--acl", str(acl)])
        yield SecuredCloud("embedded", cloud.port, cloud, tmp_path)
        return
    require_mosquitto()
    with running_mosquitto(tmp_path / "mosquitto.conf", secured_mosquitto_settings(passwords, acl)) as port:
        cloud = start_cloud(
            functions,
            broker_url=f"mqtt://minicloud@127.0.0.1:{port}",
            env={"MINICLOUD_BROKER_PASSWORD": PASSWORDS["minicloud"]},
        )
        # The user name must not cost the cloud MQTT 5, which retained requests need.
        assert "with MQTT 5" in cloud.log_text()
        yield SecuredCloud("mosquitto", port, cloud, tmp_path)
        cloud.stop()


def _pool_workers(client: Client, function: str) -> list:
    return client.ls()["functions"][function]["workers"]


@pytest.mark.timeout(90)
def test_client_acceptance_run(secured):
    with Client(secured.url("bob")) as client:
        first = client.invoke("echo", {"n": 1})
        second = client.invoke("echo", {"n": 2})
        assert first.result["echo"] == {"n": 1}
        assert (first.report["start"], second.report["start"]) == ("cold", "warm")

        # keep_warm_s = 1: the worker is stopped, and the next call is cold again.
        wait_until(lambda: _pool_workers(client, "echo") == [], timeout=20, message="echo scaled to zero")
        assert client.invoke("echo", {}).report["start"] == "cold"

        with pytest.raises(FunctionError) as raised:
            client.invoke("boom", {})
        assert raised.value.error["type"] == "ValueError"
        with pytest.raises(InvocationError) as raised:
            client.invoke("missing", {})
        assert raised.value.error["type"] == "FunctionNotFound"


@pytest.mark.timeout(90)
def test_only_admin_deploys_or_scales(secured):
    extra = write_function(secured.folder / "more", "extra", ECHO)
    with Client(secured.url("bob")) as client:
        with pytest.raises(InvocationError) as raised:
            client.control("deploy", {"path": str(extra)}, timeout=3)
        assert raised.value.error["type"] == "Timeout"
        assert "may user bob publish" in raised.value.error["message"]
        with pytest.raises(InvocationError):
            client.control("scale", {"function": "echo", "min": 2}, timeout=3)
        # The refused requests changed nothing.
        state = client.ls()["functions"]
        assert "extra" not in state
        assert state["echo"]["config"]["min_warm"] == 0

    with Client(secured.url("alice")) as admin:
        assert admin.deploy(str(extra))["function"] == "extra"
        assert admin.invoke("extra", {"by": "alice"}).result["echo"] == {"by": "alice"}


@pytest.mark.timeout(60)
async def test_client_cannot_fake_the_cloud_state(secured):
    fake_state = {"ts": 1, "functions": {"forged-by-bob": {"config": {}, "queued": 0, "workers": []}}}
    fake_event = {"id": "fake-1", "function": "forged-by-bob", "ok": True, "report": {}}
    seen: list[dict] = []
    async with connect(secured.url("bob")) as listener:
        await listener.subscribe(TOPICS.pools_state)
        await listener.subscribe(TOPICS.invocation_events)

        async def collect() -> None:
            async for message in listener.messages():
                seen.append(json.loads(message.payload))

        collector = asyncio.ensure_future(collect())
        async with connect(secured.url("bob")) as faker:
            await faker.publish(TOPICS.pools_state, json.dumps(fake_state).encode(), retain=True)
            await faker.publish(TOPICS.invocation_events, json.dumps(fake_event).encode())
        async with AsyncClient(secured.url("bob")) as client:
            await client.invoke("echo", {})
        await asyncio.sleep(1.0)
        collector.cancel()

    # The listener may read the state and events: it got the real ones, and no fake.
    assert any(message.get("function") == "echo" for message in seen), seen
    assert not [message for message in seen if "forged-by-bob" in json.dumps(message)]


async def _replies_seen_on(url: str, topic_filter: str, during: "asyncio.Future[object]") -> list[bytes]:
    seen: list[bytes] = []
    async with connect(url) as connection:
        await connection.subscribe(topic_filter)

        async def collect() -> None:
            async for message in connection.messages():
                seen.append(message.payload)

        collector = asyncio.ensure_future(collect())
        await during
        await asyncio.sleep(0.5)
        collector.cancel()
    return seen


@pytest.mark.timeout(60)
async def test_replies_private_to_their_user(secured):
    async with AsyncClient(secured.url("alice")) as alice:
        # bob listens on every reply topic, then on alice's, while alice invokes.
        for topic_filter in (f"{TOPICS.namespace}/replies/#", f"{TOPICS.namespace}/replies/alice/#"):
            call = asyncio.ensure_future(alice.invoke("echo", {"secret": "alice"}))
            seen = await _replies_seen_on(secured.url("bob"), topic_filter, call)
            assert call.result().result["echo"] == {"secret": "alice"}
            assert seen == []

        # A reply that bob forges on alice's reply topic never reaches her.
        forged_id = "forged-1"
        async with connect(secured.url("bob")) as bob:
            await bob.publish(alice._reply_topic, json.dumps({"id": forged_id, "ok": True, "result": "forged"}).encode())
        real = await alice.invoke("echo", {"after": "forgery"})
        assert real.result["echo"] == {"after": "forgery"}


@pytest.mark.timeout(60)
def test_handler_cannot_use_the_bus(secured):
    with Client(secured.url("bob")) as client:
        outcome = client.invoke("probe-broker", {"port": secured.port})
        seen = client.invoke("echo", {}).result["broker_password_seen"]
    # 5: not authorised. Workers talk to the cloud over a pipe and hold no credentials.
    assert outcome.result["connack_code"] == 5
    assert seen is False


@pytest.mark.timeout(60)
def test_bad_login_names_next_step(secured):
    for url in (f"mqtt://bob:wrong@127.0.0.1:{secured.port}", f"mqtt://127.0.0.1:{secured.port}"):
        done = subprocess.run(
            [sys.executable, "-m", "minicloud", "invoke", "echo", "--broker", url],
            capture_output=True, text=True, timeout=30, env={**os.environ, "MINICLOUD_BROKER": ""},
        )
        assert done.returncode == 2, done.stderr
        error = json.loads(done.stderr[done.stderr.index("{"):])
        assert "refused the user name or password" in error["message"]
        assert "wrong" not in error["message"]


@pytest.mark.timeout(60)
def test_reply_to_on_the_cloud_topics_is_refused(secured):
    """A reply on NS/invoke/... would run as a request, and one on NS/state/... would pass for the state."""
    with Client(secured.url("bob")) as client:
        assert client.invoke("counter", {}).result == 1

    async def send_bad_requests() -> None:
        async with connect(secured.url("bob")) as connection:
            for reply_to in (TOPICS.invoke("counter"), TOPICS.pools_state):
                body = {"id": f"bad-reply-to-{reply_to}", "reply_to": reply_to, "event": {}}
                await connection.publish(TOPICS.invoke("counter"), json.dumps(body).encode())

    asyncio.run(send_bad_requests())
    wait_until(
        lambda: f"reply_to {TOPICS.pools_state} is one of the cloud's own topics" in secured.cloud.log_text(),
        timeout=10, message="the rejection in the cloud's log",
    )
    # Neither request ran, and no reply came back as a request: the count moved by one.
    with Client(secured.url("bob")) as client:
        assert client.invoke("counter", {}).result == 2


@pytest.mark.timeout(60)
def test_deploy_root_limits_deploy_folders(start_cloud, tmp_path):
    allowed = write_function(tmp_path / "allowed", "inside", ECHO)
    outside = write_function(tmp_path / "elsewhere", "outside", ECHO)
    # A link inside the allowed folder that leads out of it does not count as inside.
    (tmp_path / "allowed" / "link").symlink_to(outside)
    cloud = start_cloud(extra_args=["--deploy-root", str(tmp_path / "allowed")])
    with cloud.client() as client:
        assert client.deploy(str(allowed))["function"] == "inside"
        for path in (outside, tmp_path / "allowed" / "link"):
            with pytest.raises(InvocationError) as raised:
                client.deploy(str(path))
            assert raised.value.error["type"] == "InvalidRequest"
            assert f"cannot deploy {outside}" in raised.value.error["message"]
            assert "--deploy-root" in raised.value.error["message"]
        assert "outside" not in client.ls()["functions"]


@pytest.mark.timeout(60)
async def test_oversized_request_loses_nothing(secured):
    """Over 6 MiB: the gateway replies PayloadTooLarge, or Mosquitto's max_packet_size drops the packet."""
    reply_topic = TOPICS.new_reply_topic("bob")
    body = {"id": "too-big-1", "reply_to": reply_topic, "event": {"blob": "x" * (7 * 1024 * 1024)}}
    replies: list[dict] = []
    async with connect(secured.url("bob")) as listener:
        await listener.subscribe(reply_topic)

        async def collect() -> None:
            async for message in listener.messages():
                replies.append(json.loads(message.payload))

        collector = asyncio.ensure_future(collect())
        sender_error = None
        try:
            async with connect(secured.url("bob")) as sender:
                await asyncio.wait_for(sender.publish(TOPICS.invoke("echo"), json.dumps(body).encode()), 10)
        except Exception as exc:
            sender_error = exc
        await asyncio.sleep(1.0)
        collector.cancel()

    if secured.broker == "embedded":
        assert [reply["error"]["type"] for reply in replies] == ["PayloadTooLarge"]
        assert sender_error is None
    else:
        # Mosquitto closes the connection of a client that sends a packet over max_packet_size.
        assert replies == []
        assert sender_error is not None
    async with AsyncClient(secured.url("bob")) as client:
        assert (await client.invoke("echo", {"after": "big"})).result["echo"] == {"after": "big"}


@pytest.mark.timeout(60)
def test_acl_for_another_namespace_is_rejected(tmp_path):
    """On the embedded broker the cloud's own connection passes any ACL, so `up` checks the file itself."""
    passwords, acl = _write_security_files(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "minicloud", "up", "--namespace", "lab", "--port", str(free_port()),
         "--auth", str(passwords), "--acl", str(acl), "--functions", str(_write_functions(tmp_path))],
        capture_output=True, text=True, timeout=45,
    )
    assert done.returncode == 64, done.stderr
    assert "lets no user publish on lab/invoke/any-function" in done.stderr
    assert "minicloud acl --namespace lab" in done.stderr


@pytest.mark.timeout(60)
def test_cloud_with_refused_subscriptions_stops(start_cloud, tmp_path):
    """A broker that refuses the cloud's subscriptions in its SUBACK, as amqtt does for its ACL.

    Mosquitto 2.0 grants every subscription and applies its ACL on delivery, so there only the docs can warn.
    """
    passwords, acl = _write_security_files(tmp_path)
    functions = _write_functions(tmp_path)
    broker_cloud = start_cloud(functions, extra_args=["--auth", str(passwords), "--acl", str(acl)])
    done = subprocess.run(
        [sys.executable, "-m", "minicloud", "up", "--namespace", "lab",
         "--broker", f"mqtt://minicloud@127.0.0.1:{broker_cloud.port}", "--functions", str(functions)],
        capture_output=True, text=True, timeout=45, env={**os.environ, "MINICLOUD_BROKER_PASSWORD": PASSWORDS["minicloud"]},
    )
    assert done.returncode == 2, done.stderr
    assert "refused this cloud's subscriptions to lab/control/+, lab/invoke/+" in done.stderr
    assert "minicloud acl --namespace lab" in done.stderr
