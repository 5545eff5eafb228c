"""Greets a name and counts the invocations this worker has served.

The counter is a module global, so it shows warm reuse: it starts at 1 in
a new worker (a cold start) and goes up while the same worker stays warm.
"""

import os

GREETING = os.environ.get("GREETING", "hello")
invocations = 0


def handler(event, context):
    global invocations
    invocations += 1
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"greeting {name} (invocation {invocations} of this worker)")
    return {
        "message": f"{GREETING}, {name}!",
        "warm_invocations": invocations,
        "request_id": context.aws_request_id,
    }
