"""Error types that travel on the bus, and the exceptions that carry them.

An error on the bus is `{"type", "message", "source", "stack"?}`. The
source is "function" when the handler raised, and "platform" when minicloud
itself refused or lost the invocation.
"""

from __future__ import annotations

from typing import Any

# Platform error types, as they appear in the "type" field of an error.
FUNCTION_NOT_FOUND = "FunctionNotFound"
INVALID_REQUEST = "InvalidRequest"
PAYLOAD_TOO_LARGE = "PayloadTooLarge"
THROTTLED = "Throttled"
TIMEOUT = "Timeout"
INIT_TIMEOUT = "InitTimeout"
IMPORT_MODULE_ERROR = "ImportModuleError"
SERIALIZATION_ERROR = "SerializationError"
OUT_OF_MEMORY = "OutOfMemory"
WORKER_CRASHED = "WorkerCrashed"
UNAVAILABLE = "Unavailable"

PLATFORM_ERROR_TYPES = frozenset(
    {
        FUNCTION_NOT_FOUND,
        INVALID_REQUEST,
        PAYLOAD_TOO_LARGE,
        THROTTLED,
        TIMEOUT,
        INIT_TIMEOUT,
        IMPORT_MODULE_ERROR,
        SERIALIZATION_ERROR,
        OUT_OF_MEMORY,
        WORKER_CRASHED,
        UNAVAILABLE,
    }
)

SOURCE_FUNCTION = "function"
SOURCE_PLATFORM = "platform"


class MinicloudError(Exception):
    """Base of every exception minicloud raises on purpose."""


class PlatformError(MinicloudError):
    """An invocation or control request that the platform rejected or lost.

    `error_type` is one of the platform types above, so the error can be
    sent to the caller as it is.
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.error_type, "message": self.message, "source": SOURCE_PLATFORM}


class BusError(MinicloudError):
    """The broker could not be reached, or the connection to it was lost."""


class BrokerRefusedError(BusError):
    """The broker rejected the user name or password in its CONNACK."""


class ManifestError(MinicloudError):
    """A function folder whose function.toml or handler is invalid."""


def platform_error(error_type: str, message: str) -> dict[str, Any]:
    """Build the error object of a platform failure."""
    return {"type": error_type, "message": message, "source": SOURCE_PLATFORM}
