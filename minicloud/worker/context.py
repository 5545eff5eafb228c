"""The `context` object passed to handlers, shaped like AWS Lambda's."""

from __future__ import annotations

import time
from typing import Any

ACCOUNT_ID = "000000000000"
REGION = "local"


class LambdaContext:
    """Invocation context with the attributes of the AWS Lambda Python runtime.

    `memory_limit_in_mb` is a string, as in AWS's runtime, which reads it
    from the environment; handlers that call int() on it work unchanged.
    """

    function_version = "$LATEST"
    identity: Any = None
    client_context: Any = None

    def __init__(
        self,
        *,
        request_id: str,
        function_name: str,
        memory_mb: int,
        log_stream_name: str,
        deadline_monotonic: float,
    ) -> None:
        self.aws_request_id = request_id
        self.request_id = request_id
        self.function_name = function_name
        self.memory_limit_in_mb = str(memory_mb)
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        self._deadline_monotonic = deadline_monotonic

    def get_remaining_time_in_millis(self) -> int:
        """Return the milliseconds left before the invocation times out, never below 0."""
        remaining = self._deadline_monotonic - time.monotonic()
        return max(0, int(remaining * 1000))

    def __repr__(self) -> str:
        return f"<LambdaContext {self.function_name} request_id={self.aws_request_id}>"
