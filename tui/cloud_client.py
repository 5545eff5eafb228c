"""The requests the UI sends to the cloud, behind an interface that tests replace with a fake."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from minicloud.client import AsyncClient, InvokeResult
from minicloud.errors import BusError


class CloudClient(Protocol):
    """Invoke and control requests; each raises InvocationError, FunctionError or BusError."""

    async def invoke(self, function: str, event: Any) -> InvokeResult: ...

    async def deploy(self, path: str) -> dict[str, Any]: ...

    async def scale(self, function: str, *, min_warm: int | None, max_concurrency: int | None) -> dict[str, Any]: ...

    async def logs(self, function: str, *, limit: int) -> list[dict[str, Any]]: ...

    async def energy(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class BusCloudClient:
    """A CloudClient over minicloud's AsyncClient that connects on first use.

    After a BusError the connection is dropped, so the next request connects
    again; that is how commands recover after the broker comes back.
    """

    def __init__(self, broker_url: str, namespace: str, *, connect_timeout: float = 3.0) -> None:
        self._broker_url = broker_url
        self._namespace = namespace
        self._connect_timeout = connect_timeout
        self._client: AsyncClient | None = None

    async def invoke(self, function: str, event: Any) -> InvokeResult:
        return await self._call(lambda client: client.invoke(function, event))

    async def deploy(self, path: str) -> dict[str, Any]:
        return await self._call(lambda client: client.deploy(path))

    async def scale(self, function: str, *, min_warm: int | None, max_concurrency: int | None) -> dict[str, Any]:
        return await self._call(lambda client: client.scale(function, min_warm=min_warm, max_concurrency=max_concurrency))

    async def logs(self, function: str, *, limit: int) -> list[dict[str, Any]]:
        return await self._call(lambda client: client.logs(function, limit=limit))

    async def energy(self) -> dict[str, Any]:
        return await self._call(lambda client: client.energy())

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def _call(self, request: Any) -> Any:
        if self._client is None:
            client = AsyncClient(self._broker_url, namespace=self._namespace, connect_timeout=self._connect_timeout)
            await client.__aenter__()
            self._client = client
        try:
            return await request(self._client)
        except BusError:
            await self.close()
            raise
