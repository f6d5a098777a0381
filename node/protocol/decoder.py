"""Incremental NDJSON line splitter with a hard line-length limit (PROTOCOL §2).

Takes arbitrary byte chunks (DATA frames cut lines anywhere) and returns complete
lines. It refuses a line as soon as more than ``max_line`` bytes of it are held
without a newline, so a peer sending an endless line costs at most ``max_line``
bytes of memory.
"""

from __future__ import annotations

from node.protocol.errors import ErrorCode, ProtocolError


class LineDecoder:
    """Splits a byte stream into lines; each line keeps a trailing ``\\r`` if it had one.

    The ``\\r`` is kept so that the caller knows the line's length as CREDIT counts
    it (§4.2 counts the ``\\r``); :func:`node.frames.parse_frame` strips it.
    Empty lines (``b""`` or ``b"\\r"``) are dropped here.

    ``feed`` returns the complete lines in order; when a line overflows, the lines
    before it are still returned and a :class:`ProtocolError` (MESSAGE_TOO_LARGE) is
    the last item, so nothing the peer sent before the violation is lost. After that
    the decoder is dead: every later ``feed`` returns just the error again.
    """

    __slots__ = ("_buf", "_failed", "max_line")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._failed = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | ProtocolError]:
        if self._failed:
            return [self._error()]
        if not data:
            return []
        nl = data.rfind(b"\n")
        if nl < 0:
            if len(self._buf) + len(data) > self.max_line:
                return [self._fail()]
            self._buf += data
            return []
        if self._buf:
            head = bytes(self._buf) + data[: nl + 1]
            self._buf.clear()
        else:
            head = data[: nl + 1]
        tail = data[nl + 1 :]
        parts = head.split(b"\n")
        parts.pop()  # the empty piece after the last newline
        limit = self.max_line
        lines: list[bytes | ProtocolError] = []
        for line in parts:
            if len(line) > limit:
                lines.append(self._fail())
                return lines
            if line and line != b"\r":
                lines.append(line)
        if len(tail) > limit:
            lines.append(self._fail())
            return lines
        self._buf += tail
        return lines

    def _error(self) -> ProtocolError:
        return ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"line longer than {self.max_line} bytes")

    def _fail(self) -> ProtocolError:
        self._failed = True
        self._buf.clear()
        return self._error()
