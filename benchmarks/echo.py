"""An MQTT echo server: publish every message on PREFIX/request to PREFIX/reply, at QoS 1.

It is the far end of the raw request/reply measurements, a plain MQTT
client in a process of its own, as a worker is. It prints "ready" once
it is subscribed, and runs until SIGTERM.

Usage: python -m benchmarks.echo BROKER_URL PREFIX
"""

from __future__ import annotations

import asyncio
import logging
import sys

from minicloud.bus import connect


async def serve(url: str, prefix: str) -> None:
    async with connect(url) as connection:
        await connection.subscribe(f"{prefix}/request")
        print("ready", flush=True)
        # Each reply is its own task, so many requests in flight get replies
        # without waiting for the PUBACK of the previous reply.
        pending: set[asyncio.Task] = set()
        async for message in connection.messages():
            task = asyncio.create_task(connection.publish(f"{prefix}/reply", message.payload))
            pending.add(task)
            task.add_done_callback(pending.discard)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 64
    # aiomqtt warns on the "mqtt" logger whenever more than 10 publishes
    # await their PUBACK, which happens here under load on purpose.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    try:
        asyncio.run(serve(sys.argv[1], sys.argv[2]))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
