"""uvicorn's httptools protocol with the bounds on clients it lacks.

httptools parses request heads of any size and any number of headers, and a
connection that sends nothing, or a head a byte at a time, is kept open for
good: a few such clients hold memory and file descriptors without end. Here a
request head is bounded in size and in header count (431 beyond), and must be
complete within a time (408, or a quiet close when nothing was sent). After a
response, uvicorn's own keep-alive timeout closes an idle connection.
"""

import asyncio
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 << 10
MAX_HEADERS = 256
HEAD_TIMEOUT = 30.0

log = logging.getLogger("pullgate.server")


class _Refused(Exception):
    """Stops the parser after the refusal was sent."""


def refusal(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response carrying registry error JSON, closing the connection."""
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": {}}]}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode("ascii") + body


class GuardedHttpTools(HttpToolsProtocol):
    """Request heads of at most ``MAX_HEAD_BYTES`` and ``MAX_HEADERS``, complete within ``head_timeout``."""

    head_timeout = HEAD_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_bytes = 0
        self._head_started = False
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes, self._head_started = 0, True
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)
        if len(self.headers) > MAX_HEADERS:
            self._refuse(431, "Request Header Fields Too Large", f"more than {MAX_HEADERS} request headers")

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_started = False
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self.transport.is_closing():  # not after a refusal of this class's own
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, "Request Header Fields Too Large",
                         f"request head larger than {MAX_HEAD_BYTES // 1024} KiB")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        log.warning("refused a request from %s: %s", _peer(self.client), message)
        self._disarm()
        self.transport.write(refusal(status, reason, "UNSUPPORTED", message))
        self.transport.close()
        raise _Refused(message)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_overdue)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_started:
            log.warning("closed a connection from %s: no complete request head within %gs",
                        _peer(self.client), self.head_timeout)
            self.transport.write(refusal(408, "Request Timeout", "UNAVAILABLE",
                                         f"no complete request head within {self.head_timeout:g}s"))
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
