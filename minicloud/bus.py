"""A small asyncio wrapper over aiomqtt 2.x: broker URLs, reconnection, MQTT 5.

aiomqtt connects once and raises when the connection drops. `Bus` keeps a
connection up: it reconnects with backoff, subscribes again, and routes each
message to one callback. It speaks MQTT 5 where the broker does, so
Response Topic and Correlation Data are honoured, and falls back to 3.1.1
(the embedded amqtt broker speaks only 3.1.1).

`connect()` is the one-shot form for short-lived clients such as the CLI: it
fails within its timeout, naming the URL, instead of retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiomqtt
from aiomqtt import ProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from minicloud.errors import BrokerRefusedError, BusError

log = logging.getLogger(__name__)

DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"
BROKER_URL_VARIABLE = "MINICLOUD_BROKER"
# A URL with a user name and no password takes it from one of these, so it
# stays out of shell history and process listings.
PASSWORD_VARIABLE = "MINICLOUD_BROKER_PASSWORD"
PASSWORD_FILE_VARIABLE = "MINICLOUD_BROKER_PASSWORD_FILE"
# An mqtts:// URL trusts the system's CA certificates, or only the ones in this file.
CA_FILE_VARIABLE = "MINICLOUD_BROKER_CA_FILE"

# With Nagle's algorithm on, a small publish waits for the previous ACK, and
# a QoS 1 round trip costs tens of milliseconds instead of one or two.
TCP_NODELAY_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)

# Connect reason codes that mean "this broker does not speak MQTT 5":
# 132 from an MQTT 5 broker, 1 from a 3.1.1 one.
_UNSUPPORTED_PROTOCOL_CODES = {1, 132}


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed `mqtt://[user:password@]host:port` or `mqtts://` URL."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None

    def __str__(self) -> str:
        # The password is never part of the text form, which goes into logs.
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def default_broker_url() -> str:
    return os.environ.get(BROKER_URL_VARIABLE) or DEFAULT_BROKER_URL


def _password_from_environment() -> str | None:
    """Return the broker password from $MINICLOUD_BROKER_PASSWORD or the file $MINICLOUD_BROKER_PASSWORD_FILE names."""
    password = os.environ.get(PASSWORD_VARIABLE)
    if password:
        return password
    path = os.environ.get(PASSWORD_FILE_VARIABLE)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as password_file:
            return password_file.readline().rstrip("\n")
    except OSError as exc:
        raise ValueError(f"cannot read the broker password file {path} (from ${PASSWORD_FILE_VARIABLE}): {exc}") from exc


def parse_broker_url(text: str) -> BrokerUrl:
    """Parse a broker URL; raise ValueError naming the URL and the expected form."""
    parts = urlsplit(text)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(
            f"invalid broker URL {text!r}: expected mqtt://host:port or mqtts://host:port"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid port in broker URL {text!r}: {exc}") from exc
    if not parts.hostname:
        raise ValueError(f"missing host in broker URL {text!r}: expected mqtt://host:port")
    if port is None:
        port = 8883 if parts.scheme == "mqtts" else 1883
    if port == 0:
        raise ValueError(f"invalid port 0 in broker URL {text!r}: use 1 to 65535")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if username and password is None:
        password = _password_from_environment()
    tls = parts.scheme == "mqtts"
    ca_file = (os.environ.get(CA_FILE_VARIABLE) or None) if tls else None
    if ca_file is not None and not os.path.isfile(ca_file):
        raise ValueError(f"the CA file {ca_file} (from --ca-file or ${CA_FILE_VARIABLE}) does not exist")
    return BrokerUrl(parts.hostname, port, tls, username, password, ca_file)


@dataclass(frozen=True)
class Message:
    """One message received from the broker."""

    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None


MessageCallback = Callable[[Message], None]
StateCallback = Callable[[str], None]


def _make_client(url: BrokerUrl, protocol: ProtocolVersion, *, timeout: float, will: aiomqtt.Will | None) -> aiomqtt.Client:
    tls_context = ssl.create_default_context(cafile=url.ca_file) if url.tls else None
    client = aiomqtt.Client(
        url.host,
        url.port,
        username=url.username,
        password=url.password,
        identifier=f"minicloud-{uuid.uuid4().hex[:12]}",
        protocol=protocol,
        timeout=timeout,
        keepalive=30,
        will=will,
        max_inflight_messages=1000,
        tls_context=tls_context,
        socket_options=TCP_NODELAY_OPTIONS,
    )
    # aiomqtt warns once per publish beyond 10 awaiting their acknowledgement,
    # which is every publish of a busy gateway: raise the bar to the in-flight limit.
    client.pending_calls_threshold = 1000
    return client


async def _open_client(
    url: BrokerUrl, *, timeout: float, will: aiomqtt.Will | None = None, mqtt5: bool | None = None
) -> aiomqtt.Client:
    """Connect with MQTT 5, or with 3.1.1 when the broker does not speak 5 or `mqtt5` is False."""
    if mqtt5 is None and (url.username or will is not None):
        # amqtt 0.12 misreads an MQTT 5 CONNECT that carries a will or a user
        # name and waits for bytes that never come, so ask with a bare one first.
        mqtt5 = await _speaks_mqtt5(url, timeout=timeout)
    if mqtt5 is not False:
        client = _make_client(url, ProtocolVersion.V5, timeout=timeout, will=will)
        try:
            await client.__aenter__()
            return client
        except aiomqtt.MqttCodeError as exc:
            if _reason_code(exc) not in _UNSUPPORTED_PROTOCOL_CODES or mqtt5:
                raise
    client = _make_client(url, ProtocolVersion.V311, timeout=timeout, will=will)
    await client.__aenter__()
    return client


async def _speaks_mqtt5(url: BrokerUrl, *, timeout: float) -> bool:
    """Send an MQTT 5 CONNECT with no user name and no will, and tell from the CONNACK whether the broker speaks 5.

    Any reason code but "unsupported protocol version" means it does, "not
    authorised" included. The probe costs one more connection, and a
    broker that refuses anonymous clients logs it as a refused client.
    """
    anonymous = dataclasses.replace(url, username=None, password=None)
    client = _make_client(anonymous, ProtocolVersion.V5, timeout=timeout, will=None)
    try:
        await client.__aenter__()
    except aiomqtt.MqttCodeError as exc:
        return _reason_code(exc) not in _UNSUPPORTED_PROTOCOL_CODES
    with contextlib.suppress(Exception):
        await client.__aexit__(None, None, None)
    return True


# CONNACK codes for a refused user name or password: 4 and 5 in MQTT 3.1.1,
# 134 and 135 in MQTT 5.
_AUTHENTICATION_CODES = {4, 5, 134, 135}


def _next_step(exc: BaseException, url: BrokerUrl) -> str:
    """Say what to do after a failed connection, by its cause."""
    if _is_refused_login(exc):
        if url.username and url.password is None:
            return (
                f"no password was given for user {url.username}: set ${PASSWORD_VARIABLE}, "
                f"or ${PASSWORD_FILE_VARIABLE} to a file that holds it"
            )
        return (
            "the broker refused the user name or password: put the user in the URL (mqtt://USER@host:port) "
            f"and the password in ${PASSWORD_VARIABLE} or a file named by ${PASSWORD_FILE_VARIABLE}"
        )
    if any(isinstance(cause, ssl.SSLError) for cause in _causes(exc)) or url.tls:
        return (
            f"check the TLS setup: is port {url.port} a TLS listener (the embedded broker has none), and does "
            f"--ca-file or ${CA_FILE_VARIABLE} name the CA that signed the broker's certificate?"
        )
    return "start a cloud with 'minicloud up' or pass --broker URL"


def _is_refused_login(exc: BaseException) -> bool:
    return isinstance(exc, aiomqtt.MqttCodeError) and _reason_code(exc) in _AUTHENTICATION_CODES


def _causes(exc: BaseException) -> list[BaseException]:
    """Return `exc` and the exceptions it was raised from: aiomqtt wraps socket and TLS errors in MqttError."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _code_value(code: object) -> int:
    """Return the number of a paho ReasonCode, or of a granted QoS as MQTT 3.1.1 clients get it."""
    return int(getattr(code, "value", code))


def _reason_code(exc: aiomqtt.MqttCodeError) -> int:
    return getattr(exc.rc, "value", exc.rc)


class Connection:
    """One open connection, for a client that needs no reconnection."""

    def __init__(self, client: aiomqtt.Client, url: BrokerUrl) -> None:
        self._client = client
        self.url = url

    @property
    def is_mqtt5(self) -> bool:
        return self._client._client.protocol == ProtocolVersion.V5  # noqa: SLF001

    async def subscribe(self, topic: str, *, qos: int = 1) -> None:
        await self._client.subscribe(topic, qos=qos)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            raise BusError(f"publishing to {topic} on {self.url} failed: {exc}") from exc

    async def messages(self) -> AsyncIterator[Message]:
        async for message in self._client.messages:
            yield _convert(message)


@contextlib.asynccontextmanager
async def connect(url: str | BrokerUrl, *, timeout: float = 5.0) -> AsyncIterator[Connection]:
    """Open one connection, or raise BusError naming the URL within `timeout` seconds."""
    broker = parse_broker_url(url) if isinstance(url, str) else url
    try:
        client = await asyncio.wait_for(_open_client(broker, timeout=timeout), timeout)
    except (aiomqtt.MqttError, OSError, asyncio.TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        error_class = BrokerRefusedError if _is_refused_login(exc) else BusError
        raise error_class(f"cannot reach the broker at {broker}: {reason}; {_next_step(exc, broker)}") from exc
    try:
        yield Connection(client, broker)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.__aexit__(None, None, None), timeout)


def _convert(message: aiomqtt.Message) -> Message:
    response_topic = None
    correlation_data = None
    properties = message.properties
    if properties is not None:
        response_topic = getattr(properties, "ResponseTopic", None)
        correlation_data = getattr(properties, "CorrelationData", None)
    payload = message.payload if isinstance(message.payload, bytes) else bytes(str(message.payload), "utf-8")
    return Message(str(message.topic), payload, bool(message.retain), response_topic, correlation_data)


class Bus:
    """A connection to the broker that stays up until `stop()`.

    Subscriptions are made again after every reconnection. `publish()`
    raises BusError at once while the broker is unreachable, so callers fail
    fast instead of waiting. `on_state` receives "connected",
    "reconnecting" and "stopped".
    """

    def __init__(
        self,
        url: str | BrokerUrl,
        *,
        subscriptions: list[str],
        on_message: MessageCallback,
        on_state: StateCallback | None = None,
        name: str = "bus",
        will: tuple[str, bytes] | None = None,
        max_backoff_s: float = 2.0,
        mqtt5: bool | None = None,
    ) -> None:
        self.url = parse_broker_url(url) if isinstance(url, str) else url
        self._subscriptions = list(subscriptions)
        self._on_message = on_message
        self._on_state = on_state
        self._name = name
        self._will = aiomqtt.Will(will[0], will[1], qos=1, retain=True) if will else None
        self._max_backoff_s = max_backoff_s
        # None until the first connection shows what the broker speaks.
        self._mqtt5 = mqtt5
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._first_failure = asyncio.Event()
        self._first_failure_reason = ""
        self._first_failure_next_step = ""
        # Topics whose subscription the broker refused (SUBACK code 0x80 or above), such as by its ACL.
        self.refused_subscriptions: set[str] = set()

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "disconnected"
        return f"<Bus {self._name} {self.url} {state}>"

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    @property
    def is_mqtt5(self) -> bool:
        client = self._client
        return client is not None and client._client.protocol == ProtocolVersion.V5  # noqa: SLF001

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._name}-connection")

    async def wait_connected(self, *, timeout: float, fail_fast: bool = False) -> None:
        """Wait until the first connection is up; raise BusError after `timeout` seconds.

        With `fail_fast`, the first failed attempt raises at once, naming
        its reason, as a command-line client should.
        """
        waiters = [asyncio.ensure_future(self._connected.wait())]
        if fail_fast:
            waiters.append(asyncio.ensure_future(self._first_failure.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._connected.is_set():
            return
        if self._first_failure_reason:
            # The first failure names the cause, such as a refused password, better than the time-out does.
            within = "" if fail_fast else f" within {timeout:g} s"
            raise BusError(
                f"cannot reach the broker at {self.url}{within}: {self._first_failure_reason}; {self._first_failure_next_step}"
            )
        raise BusError(f"cannot reach the broker at {self.url} within {timeout:g} s")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set_state("stopped")

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> None:
        """Publish a message; raise BusError when the broker is unreachable."""
        client = self._client
        if client is None or not self._connected.is_set():
            raise BusError(f"not connected to the broker at {self.url}")
        properties = None
        if correlation_data is not None and self.is_mqtt5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = correlation_data
        try:
            await client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        except aiomqtt.MqttError as exc:
            raise BusError(f"publishing to {topic} on {self.url} failed: {exc}") from exc

    async def _run(self) -> None:
        backoff = 0.05
        attempt = 0
        while not self._stopping:
            attempt += 1
            try:
                client = await _open_client(self.url, timeout=5.0, will=self._will, mqtt5=self._mqtt5)
            except (aiomqtt.MqttError, OSError) as exc:
                if not self._first_failure.is_set():
                    self._first_failure_reason = str(exc) or type(exc).__name__
                    self._first_failure_next_step = _next_step(exc, self.url)
                    self._first_failure.set()
                if attempt == 1 or attempt % 20 == 0:
                    log.warning("%s: cannot reach the broker at %s (attempt %d): %s; retrying", self._name, self.url, attempt, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue

            try:
                await self._serve(client)
            except aiomqtt.MqttError as exc:
                log.warning("%s: lost the broker at %s: %s; reconnecting", self._name, self.url, exc)
            finally:
                self._connected.clear()
                self._client = None
                with contextlib.suppress(Exception):
                    await client.__aexit__(None, None, None)
            if not self._stopping:
                self._set_state("reconnecting")
            backoff = 0.05
            attempt = 0

    async def _serve(self, client: aiomqtt.Client) -> None:
        mqtt5 = client._client.protocol == ProtocolVersion.V5  # noqa: SLF001
        self._mqtt5 = mqtt5
        for topic in self._subscriptions:
            if mqtt5:
                # Retain As Published lets the gateway see that a request was retained.
                options = SubscribeOptions(qos=1, retainAsPublished=True)
                granted = await client.subscribe(topic, options=options)
            else:
                granted = await client.subscribe(topic, qos=1)
            if any(_code_value(code) >= 0x80 for code in granted):
                self.refused_subscriptions.add(topic)
                log.error(
                    "%s: the broker at %s refused the subscription to %s; its ACL must let user %s read it",
                    self._name, self.url, topic, self.url.username or "(anonymous)",
                )
        self._client = client
        self._connected.set()
        log.info("%s: connected to %s with MQTT %s", self._name, self.url, "5" if mqtt5 else "3.1.1")
        self._set_state("connected")
        async for message in client.messages:
            try:
                self._on_message(_convert(message))
            except Exception:
                log.exception("%s: handling a message on %s failed", self._name, message.topic)

    def _set_state(self, state: str) -> None:
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:
                log.exception("%s: state callback failed", self._name)
