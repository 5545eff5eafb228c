"""The cloud on Mosquitto, an MQTT 5 broker: Response Topic, Correlation Data, retained requests.

CI installs Mosquitto from Debian's packages, and there a missing broker
fails these tests. On a machine without it they are skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloudtest import require_mosquitto, running_mosquitto, secured_mosquitto_settings, wait_until
from minicloud import protocol

TOPICS = protocol.Topics()


@pytest.fixture
def mosquitto(tmp_path):
    require_mosquitto()
    with running_mosquitto(tmp_path / "mosquitto.conf", "allow_anonymous true\n") as port:
        yield f"mqtt://127.0.0.1:{port}", port


@pytest.mark.timeout(60)
def test_cloud_runs_on_mosquitto(start_cloud, mosquitto):
    url, _ = mosquitto
    cloud = start_cloud(broker_url=url)
    assert "with MQTT 5" in cloud.log_text()
    with cloud.client() as client:
        first = client.invoke("hello", {"name": "m"})
        second = client.invoke("hello", {"name": "m"})
    assert first.result["message"] == "hello, m!"
    assert first.report["start"] == "cold"
    assert second.report["start"] == "warm"


async def _retained_pools_state(port: int) -> dict:
    client = await _v5_client(port)
    try:
        await client.subscribe(TOPICS.pools_state, qos=1)
        async for message in client.messages:
            return json.loads(message.payload)
    finally:
        await client.__aexit__(None, None, None)


async def _v5_client(port: int) -> aiomqtt.Client:
    client = aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5)
    await client.__aenter__()
    return client


@pytest.mark.timeout(60)
async def test_response_topic_and_correlation_data(start_cloud, mosquitto):
    url, port = mosquitto
    start_cloud(broker_url=url)
    client = await _v5_client(port)
    try:
        await client.subscribe("v5/replies", qos=1)
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = "v5/replies"
        properties.CorrelationData = b"corr-7"
        await client.publish(TOPICS.invoke("hello"), json.dumps({"event": {"name": "v5"}}), qos=1, properties=properties)

        async def first_reply() -> aiomqtt.Message:
            async for message in client.messages:
                return message

        reply = await asyncio.wait_for(first_reply(), 15)
    finally:
        await client.__aexit__(None, None, None)
    body = json.loads(reply.payload)
    assert body["ok"] is True
    assert body["result"]["message"] == "hello, v5!"
    assert reply.properties.CorrelationData == b"corr-7"


@pytest.mark.timeout(60)
async def test_live_retained_request_never_runs(start_cloud, mosquitto):
    url, port = mosquitto
    cloud = start_cloud(broker_url=url)
    from minicloud.client import AsyncClient

    async with AsyncClient(url) as client:
        before = await client.invoke("hello", {})
        await client.publish(
            TOPICS.invoke("hello"), json.dumps({"id": "kept", "reply_to": "v5/none"}).encode(), retain=True
        )
        await asyncio.sleep(1.0)
        after = await client.invoke("hello", {})
    assert after.result["warm_invocations"] == before.result["warm_invocations"] + 1
    assert "retained requests never run" in cloud.log_text()


@pytest.mark.timeout(90)
def test_restarted_controller_finds_no_stale_state(start_cloud, mosquitto):
    import signal as signals

    from minicloud.client import Client

    url, port = mosquitto
    first = start_cloud(broker_url=url)
    with first.client() as client:
        client.invoke("hello", {})
    first.stop(signals.SIGKILL)

    # The broker publishes the cloud's last will once it notices the dead connection.
    deadline = time.monotonic() + 60
    state = asyncio.run(asyncio.wait_for(_retained_pools_state(port), 10))
    while state.get("status") != "offline" and time.monotonic() < deadline:
        time.sleep(0.5)
        state = asyncio.run(asyncio.wait_for(_retained_pools_state(port), 10))
    assert state == {"ts": 0, "functions": {}, "status": "offline"}

    second = start_cloud(broker_url=url)
    with Client(url) as client:
        pools = client.ls()["functions"]
        assert all(pool["workers"] == [] for pool in pools.values())
        assert client.invoke("hello", {}).report["start"] == "cold"
    assert second.pid != first.pid


@pytest.fixture
def mosquitto_with_password(tmp_path):
    require_mosquitto()
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "cloud", "s3cret-pass"], check=True, capture_output=True)
    with running_mosquitto(tmp_path / "secure.conf", secured_mosquitto_settings(passwords)) as port:
        yield port


@pytest.mark.timeout(60)
def test_password_from_environment_never_shown(start_cloud, mosquitto_with_password):
    port = mosquitto_with_password
    url = f"mqtt://cloud@127.0.0.1:{port}"
    cloud = start_cloud(broker_url=url, env={"MINICLOUD_BROKER_PASSWORD": "s3cret-pass"})
    assert "s3cret-pass" not in cloud.log_text()

    done = subprocess.run(
        [sys.executable, "-m", "minicloud", "invoke", "hello", "--broker", url],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "MINICLOUD_BROKER_PASSWORD": "s3cret-pass"},
    )
    assert done.returncode == 0, done.stderr
    assert "hello, world!" in done.stdout

    wrong = subprocess.run(
        [sys.executable, "-m", "minicloud", "invoke", "hello", "--broker", f"mqtt://cloud:wrong-pass@127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=30,
    )
    assert wrong.returncode == 2
    assert f"mqtt://cloud@127.0.0.1:{port}" in wrong.stderr
    assert "wrong-pass" not in wrong.stderr
    assert "s3cret-pass" not in cloud.log_text()


def _self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """Make a certificate for 127.0.0.1 and localhost with openssl; return (certificate, key)."""
    certificate, key = folder / "broker.crt", folder / "broker.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(certificate), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=60,
    )
    return certificate, key


@pytest.mark.timeout(90)
def test_tls_with_a_ca_file(start_cloud, tmp_path):
    require_mosquitto()
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is not installed; .ci/run installs it with apt-get")
        pytest.skip("openssl is not installed (apt-get install openssl)")
    certificate, key = _self_signed_certificate(tmp_path)
    keep_user = "user root\n" if os.geteuid() == 0 else ""
    settings = f"allow_anonymous true\ncertfile {certificate}\nkeyfile {key}\n{keep_user}"
    with running_mosquitto(tmp_path / "tls.conf", settings) as port:
        url = f"mqtts://127.0.0.1:{port}"
        cloud = start_cloud(broker_url=url, extra_args=["--ca-file", str(certificate)])
        assert f"minicloud ready on {url}" in cloud.log_text()

        trusted = subprocess.run(
            [sys.executable, "-m", "minicloud", "invoke", "hello", '{"name": "tls"}', "--broker", url, "--ca-file", str(certificate)],
            capture_output=True, text=True, timeout=30,
        )
        assert trusted.returncode == 0, trusted.stderr
        assert json.loads(trusted.stdout)["message"] == "hello, tls!"

        # Without the CA file the system's CAs do not trust the certificate.
        untrusted = subprocess.run(
            [sys.executable, "-m", "minicloud", "invoke", "hello", "--broker", url],
            capture_output=True, text=True, timeout=30, env={**os.environ, "MINICLOUD_BROKER_CA_FILE": ""},
        )
        assert untrusted.returncode == 2
        assert "certificate verify failed" in untrusted.stderr
        assert "--ca-file" in untrusted.stderr


@pytest.mark.timeout(120)
def test_mosquitto_restart_is_survived(start_cloud, tmp_path):
    """Mosquitto stops for two seconds and comes back empty: the cloud reconnects and republishes its state."""
    from minicloud.client import Client

    require_mosquitto()
    config = tmp_path / "mosquitto.conf"
    with running_mosquitto(config, "allow_anonymous true\n") as port:
        url = f"mqtt://127.0.0.1:{port}"
        cloud = start_cloud(broker_url=url)
        with Client(url) as client:
            assert client.invoke("hello", {}).report["start"] == "cold"
    time.sleep(2.0)

    # The same port, and no persistence: the retained pools state is gone with the old broker.
    with running_mosquitto(config, "allow_anonymous true\n", port=port):
        wait_until(lambda: cloud.log_text().count(f"connected to {url}") >= 2, timeout=20, message="the cloud to reconnect")
        with Client(url) as client:
            after = client.invoke("hello", {})
            assert after.report["start"] == "warm"  # the worker outlived the outage
        state = asyncio.run(asyncio.wait_for(_retained_pools_state(port), 10))
        assert "hello" in state["functions"]
    assert "lost the broker" in cloud.log_text()
