"""Protocol error codes (PROTOCOL §4.6) and the one exception the core raises.

Every failure the sans-IO core detects is a :class:`ProtocolError` carrying a code
from the table, so the shell can turn it into an ERROR frame or an HTTP status
without guessing. Anything else escaping the core is a bug.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_MEDIA_TYPE = "BAD_MEDIA_TYPE"
    BAD_JSON = "BAD_JSON"
    BAD_FRAME = "BAD_FRAME"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    HELLO_REQUIRED = "HELLO_REQUIRED"
    VERSION_UNSUPPORTED = "VERSION_UNSUPPORTED"
    GROUP_UNSUPPORTED = "GROUP_UNSUPPORTED"
    AUTH_FAILED = "AUTH_FAILED"
    SEQUENCE_VIOLATION = "SEQUENCE_VIOLATION"
    FLOW_CONTROL_VIOLATION = "FLOW_CONTROL_VIOLATION"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    HASH_MISMATCH = "HASH_MISMATCH"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    EQUIVOCATION = "EQUIVOCATION"
    TIMEOUT = "TIMEOUT"
    OVERLOADED = "OVERLOADED"
    SHUTDOWN = "SHUTDOWN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    INTERNAL = "INTERNAL"


NON_FATAL: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.UNKNOWN_TYPE,
        ErrorCode.HASH_MISMATCH,
        ErrorCode.UNKNOWN_KEY,
        ErrorCode.BAD_SIGNATURE,
        ErrorCode.EQUIVOCATION,
        ErrorCode.NOT_FOUND,
        ErrorCode.METHOD_NOT_ALLOWED,
    }
)

# §3: the HTTP status that carries each code outside a stream.
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_JSON: 400,
    ErrorCode.BAD_FRAME: 400,
    ErrorCode.AUTH_FAILED: 403,
    ErrorCode.BAD_SIGNATURE: 403,
    ErrorCode.UNKNOWN_KEY: 403,
    ErrorCode.GROUP_UNSUPPORTED: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.EQUIVOCATION: 409,
    ErrorCode.MESSAGE_TOO_LARGE: 413,
    ErrorCode.BAD_MEDIA_TYPE: 415,
    ErrorCode.HASH_MISMATCH: 422,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.SHUTDOWN: 503,
}


def is_fatal(code: ErrorCode | str) -> bool:
    return code not in NON_FATAL


class ProtocolError(Exception):
    """A violation of the contract, with the code the peer must be told."""

    def __init__(self, code: ErrorCode, message: str = "", ref: str | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else str(code))
        self.code = code
        self.message = message or str(code)
        self.ref = ref

    @property
    def fatal(self) -> bool:
        return is_fatal(self.code)
