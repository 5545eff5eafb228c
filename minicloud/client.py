"""A Python client for scripts: invoke functions and control a cloud over MQTT.

    async with AsyncClient("mqtt://127.0.0.1:1883") as cloud:
        result = await cloud.invoke("hello", {"name": "x"})

    with Client() as cloud:                      # the same, without asyncio
        print(cloud.invoke("hello", {"name": "x"}).result)

A function's error raises FunctionError; a platform error (not found,
throttled, timed out, unreachable) raises InvocationError. Both carry the
error object and the report.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from minicloud import errors, protocol
from minicloud.bus import Bus, Message, default_broker_url, parse_broker_url
from minicloud.errors import BusError, MinicloudError

DEFAULT_WAIT_S = 60.0


@dataclass(frozen=True)
class InvokeResult:
    """A successful reply: the handler's result and the invocation's report."""

    id: str
    result: Any
    report: dict[str, Any] | None


class InvocationError(MinicloudError):
    """An invocation or control request that ended with an error reply."""

    def __init__(self, error: dict[str, Any], report: dict[str, Any] | None = None, request_id: str | None = None) -> None:
        super().__init__(f"{error.get('type')}: {error.get('message')}")
        self.error = error
        self.report = report
        self.request_id = request_id

    @property
    def error_type(self) -> str:
        return str(self.error.get("type"))

    @property
    def is_function_error(self) -> bool:
        return self.error.get("source") == errors.SOURCE_FUNCTION


class FunctionError(InvocationError):
    """The handler raised; `error` carries its class name, message and stack."""


class AsyncClient:
    """An asyncio client that waits for one reply per request on its own reply topic.

    Its connection reconnects after the broker comes back, and the reply
    topic is subscribed again, so a request made before an outage can still
    get its reply after it. A request made during the outage fails at once
    with BusError.
    """

    def __init__(self, broker_url: str | None = None, *, namespace: str = protocol.DEFAULT_NAMESPACE, connect_timeout: float = 5.0) -> None:
        self.broker_url = broker_url or default_broker_url()
        self.topics = protocol.Topics(namespace)
        self._connect_timeout = connect_timeout
        self._username = parse_broker_url(self.broker_url).username
        self._reply_topic = self.topics.new_reply_topic(self._username)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        # request id -> (topic, payload) of every request still waiting for its reply
        self._sent: dict[str, tuple[str, bytes]] = {}
        self._bus: Bus | None = None

    async def __aenter__(self) -> AsyncClient:
        self._bus = Bus(
            self.broker_url, subscriptions=[self._reply_topic], on_message=self._on_reply,
            on_state=self._on_state, name="client",
        )
        self._bus.start()
        try:
            await self._bus.wait_connected(timeout=self._connect_timeout, fail_fast=True)
        except BaseException:
            await self._bus.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._bus is not None:
            await self._bus.stop()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish a raw message; raise BusError while the broker is unreachable."""
        await self._connected_bus().publish(topic, payload, qos=qos, retain=retain)

    async def invoke(self, function: str, event: Any = None, *, timeout: float | None = None, request_id: str | None = None) -> InvokeResult:
        """Invoke a function and wait for its reply.

        `timeout` (seconds) also bounds the request's wait for a worker on
        the cloud's side. Raises FunctionError or InvocationError.
        """
        request = protocol.InvokeRequest(
            id=request_id or protocol.new_request_id(),
            reply_to=self._reply_topic,
            event={} if event is None else event,
            timeout_ms=int(timeout * 1000) if timeout else None,
        )
        wait_s = (timeout + 1.0) if timeout else DEFAULT_WAIT_S
        reply = await self._request(self.topics.invoke(function), request, wait_s)
        return _result_of(reply)

    async def control(self, action: str, arguments: dict[str, Any] | None = None, *, timeout: float = 10.0) -> Any:
        """Send a control request (deploy, scale, remove, ls, energy, logs) and return its result."""
        request = protocol.InvokeRequest(id=protocol.new_request_id(), reply_to=self._reply_topic, event=arguments or {})
        reply = await self._request(self.topics.control(action), request, timeout)
        return _result_of(reply).result

    async def deploy(self, path: str) -> dict[str, Any]:
        return await self.control("deploy", {"path": path})

    async def scale(self, function: str, *, min_warm: int | None = None, max_concurrency: int | None = None) -> dict[str, Any]:
        arguments: dict[str, Any] = {"function": function}
        if min_warm is not None:
            arguments["min"] = min_warm
        if max_concurrency is not None:
            arguments["max"] = max_concurrency
        return await self.control("scale", arguments)

    async def ls(self) -> dict[str, Any]:
        return await self.control("ls")

    async def energy(self) -> dict[str, Any]:
        return await self.control("energy")

    async def logs(self, function: str, *, limit: int = 200) -> list[dict[str, Any]]:
        return (await self.control("logs", {"function": function, "limit": limit}))["lines"]

    async def _request(self, topic: str, request: protocol.InvokeRequest, wait_s: float) -> dict[str, Any]:
        payload = request.to_payload()
        if len(payload) > protocol.MAX_PAYLOAD_BYTES:
            # Checked here too: a broker with a packet size limit would drop the
            # connection instead of passing the request on to be rejected.
            raise InvocationError(protocol.oversized_request_error(len(payload)).to_dict(), request_id=request.id)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = future
        self._sent[request.id] = (topic, payload)
        try:
            await self._connected_bus().publish(topic, payload, qos=1)
            return await asyncio.wait_for(future, wait_s)
        except asyncio.TimeoutError:
            hint = f"is a cloud running at {parse_broker_url(self.broker_url)}?"
            if self._username:
                # A broker drops a publish that its ACL forbids without telling an MQTT 3.1.1 client.
                hint += f" And may user {self._username} publish on {topic} (the broker's ACL)?"
            raise InvocationError(
                errors.platform_error(errors.TIMEOUT, f"no reply to request {request.id} on {topic} within {wait_s:g} s; {hint}"),
                request_id=request.id,
            ) from None
        finally:
            self._pending.pop(request.id, None)
            self._sent.pop(request.id, None)

    def _on_state(self, state: str) -> None:
        if state == "connected" and self._sent:
            # A request published as the broker went away may be lost. The
            # gateway runs each id once, so sending it again is safe: a copy of
            # a request it has seen gets the first one's reply, or none.
            task = asyncio.ensure_future(self._resend(list(self._sent.values())))
            task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _resend(self, requests: list[tuple[str, bytes]]) -> None:
        for topic, payload in requests:
            await self._connected_bus().publish(topic, payload, qos=1)

    def _on_reply(self, message: Message) -> None:
        try:
            reply = protocol.loads(message.payload)
        except ValueError:
            return
        if not isinstance(reply, dict):
            return
        future = self._pending.get(reply.get("id"))
        if future is not None and not future.done():
            future.set_result(reply)

    def _connected_bus(self) -> Bus:
        if self._bus is None:
            raise BusError("the client is not connected; use it as 'async with AsyncClient(...)'")
        return self._bus


def _result_of(reply: dict[str, Any]) -> InvokeResult:
    if reply.get("ok"):
        return InvokeResult(reply.get("id"), reply.get("result"), reply.get("report"))
    error = reply.get("error") or {}
    if error.get("source") == errors.SOURCE_FUNCTION:
        raise FunctionError(error, reply.get("report"), reply.get("id"))
    raise InvocationError(error, reply.get("report"), reply.get("id"))


class Client:
    """The blocking form of AsyncClient, for scripts without asyncio.

    It runs an event loop in a background thread, so one connection serves
    every call.
    """

    def __init__(self, broker_url: str | None = None, *, namespace: str = protocol.DEFAULT_NAMESPACE, connect_timeout: float = 5.0) -> None:
        self._async = AsyncClient(broker_url, namespace=namespace, connect_timeout=connect_timeout)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="minicloud-client", daemon=True)

    def __enter__(self) -> Client:
        self._thread.start()
        try:
            self._call(self._async.__aenter__())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._call(self._async.__aexit__(None, None, None))
        finally:
            self._stop_loop()

    def invoke(self, function: str, event: Any = None, *, timeout: float | None = None) -> InvokeResult:
        return self._call(self._async.invoke(function, event, timeout=timeout))

    def control(self, action: str, arguments: dict[str, Any] | None = None, *, timeout: float = 10.0) -> Any:
        return self._call(self._async.control(action, arguments, timeout=timeout))

    def deploy(self, path: str) -> dict[str, Any]:
        return self._call(self._async.deploy(path))

    def scale(self, function: str, *, min_warm: int | None = None, max_concurrency: int | None = None) -> dict[str, Any]:
        return self._call(self._async.scale(function, min_warm=min_warm, max_concurrency=max_concurrency))

    def ls(self) -> dict[str, Any]:
        return self._call(self._async.ls())

    def energy(self) -> dict[str, Any]:
        return self._call(self._async.energy())

    def logs(self, function: str, *, limit: int = 200) -> list[dict[str, Any]]:
        return self._call(self._async.logs(function, limit=limit))

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
