"""A fault-injecting HTTP front for a real server (registry or notary-server).

It forwards every request to the real server and lets a test change the
answer on the way back: another status, other bytes, a body cut short, a
dropped connection. Requests it saw are recorded, so a test can check what
pullgate sent upstream.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.types import Receive, Scope, Send

from tests.realenv.procs import free_port


@dataclass
class Fault:
    """What to do to one answer. Unset fields leave it as the real server gave it."""

    status: int | None = None
    body: bytes | None = None
    mutate: Callable[[bytes], bytes] | None = None
    cut_after: int | None = None
    headers: dict[str, str] | None = None
    drip: tuple[int, float] | None = None  # send the body in pieces of N bytes, one every S seconds
    redirect_to: str | None = None  # answer 307 to this base URL + the same path, as storage behind a CDN does


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, list[str]]


@dataclass
class FaultServer:
    """Serves plain HTTP on a free loopback port in a background thread."""

    target: str
    verify: ssl.SSLContext | bool = True
    faults: dict[str, Fault] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    token: str | None = None
    token_answer: tuple[int, bytes] | None = None  # what /token says instead of a token
    port: int = 0
    reject_authorization: bool = False  # like a CDN that refuses requests carrying credentials
    sent: dict[str, int] = field(default_factory=dict)  # body bytes sent, by path
    host: str = "127.0.0.1"  # "::1" to be reached over IPv6

    def __post_init__(self) -> None:
        self.port = self.port or free_port(self.host)
        self.url = f"http://[{self.host}]:{self.port}" if ":" in self.host else f"http://{self.host}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, host=self.host, port=self.port,
                                                     log_level="critical", lifespan="off", interface="asgi3"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> "FaultServer":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fault server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def fault_for(self, path: str) -> Fault | None:
        """The fault of the longest configured key that ``path`` contains."""
        matches = [key for key in self.faults if key in path]
        return self.faults[max(matches, key=len)] if matches else None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        headers: dict[str, list[str]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode().lower(), []).append(value.decode())
        self.seen.append(Seen(scope["method"], path, headers))
        if self.token is not None and await self._token_flow(path, headers, send):
            return
        if self.reject_authorization and "authorization" in headers:
            await _answer(send, 400, b"<Error>credentials are not accepted here</Error>", b"application/xml")
            return
        fault = self.fault_for(path) or Fault()
        if fault.redirect_to is not None:
            await _answer(send, 307, b"", b"text/plain", [(b"location", (fault.redirect_to + path).encode())])
            return
        forward = {k: ", ".join(v) for k, v in headers.items() if k in ("accept", "range", "authorization")}
        async with httpx.AsyncClient(verify=self.verify, headers={"Accept-Encoding": "identity"}) as client:
            real = await client.request(scope["method"], self.target + path, headers=forward)
        status = fault.status or real.status_code
        body = real.content if fault.body is None else fault.body
        if fault.mutate is not None:
            body = fault.mutate(body)
        kept = {k.lower(): v for k, v in real.headers.items() if k.lower() in ("content-type", "docker-content-digest")}
        kept.update({k.lower(): v for k, v in (fault.headers or {}).items()})
        out = [(k.encode(), v.encode()) for k, v in kept.items() if v]
        length = len(real.content) if scope["method"] == "HEAD" else len(body)
        out.append((b"content-length", str(real.headers.get("content-length", length)
                                           if scope["method"] == "HEAD" else length).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
        elif fault.cut_after is not None:
            await send({"type": "http.response.body", "body": body[: fault.cut_after], "more_body": True})
            # returning without finishing makes the server drop the connection mid-body
        elif fault.drip is not None:
            await self._drip(path, body, *fault.drip, receive, send)
        else:
            await send({"type": "http.response.body", "body": body})

    async def _drip(self, path: str, body: bytes, size: int, delay: float, receive: Receive, send: Send) -> None:
        """Send slowly, counting what went out, until done or the reader has gone.

        uvicorn drops writes to a closed connection silently, so the reader's
        going is watched for on ``receive``.
        """
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        self.sent[path] = 0
        try:
            for offset in range(0, len(body), size):
                if gone.is_set():
                    return
                await send({"type": "http.response.body", "body": body[offset:offset + size], "more_body": True})
                self.sent[path] += len(body[offset:offset + size])
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()


    async def _token_flow(self, path: str, headers: dict[str, list[str]], send: Send) -> bool:
        """Act as a token-protected server: True when the request was answered here."""
        if path == "/token":
            status, body = self.token_answer or (200, f'{{"token": "{self.token}", "expires_in": 300}}'.encode())
            await _answer(send, status, body, b"application/json")
            return True
        if headers.get("authorization") == [f"Bearer {self.token}"]:
            return False
        challenge = f'Bearer realm="{self.url}/token",service="fault",scope="repository:x:pull"'
        await _answer(send, 401, b'{"errors":[{"code":"UNAUTHORIZED","message":"token","detail":{}}]}',
                      b"application/json", [(b"www-authenticate", challenge.encode())])
        return True


async def _answer(send: Send, status: int, body: bytes, content_type: bytes,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


class RawServer:
    """Answers with whatever bytes ``handler`` writes (an asyncio stream handler), on a loopback port,
    from a background thread: for answers no HTTP server library would send."""

    def __init__(self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                 tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> "RawServer":
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(asyncio.start_server(self.handler, "127.0.0.1", self.port, ssl=self.tls),
                                                   self._loop)
        self._server = started.result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shut(self) -> None:
        self._server.close()
        handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
