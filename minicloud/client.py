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
import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from minicloud import errors, protocol
from minicloud.bus import Connection, connect, default_broker_url
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
    """An asyncio client that waits for one reply per request on its own reply topic."""

    def __init__(self, broker_url: str | None = None, *, namespace: str = protocol.DEFAULT_NAMESPACE, connect_timeout: float = 5.0) -> None:
        self.broker_url = broker_url or default_broker_url()
        self.topics = protocol.Topics(namespace)
        self._connect_timeout = connect_timeout
        self._reply_topic = self.topics.new_reply_topic()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._connection: Connection | None = None
        self._listener: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncClient:
        self._stack = contextlib.AsyncExitStack()
        try:
            self._connection = await self._stack.enter_async_context(connect(self.broker_url, timeout=self._connect_timeout))
            await asyncio.wait_for(self._connection.subscribe(self._reply_topic, qos=1), self._connect_timeout)
        except BaseException:
            await self._stack.aclose()
            raise
        self._listener = asyncio.create_task(self._listen(), name="client-replies")
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        if self._stack is not None:
            await self._stack.aclose()

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            raise BusError("the client is not connected; use it as 'async with AsyncClient(...)'")
        return self._connection

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
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = future
        try:
            await self.connection.publish(topic, request.to_payload(), qos=1)
            return await asyncio.wait_for(future, wait_s)
        except asyncio.TimeoutError:
            raise InvocationError(
                errors.platform_error(
                    errors.TIMEOUT,
                    f"no reply to request {request.id} on {topic} within {wait_s:g} s; "
                    f"is a cloud running at {self.broker_url}?",
                ),
                request_id=request.id,
            ) from None
        finally:
            self._pending.pop(request.id, None)

    async def _listen(self) -> None:
        try:
            async for message in self.connection.messages():
                try:
                    reply = protocol.loads(message.payload)
                except ValueError:
                    continue
                if not isinstance(reply, dict):
                    continue
                future = self._pending.get(reply.get("id"))
                if future is not None and not future.done():
                    future.set_result(reply)
        except Exception as exc:  # The connection is gone: fail every waiting request.
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BusError(f"lost the broker at {self.broker_url}: {exc}"))


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
