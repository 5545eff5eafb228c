"""Waits {"ms": 500} milliseconds without using the CPU, as a call to a slow API does.

It is an async handler: the wait is an asyncio sleep, so wall time passes
while CPU time stays near zero.
"""

import asyncio


async def handler(event, context):
    ms = float(event.get("ms", 500))
    if ms < 0:
        raise ValueError(f"ms must be 0 or more, got {ms}")
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms, "remaining_ms": context.get_remaining_time_in_millis()}
