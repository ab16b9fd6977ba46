"""uvicorn's httptools protocol with the bounds on clients it lacks.

httptools parses request heads of any size and any number of headers, and a
connection that sends nothing, or a head a byte at a time, is kept open for
good: a few such clients hold memory and file descriptors without end. Here:

- a request head is bounded in size and in header count (431). Fields are
  counted as the parser hands them over, and the raw bytes of a head still
  open are counted too, since the parser holds an unfinished field back;
- a connection must bring a whole head within a time once it has nothing
  being answered (408, or a quiet close when no request had begun), which
  also ends connections kept open by blank lines or by a request body trickled
  after its answer;
- a head overdue while a response is still streaming ends the connection
  after that response, never in the middle of it;
- malformed requests get error JSON, not uvicorn's plain text;
- after a refusal the connection is half-closed and what the client still
  sends is read and dropped for a moment: closing with unread bytes would
  reset the connection and lose the refusal on the way.
"""

import asyncio
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.errors import API_VERSION

MAX_HEAD_BYTES = 64 << 10
MAX_RAW_HEAD_BYTES = MAX_HEAD_BYTES + (64 << 10)  # the raw count may include the end of the request before
MAX_HEADERS = 256
HEAD_TIMEOUT = 30.0
LINGER = 2.0
TLS_HANDSHAKE = 0x16  # the first byte of a TLS ClientHello record

log = logging.getLogger("pullgate.server")


class _Refused(Exception):
    """Stops the parser after the refusal was sent."""


def refusal(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 response carrying registry error JSON, closing the connection."""
    body = json.dumps({"errors": [{"code": "UNSUPPORTED", "message": message, "detail": {}}]}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"{API_VERSION[0]}: {API_VERSION[1]}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode("ascii") + body


class GuardedHttpTools(HttpToolsProtocol):
    """Request heads of at most ``MAX_HEAD_BYTES`` and ``MAX_HEADERS``, complete within ``head_timeout``."""

    head_timeout = HEAD_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_bytes = 0
        self._raw_head_bytes = 0
        self._head_started = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._tls_probe: bool | None = None  # known from the first byte
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # dropped while the refusal is on its way
        if self._head_timer is None and not self._answering():
            self._arm()  # bytes with nothing being answered: a head is due
        if self._tls_probe is None and data:
            self._tls_probe = data[0] == TLS_HANDSHAKE
        super().data_received(data)
        if self._head_started and not self._refused and not self.transport.is_closing() and not self._ending():
            self._raw_head_bytes += len(data)
            if self._raw_head_bytes > MAX_RAW_HEAD_BYTES:
                self._refuse_now(f"request head larger than {MAX_HEAD_BYTES // 1024} KiB")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._raw_head_bytes = 0
        self._head_started = True
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)
        if len(self.headers) > MAX_HEADERS:
            self._refuse(f"more than {MAX_HEADERS} request headers")

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_started = False
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request the parser rejects, as error JSON; none after a refusal of ours."""
        if self._refused or self.transport.is_closing():
            return
        if self._tls_probe:  # podman, skopeo and others try https first on a registry: not a fault
            log.info("answered a TLS handshake from %s on this plain-HTTP port with 400", _peer(self.client))
        else:
            log.warning("refused a request from %s: %s", _peer(self.client), msg)
        if self._answering():
            self._end_after_response()
            return
        self._answer_and_close(refusal(400, "Bad Request", f"invalid HTTP request: {msg}"))

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _ending(self) -> bool:
        return self._answering() and self.cycle is not None and not self.cycle.keep_alive

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(f"request head larger than {MAX_HEAD_BYTES // 1024} KiB")

    def _refuse(self, message: str) -> None:
        """From a parser callback: answer 431, close, and stop the parser."""
        self._refuse_now(message)
        raise _Refused(message)

    def _refuse_now(self, message: str) -> None:
        log.warning("refused a request from %s: %s", _peer(self.client), message)
        self._disarm()
        if self._answering():
            self._end_after_response()
            return
        self._answer_and_close(refusal(431, "Request Header Fields Too Large", message))

    def _answer_and_close(self, answer: bytes) -> None:
        """Send the refusal, end the sending side, drop what still comes for ``LINGER`` seconds, close."""
        self._refused = True
        self._disarm()
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)

    def _end_after_response(self) -> None:
        """A pipelined request went wrong while a response streams: read no more, close once it is sent."""
        assert self.cycle is not None
        self.cycle.keep_alive = False  # uvicorn closes the connection once this response is done
        self.flow.pause_reading()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_overdue)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if self._answering():
            self._end_after_response()
            return
        if self._head_started:
            log.warning("closed a connection from %s: no complete request head within %gs",
                        _peer(self.client), self.head_timeout)
            self._answer_and_close(refusal(408, "Request Timeout",
                                           f"no complete request head within {self.head_timeout:g}s"))
            return
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
