"""A blob response that checks its digest while it streams, and aborts on a mismatch.

The body is relayed in the chunks the upstream delivers, hashed on the way.
The last chunk is held back until the whole body has been hashed: on a
mismatch (or a short or overlong body) it is never sent and the connection is
dropped, so the client is short of ``Content-Length`` bytes (or never sees the
closing chunk) and cannot take the download as complete.
"""

import hashlib
import logging

import httpx
from starlette.types import Receive, Scope, Send

log = logging.getLogger("pullgate.stream")


class StreamAborted(Exception):
    """The upstream body was not the blob it claimed to be."""


class VerifiedBlobResponse:
    """ASGI response relaying an open upstream blob response, verified against ``digest``."""

    def __init__(self, upstream: httpx.Response, digest: str, headers: dict[str, str], head: bool) -> None:
        self.upstream = upstream
        self.digest = digest
        self.headers = headers
        self.head = head
        length = upstream.headers.get("content-length")
        self.length = int(length) if length and length.isdigit() else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({
                "type": "http.response.start",
                "status": 200,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()],
            })
            if self.head:
                await send({"type": "http.response.body", "body": b""})
                return
            await self._relay(send)
        except StreamAborted as exc:
            log.error("aborted blob %s: %s", self.digest, exc)
        except httpx.HTTPError as exc:
            log.error("aborted blob %s: upstream stream failed: %s: %s", self.digest, type(exc).__name__, exc)
        finally:
            await self.upstream.aclose()

    async def _relay(self, send: Send) -> None:
        hasher = hashlib.sha256()
        held: bytes | None = None
        total = 0
        async for chunk in self.upstream.aiter_raw():
            if not chunk:
                continue
            total += len(chunk)
            if self.length is not None and total > self.length:
                raise StreamAborted(f"upstream sent more than its Content-Length of {self.length}")
            hasher.update(chunk)
            if held is not None:
                await send({"type": "http.response.body", "body": held, "more_body": True})
            held = chunk
        if self.length is not None and total != self.length:
            raise StreamAborted(f"upstream sent {total} of {self.length} bytes")
        actual = "sha256:" + hasher.hexdigest()
        if actual != self.digest:
            raise StreamAborted(f"content has digest {actual}")
        await send({"type": "http.response.body", "body": held or b"", "more_body": False})
