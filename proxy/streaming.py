"""A blob response that checks its digest while it streams, and aborts on a mismatch.

The whole blob is read from the upstream and hashed on the way (on a worker
thread, in the pieces the upstream client delivers); the part the client asked for (all of it, or one
``Range``) is relayed. The last piece is held back until the whole blob has
been hashed: on a mismatch (or a short or overlong body) it is never sent and
the connection is dropped, so the client is short of ``Content-Length`` bytes
and cannot take the download as complete. A range therefore costs a read of
the whole blob upstream: the price of never passing unverified bytes.
"""

import asyncio
import logging
import re
from dataclasses import dataclass

import anyio
import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.errors import RegistryError
from proxy.hashing import StreamDigest
from proxy.httpclient import describe

log = logging.getLogger("pullgate.stream")
RATE_UNIT = 256 << 10
_RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z", re.IGNORECASE)
_BEYOND_ANY_BLOB = 10 ** 20  # a position of more digits than this says nothing more


class StreamAborted(Exception):
    """The upstream body was not the blob it claimed to be."""


@dataclass(frozen=True)
class Window:
    """Inclusive byte range of a blob of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def requested_window(range_header: str | None, if_range: str | None, etag: str, size: int) -> Window | None:
    """The range a GET asks for. ``If-Range`` with anything but the blob's own strong ETag (a
    date too: a blob has no Last-Modified) means the client's copy is another one, so HTTP
    requires the whole blob."""
    if if_range is not None and if_range.strip(" \t") != etag:
        return None
    return parse_range(range_header, size)


def parse_range(header: str | None, size: int) -> Window | None:
    """One ``bytes=`` range; None for no header or a form this ignores (several ranges, or
    an invalid one: HTTP lets a server answer those whole, which is never the wrong bytes).

    An unsatisfiable range is a 416 error, as HTTP asks.
    """
    if header is None:
        return None
    match = _RANGE.match(header.strip(" \t"))  # no whitespace inside a range: "bytes=1 0-20" is invalid
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first, last = _position(match.group(1)), _position(match.group(2))
    if first is None:  # a suffix: the last ``last`` bytes, or all of a shorter blob
        if not last or size == 0:
            raise _unsatisfiable(header, size)
        return Window(start=max(size - last, 0), end=size - 1, size=size)
    if last is not None and last < first:
        return None
    if first >= size:
        raise _unsatisfiable(header, size)
    return Window(start=first, end=size - 1 if last is None else min(last, size - 1), size=size)


def _position(digits: str) -> int | None:
    """A byte position; one too long to read is past the end of any blob, and still a position."""
    if not digits:
        return None
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) < 20 else _BEYOND_ANY_BLOB


def _unsatisfiable(header: str, size: int) -> RegistryError:
    return RegistryError(416, "UNSUPPORTED", f"range {header[:100]!r} is outside the blob's {size} bytes",
                         {"range": header[:100], "size": size}, headers={"Content-Range": f"bytes */{size}"})


class VerifiedBlobResponse(Response):
    """Relays an open upstream blob response, verified against ``digest``.

    A Starlette response in type only: it writes its own ASGI messages.
    """

    def __init__(self, upstream: httpx.Response, digest: str, size: int, window: Window | None,
                 headers: dict[str, str], head: bool, send_timeout: float) -> None:
        self.background = None
        self.upstream = upstream
        self.digest = digest
        self.size = size
        self.window = window
        self.head = head
        self.complete = False
        self.send_timeout = send_timeout
        self._sent_before = 0
        self.status_code = 206 if window else 200
        all_headers = {**headers, "Accept-Ranges": "bytes"}
        if window:
            all_headers["Content-Range"] = window.content_range
            all_headers["Content-Length"] = str(window.end - window.start + 1)
        else:
            all_headers["Content-Length"] = str(size)
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in all_headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if self.head:
                await send({"type": "http.response.body", "body": b""})
                return
            async with anyio.create_task_group() as group:
                group.start_soon(self._cancel_on_disconnect, receive, group.cancel_scope)
                await self._relay(send)
                group.cancel_scope.cancel()
        except* StreamAborted as aborted:  # the task group hands its errors over as a group
            log.error("aborted blob %s: %s", self.digest, aborted.exceptions[0])
        except* httpx.HTTPError as failed:
            log.error("aborted blob %s: upstream stream failed: %s", self.digest, describe(failed.exceptions[0]))
        finally:
            await self.upstream.aclose()

    async def _relay(self, send: Send) -> None:
        """Hash everything, send the window, hold the last piece until the digest is known."""
        hashed = StreamDigest()
        start, end = (self.window.start, self.window.end + 1) if self.window else (0, self.size)
        held: bytes | bytearray | None = None
        offset = 0
        async for chunk in self.upstream.aiter_raw():
            if offset + len(chunk) > self.size:
                raise StreamAborted(f"upstream sent more than the blob's {self.size} bytes")
            await hashed.update(chunk)
            piece = chunk if start <= offset and offset + len(chunk) <= end else \
                chunk[max(start - offset, 0):max(min(end - offset, len(chunk)), 0)]
            offset += len(chunk)
            if not piece:
                continue
            if held is not None:
                await self._send_piece(send, held, more=True)
            held = piece
        if offset != self.size:
            raise StreamAborted(f"upstream sent {offset} of {self.size} bytes")
        actual = "sha256:" + await hashed.hexdigest()
        if actual != self.digest:
            raise StreamAborted(f"content has digest {actual}")
        self.complete = True
        await self._send_piece(send, held or b"", more=False)

    async def _send_piece(self, send: Send, piece: bytes | bytearray, more: bool) -> None:
        """Send a piece; a client slower than ``RATE_UNIT`` per send timeout is dropped.

        The server takes a piece once the one before has drained, so a send waits
        for the previous piece: it is allowed the send timeout for each 256 KiB of
        it. Sending pieces whole, rather than in timed slices, keeps the pipe full
        (slices of 256 KiB cost a tenth of the throughput).
        """
        allowed = self.send_timeout * max(1.0, self._sent_before / RATE_UNIT)
        try:
            async with asyncio.timeout(allowed):
                await send({"type": "http.response.body", "body": piece, "more_body": more})
        except TimeoutError:
            raise StreamAborted(f"the client took less than {RATE_UNIT >> 10} KiB "
                                f"per {self.send_timeout:g}s") from None
        self._sent_before = len(piece)

    async def _cancel_on_disconnect(self, receive: Receive, scope: anyio.CancelScope) -> None:
        """A client that goes away stops the upstream download with it.

        The server also reports a disconnect once the last piece is sent, which is no departure.
        """
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.complete:
                    log.info("client went away; upstream download stopped")
                scope.cancel()
                return
