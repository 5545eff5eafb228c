"""An MQTT echo server: publish every message on PREFIX/request to PREFIX/reply.

Requests on PREFIX/request get their reply at QoS 1, and requests on
PREFIX/request0 get theirs on PREFIX/reply0 at QoS 0.

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
        await connection.subscribe(f"{prefix}/request", qos=1)
        await connection.subscribe(f"{prefix}/request0", qos=0)
        print("ready", flush=True)
        # Each reply is its own task, so many requests in flight get replies
        # without waiting for the PUBACK of the previous reply.
        pending: set[asyncio.Task] = set()
        async for message in connection.messages():
            if message.topic.endswith("/request0"):
                reply = connection.publish(f"{prefix}/reply0", message.payload, qos=0)
            else:
                reply = connection.publish(f"{prefix}/reply", message.payload, qos=1)
            task = asyncio.create_task(reply)
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
