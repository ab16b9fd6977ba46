"""An HTTP/1.1 transport for httpx that reads big bodies in big pieces.

httpx moves a body through httpcore, h11 and anyio in pieces of at most
64 KiB, several Python layers a piece: for a layer of gigabytes that per-piece
cost, not the network, sets the speed. This transport speaks plain HTTP/1.1
itself (one request a connection, ``Connection: close``) and has the kernel
write a body straight into buffers of up to a few MiB, each handed on whole,
so a blob costs a few hundred Python steps per GiB. Everything above the wire
stays httpx's: auth flows, redirects and the Authorization header they drop
across hosts, the request and response objects.

The size of a piece comes from a budget shared by the bodies being read, so
the buffers of many concurrent downloads stay within a few times that budget.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

MAX_HEAD = 64 << 10
MAX_HEADERS = 200
MAX_CHUNK_LINE = 4096
MAX_OTHER_BODY = 64 << 10
MAX_INTERIM = 5
MANY_CHUNKS = 4096
SMALL_CHUNK = 256
MIN_PIECE = 64 << 10
MAX_PIECE = 4 << 20
PIECE_BUDGET = 16 << 20
PATIENCE = 0.1
_NO_BODY = frozenset({204, 304})


class PieceBudget:
    """Splits a fixed amount of buffer memory between the bodies being read."""

    def __init__(self, total: int = PIECE_BUDGET, smallest: int = MIN_PIECE, largest: int = MAX_PIECE) -> None:
        self.total, self.smallest, self.largest = total, smallest, largest
        self.readers = 0

    def piece(self) -> int:
        return max(self.smallest, min(self.largest, self.total // max(self.readers, 1)))


class _Reader(asyncio.BufferedProtocol):
    """Receives into a buffer the consumer hands it; wakes the consumer when it is full, or the stream ends.

    Reading pauses whenever no buffer is waiting to be filled, so the kernel's
    socket buffer, not this process, holds what the consumer has not asked for.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = memoryview(bytearray(0))
        self._filled = 0
        self._need = 0
        self._waiter: asyncio.Future[None] | None = None
        self.last_data = 0.0
        self.ended = False
        self.error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer[self._filled:]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        self.last_data = time.monotonic()  # the clock of asyncio's loops
        if self._filled == len(self._buffer):
            self._pause()
            self._wake()
        elif self._filled >= self._need:
            self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.error = exc
        self._wake()

    def _pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def receive(self, buffer: bytearray, need: int, timeout: float | None) -> int:
        """Fill ``buffer`` with at least ``need`` bytes: fewer at the end of the stream, or when the
        upstream is slow and what came within ``PATIENCE`` is better handed on than held.

        The timeout bounds a wait without any data, not the whole fill.
        """
        loop = asyncio.get_running_loop()
        self._buffer, self._filled, self._need = memoryview(buffer), 0, need
        started = self.last_data = loop.time()
        patience = PATIENCE if timeout is None else min(PATIENCE, timeout)
        try:
            while self._filled < need and not self.ended:
                self._waiter = loop.create_future()
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.resume_reading()
                try:
                    await asyncio.wait_for(self._waiter, patience)
                except TimeoutError:
                    now = loop.time()
                    if self._filled and now - started >= patience:
                        break
                    if timeout is not None and now - self.last_data >= timeout:
                        raise httpx.ReadTimeout(f"no data for {timeout:g}s") from None
            return self._filled
        finally:
            self._pause()
            self._buffer.release()  # no view of ours keeps the buffer counted as held
            self._buffer, self._waiter = memoryview(bytearray(0)), None


def _unheld_count() -> int:
    """What ``sys.getrefcount`` says, on this interpreter, of a buffer held only by ``_Buffers``."""
    probe = [bytearray(1)]
    for buffer in probe:
        return sys.getrefcount(buffer)
    raise AssertionError("unreachable")


_UNHELD = _unheld_count()


class _Buffers:
    """The buffers a body is received into, each filled again once nothing else holds it.

    A piece is handed on as it is, with no copy: the consumer may keep it, queue
    it for hashing on another thread, or give it to a transport that keeps it
    until sent. CPython counts references, so a buffer whose only holder is
    this list is free; reusing it spares the page faults and zeroing of a new
    allocation of MiBs for every piece. A free buffer of a size no longer asked
    for (more readers now share the budget) is let go at once.
    """

    KEEP = 6

    def __init__(self) -> None:
        self._kept: list[bytearray] = []

    def take(self, size: int) -> bytearray:
        reused = None
        kept = []
        for buffer in self._kept:  # the same pattern _unheld_count measures
            if sys.getrefcount(buffer) != _UNHELD:
                kept.append(buffer)
            elif len(buffer) == size and reused is None:
                reused = buffer
                kept.append(buffer)
        if reused is None:
            reused = bytearray(size)
            kept.append(reused)
        self._kept = kept[-self.KEEP:]
        return reused

    def clear(self) -> None:
        self._kept = []


class _Connection:
    """One connection's bytes: what the head left over, then the reader's buffers."""

    def __init__(self, reader: _Reader, timeout: float | None) -> None:
        self.reader = reader
        self.timeout = timeout
        self.pending = bytearray()
        self.buffers = _Buffers()

    async def some(self, limit: int) -> bytes | bytearray:
        """Up to ``limit`` bytes, at least one unless the stream has ended: what is pending, else new bytes."""
        if self.pending:
            piece = self.pending[:limit]
            del self.pending[:limit]
            return piece
        return await self._more(limit)

    async def _more(self, limit: int) -> bytearray:
        """Up to ``limit`` new bytes from the connection, at least one unless it has ended."""
        buffer = bytearray(limit)
        got = await self.reader.receive(buffer, 1, self.timeout)
        self._check_error()
        return buffer[:got]  # a copy: a failed read's traceback may still pin a view of the buffer

    async def exactly(self, size: int) -> bytes | bytearray:
        """``size`` bytes, or fewer when the stream ends before; received straight into one buffer."""
        if self.pending:
            return await self.some(size)
        buffer = self.buffers.take(size)
        got = await self.reader.receive(buffer, size, self.timeout)
        self._check_error()
        return buffer if got == size else buffer[:got]

    async def line(self) -> bytes:
        """One CRLF-ended line of a chunked body, without the CRLF."""
        while b"\n" not in self.pending:
            if len(self.pending) > MAX_CHUNK_LINE:
                raise httpx.RemoteProtocolError("a chunked body's size line is too long")
            more = await self._more(MAX_CHUNK_LINE)
            if not more:
                raise httpx.RemoteProtocolError("the connection closed inside a chunked body")
            self.pending += more
        line, _, self.pending = self.pending.partition(b"\n")
        return bytes(line.rstrip(b"\r"))

    def _check_error(self) -> None:
        if self.reader.error is not None:
            raise httpx.ReadError(str(self.reader.error) or type(self.reader.error).__name__)

    def send(self, data: bytes) -> None:
        """Write ``data``; a request head is small, so the transport's own buffer takes it whole."""
        if self.reader.transport is not None:
            self.reader.transport.write(data)

    def close(self) -> None:
        """Close the connection and let go of the buffers now, not when a garbage collection finds them."""
        self.buffers.clear()
        if self.reader.transport is not None:
            self.reader.transport.close()


class _Body(httpx.AsyncByteStream):
    """A response body framed by Content-Length, chunked encoding, or the connection's end."""

    def __init__(self, connection: _Connection, budget: PieceBudget, length: int | None, chunked: bool,
                 bound: int | None) -> None:
        self.connection, self.budget, self.length, self.chunked = connection, budget, length, chunked
        self.bound = bound
        self.open = True
        budget.readers += 1

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        try:
            async for piece in self._chunked() if self.chunked else self._plain():
                received += len(piece)
                if self.bound is not None and received > self.bound:
                    raise httpx.RemoteProtocolError(f"an answer that is not a success has a body over "
                                                    f"{self.bound // 1024} KiB")
                yield piece  # type: ignore[misc]  # a buffer that nothing writes to while it is held
        finally:
            await self.aclose()

    async def _plain(self) -> AsyncIterator[bytes | bytearray]:
        left = self.length
        while left is None or left > 0:
            piece = await self.connection.exactly(self.budget.piece() if left is None else min(left, self.budget.piece()))
            if not piece:
                if left is not None:
                    raise httpx.RemoteProtocolError(f"the connection closed {left} bytes before the body's end")
                return
            if left is not None:
                left -= len(piece)
            yield piece

    async def _chunked(self) -> AsyncIterator[bytes | bytearray]:
        connection = self.connection
        chunks = received = 0
        while True:
            size_text = (await connection.line()).split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
                raise httpx.RemoteProtocolError(f"bad chunk size {size_text[:20]!r}")
            left = int(size_text, 16)
            chunks, received = chunks + 1, received + left
            if chunks > MANY_CHUNKS and received < chunks * SMALL_CHUNK:  # each costs Python steps: not for bytes
                raise httpx.RemoteProtocolError(f"more than {MANY_CHUNKS} chunks of under {SMALL_CHUNK} bytes "
                                                "on average")
            if left == 0:
                trailers = 0
                while trailer := await connection.line():  # up to the empty line
                    trailers += len(trailer) + 2
                    if trailers > MAX_HEAD:
                        raise httpx.RemoteProtocolError(f"chunked trailers longer than {MAX_HEAD} bytes")
                return
            while left:
                piece = await connection.exactly(min(left, self.budget.piece()))
                if not piece:
                    raise httpx.RemoteProtocolError("the connection closed inside a chunk")
                left -= len(piece)
                yield piece
            if await connection.line():
                raise httpx.RemoteProtocolError("a chunk is longer than its size says")

    async def aclose(self) -> None:
        if self.open:
            self.open = False
            self.budget.readers -= 1
            self.connection.close()


class BlobTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1, a connection per request, bodies in budgeted pieces."""

    def __init__(self, context: ssl.SSLContext, budget: PieceBudget | None = None) -> None:
        self.context = context
        self.budget = budget or PieceBudget()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method not in ("GET", "HEAD"):  # blobs and token realms: no request body to frame
            raise httpx.UnsupportedProtocol(f"the blob transport sends GET and HEAD only, not {request.method}")
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        connection = await self._connect(request.url, timeouts.get("connect"), timeouts.get("read"))
        try:
            connection.send(self._head(request))
            for _ in range(MAX_INTERIM + 1):  # interim answers (100 Continue, 103 Early Hints) come first
                status, reason, headers = await self._response_head(connection)
                if not 100 <= status < 200:
                    break
            else:
                raise httpx.RemoteProtocolError(f"more than {MAX_INTERIM} interim (1xx) answers")
            length, chunked = _framing(request.method, status, headers)
        except BaseException:
            connection.close()
            raise
        bound = None if 200 <= status < 300 else MAX_OTHER_BODY
        return httpx.Response(status, headers=headers, stream=_Body(connection, self.budget, length, chunked, bound),
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason})

    async def _connect(self, url: httpx.URL, connect_timeout: float | None, read_timeout: float | None) -> _Connection:
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"no {url.scheme!r} URLs")
        secure = url.scheme == "https"
        port = url.port or (443 if secure else 80)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, reader = await loop.create_connection(
                    _Reader, url.host, port, ssl=self.context if secure else None,
                    server_hostname=url.host if secure else None)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {url.host}:{port} within {connect_timeout:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(reader, read_timeout)

    @staticmethod
    def _head(request: httpx.Request) -> bytes:
        target = request.url.raw_path
        lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), target)]
        lines += [b"%s: %s" % (name, value) for name, value in request.headers.raw if name.lower() != b"connection"]
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n"

    @staticmethod
    async def _response_head(connection: _Connection) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        received = bytearray()
        while (end := received.find(b"\r\n\r\n")) < 0:
            if len(received) > MAX_HEAD:
                raise httpx.RemoteProtocolError(f"response head longer than {MAX_HEAD} bytes")
            more = await connection.some(MAX_HEAD)
            if not more:
                raise httpx.RemoteProtocolError("the server closed the connection without a complete response")
            received += more
        connection.pending = received[end + 4:]
        status_line, *header_lines = bytes(received[:end]).split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not (parts[1].isdigit() and len(parts[1]) == 3):
            raise httpx.RemoteProtocolError(f"not an HTTP/1 status line: {status_line[:80]!r}")
        if len(header_lines) > MAX_HEADERS:
            raise httpx.RemoteProtocolError(f"more than {MAX_HEADERS} response headers")
        headers: list[tuple[bytes, bytes]] = []
        for line in header_lines:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise httpx.RemoteProtocolError(f"malformed response header {line[:80]!r}")
            field = (name.lower(), value.strip())
            if field[0] == b"content-length" and field in headers:
                continue  # the same length twice is one length
            headers.append(field)
        return int(parts[1]), parts[2] if len(parts) > 2 else b"", headers


def _framing(method: str, status: int, headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(length, chunked) of the body: (0, False) for none, (None, False) for up to the connection's end."""
    if method == "HEAD" or status in _NO_BODY:
        return 0, False
    encoding = b", ".join(value for name, value in headers if name == b"transfer-encoding").lower()
    if encoding:
        if encoding != b"chunked":
            raise httpx.RemoteProtocolError(f"unsupported Transfer-Encoding {encoding[:40]!r}")
        return None, True
    lengths = {value for name, value in headers if name == b"content-length"}
    if len(lengths) > 1:
        raise httpx.RemoteProtocolError("conflicting Content-Length headers")
    if not lengths:
        return None, False
    declared = lengths.pop()
    if not (declared.isdigit() and len(declared) <= 19):
        raise httpx.RemoteProtocolError(f"bad Content-Length {declared[:40]!r}")
    return int(declared), False
