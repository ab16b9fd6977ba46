"""The blob transport's HTTP/1.1: framing, bad answers, slow and silent servers, buffer reuse.

Each test runs a small server of its own on loopback, in the same event loop
as the client, that answers with exactly the bytes the test writes; the
end-to-end paths (real registry, TLS, tokens, redirects, faults) are in the
other test files.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
import threading
import ssl
from collections.abc import Awaitable, Callable

import httpx
import pytest

from proxy.blobtransport import BlobTransport, PieceBudget, _Buffers
from proxy.httpclient import through_env_proxy

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MIB = 1 << 20


async def _fetch(handler: Handler, timeout: float = 10.0, path: str = "/v2/x/blobs/d",
                 budget: PieceBudget | None = None) -> tuple[httpx.Response, list[bytes]]:
    """GET through the transport from a server running ``handler``; the response and its pieces."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport = BlobTransport(ssl.create_default_context(), budget)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            async with client.stream("GET", f"http://127.0.0.1:{port}{path}") as response:
                pieces = [bytes(piece) async for piece in response.aiter_raw()]
        return response, pieces
    finally:
        server.close()


def fetch(handler: Handler, **kwargs: object) -> tuple[httpx.Response, list[bytes]]:
    return asyncio.run(_fetch(handler, **kwargs))  # type: ignore[arg-type]


def answer(*parts: bytes, pause: float = 0.0) -> Handler:
    """A server that reads the request head, writes ``parts`` (pausing between them) and closes."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
        writer.close()
    return handle


def test_content_length_body_arrives_whole_in_big_pieces() -> None:
    body = os.urandom(20 * MIB)
    response, pieces = fetch(answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body), body))
    assert response.status_code == 200
    assert b"".join(pieces) == body
    assert max(map(len, pieces)) == 4 * MIB, "one reader gets the largest piece"


def test_request_line_and_headers_as_sent() -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        writer.close()

    response, pieces = fetch(handle, path="/v2/a/b/blobs/sha256:00?x=1&y=%2F")
    assert response.status_code == 204 and pieces == []
    head = seen[0].decode()
    assert head.startswith("GET /v2/a/b/blobs/sha256:00?x=1&y=%2F HTTP/1.1\r\n")
    lines = head.split("\r\n")
    assert any(line.lower().startswith("host: 127.0.0.1:") for line in lines)
    assert "Connection: close" in lines


def test_chunked_body_with_extensions_and_trailers() -> None:
    body = os.urandom(300_000)
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(part), part) for part in (body[:1], body[1:200_000], body[200_000:]))
    response, pieces = fetch(answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                    chunked, b"0\r\nX-Trailer: t\r\n\r\n"))
    assert b"".join(pieces) == body


def test_body_up_to_the_connections_end() -> None:
    body = os.urandom(MIB + 17)
    _, pieces = fetch(answer(b"HTTP/1.1 200 OK\r\n\r\n", body))
    assert b"".join(pieces) == body


@pytest.mark.parametrize(("head", "body", "complaint"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b"x" * 40, "60 bytes before the body's end"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", b"", "not an HTTP/1 status line"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", b"", "not an HTTP/1 status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", b"", "malformed response header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b"xx", "conflicting Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", b"", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", b"", "unsupported Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"zz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"4\r\nabcdef\r\n0\r\n\r\n", "longer than its size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"10\r\nabc", "closed inside a chunk"),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 << 10), b"", "response head longer than"),
    (b"HTTP/1.1 200 O", b"", "without a complete response"),
], ids=["short", "not-http", "status", "header", "two-lengths", "negative-length", "gzip-framing", "chunk-size",
        "chunk-overlong", "chunk-cut", "huge-head", "cut-head"])
def test_bad_answers_are_protocol_errors(head: bytes, body: bytes, complaint: str) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match=complaint):
        fetch(answer(head, body))


def test_a_slow_server_gets_its_bytes_passed_on_before_a_piece_is_full() -> None:
    """A trickle is handed on as it comes (within a fraction of a second), not held for MiBs."""
    first_seen = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * MIB))
        await writer.drain()
        await asyncio.sleep(0.3)  # the head is read on its own; the first body bytes come after
        writer.write(b"a" * 1000)
        await writer.drain()
        await asyncio.wait_for(first_seen.wait(), 5)  # no more until the client has what came
        writer.write(b"b" * (2 * MIB - 1000))
        writer.close()

    async def run() -> bytes:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        got = b""
        async with httpx.AsyncClient(transport=BlobTransport(ssl.create_default_context())) as client:
            async with client.stream("GET", f"http://127.0.0.1:{port}/") as response:
                async for piece in response.aiter_raw():
                    got += piece
                    first_seen.set()
        server.close()
        return got

    async def in_time() -> bytes:
        return await asyncio.wait_for(run(), 4)

    assert asyncio.run(in_time()) == b"a" * 1000 + b"b" * (2 * MIB - 1000)


def test_a_silent_server_times_out() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await writer.drain()
        await asyncio.sleep(5)

    with pytest.raises(httpx.ReadTimeout):
        fetch(handle, timeout=0.5)


def test_nothing_listening_is_a_connect_error() -> None:
    async def run() -> None:
        server = await asyncio.start_server(answer(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        async with httpx.AsyncClient(transport=BlobTransport(ssl.create_default_context())) as client:
            await client.get(f"http://127.0.0.1:{port}/")

    with pytest.raises(httpx.ConnectError):
        asyncio.run(run())


def test_pieces_kept_by_the_reader_are_never_refilled() -> None:
    """Every piece is kept here while later ones arrive: none may be overwritten by buffer reuse."""
    body = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() * (MIB // 32) for i in range(24))
    server_head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)

    async def run() -> list[bytearray]:
        server = await asyncio.start_server(answer(server_head, body), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with httpx.AsyncClient(transport=BlobTransport(ssl.create_default_context())) as client:
            async with client.stream("GET", f"http://127.0.0.1:{port}/") as response:
                kept = [piece async for piece in response.aiter_raw()]  # the pieces themselves, no copies
        server.close()
        return kept  # type: ignore[return-value]

    assert b"".join(asyncio.run(run())) == body


def test_a_buffer_is_reused_only_once_nothing_else_holds_it() -> None:
    buffers = _Buffers()
    first = buffers.take(MIB)
    second = buffers.take(MIB)
    assert second is not first, "a buffer still held is not handed out again"
    first_id = id(first)
    del first
    third = buffers.take(MIB)
    assert id(third) == first_id, "a buffer nothing holds is reused"
    bigger = buffers.take(2 * MIB)
    assert bigger is not third and len(buffers._kept) == 3
    del third
    buffers.take(2 * MIB)
    assert [len(kept) for kept in buffers._kept] == [MIB, 2 * MIB, 2 * MIB], \
        "a free buffer of a size no longer asked for is let go"


def test_the_piece_size_shrinks_with_the_readers() -> None:
    budget = PieceBudget(total=16 * MIB, smallest=64 << 10, largest=4 * MIB)
    assert budget.piece() == 4 * MIB
    budget.readers = 100
    assert budget.piece() == (16 * MIB) // 100
    budget.readers = 10_000
    assert budget.piece() == 64 << 10


@pytest.mark.parametrize(("env", "url", "proxied"), [
    ({}, "http://registry.example:5000", False),
    ({"HTTP_PROXY": "http://proxy:3128"}, "http://registry.example:5000", True),
    ({"HTTPS_PROXY": "http://proxy:3128"}, "http://registry.example:5000", False),
    ({"https_proxy": "http://proxy:3128"}, "https://registry.example", True),
    ({"ALL_PROXY": "http://proxy:3128"}, "https://registry.example", True),
    ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "registry.example"}, "http://registry.example:5000", False),
    ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": ".example"}, "http://registry.example:5000", False),
], ids=["none", "http", "other-scheme", "https", "all", "no-proxy", "no-proxy-domain"])
def test_blobs_go_through_an_environment_proxy_only_when_one_applies(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, proxied: bool) -> None:
    """Where a proxy applies, blob bodies take the registry's ordinary httpx client, which uses it."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert through_env_proxy(url) is proxied


# -- from trying to break it -----------------------------------------------------------------------


def fetch_within(seconds: float, handler: Handler, **kwargs: object) -> tuple[httpx.Response, list[bytes]]:
    """``fetch`` on a thread of its own, failing the test when it is not done in time (a loop that
    spins without yielding cannot be stopped by asyncio's own timeouts)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(fetch(handler, **kwargs))
        except BaseException as exc:  # handed to the test below
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"no answer within {seconds}s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]  # type: ignore[return-value]


def test_chunk_size_lines_split_across_reads() -> None:
    body = os.urandom(39000)
    _, pieces = fetch_within(10, answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n98",
                                        b"58\r\n" + body, b"\r\n0", b"\r\n\r\n", pause=0.2))
    assert b"".join(pieces) == body


def test_small_chunks_flushed_a_few_kib_at_a_time() -> None:
    """A valid stream as a buffered writer sends it: chunk boundaries fall anywhere in a read."""
    body = os.urandom(2 * MIB)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 4090]), body[i:i + 4090]) for i in range(0, len(body), 4090))
    flushes = [chunked[i:i + 4096] for i in range(0, len(chunked), 4096)] + [b"0\r\n\r\n"]
    _, pieces = fetch_within(20, answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", *flushes,
                                        pause=0.0005))
    assert b"".join(pieces) == body


def endless(head: bytes) -> Handler:
    """A server that sends ``head``, then chunks of 1 MiB for as long as it is read."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        chunk = b"%x\r\n%s\r\n" % (MIB, b"x" * MIB)
        try:
            while True:
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
    return handle


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nTransfer-Encoding: chunked\r\n\r\n",
    b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm="http://127.0.0.1:9/t"\r\n'
    b"Transfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n",
], ids=["redirect", "challenge", "error"])
def test_an_endless_body_of_an_answer_that_is_not_a_success_is_cut_at_64_kib(head: bytes) -> None:
    """httpx reads a redirect's or challenge's body whole before it goes on: the transport bounds it."""
    with pytest.raises(httpx.RemoteProtocolError, match="not a success has a body over 64 KiB"):
        fetch_within(10, endless(head))


def test_endless_trailers_are_refused() -> None:
    trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 100) for i in range(1000))
    with pytest.raises(httpx.RemoteProtocolError, match="trailers longer than"):
        fetch_within(10, answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\na\r\n0\r\n" + trailers))


def test_a_reset_mid_body_is_a_read_error() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + b"r" * 1000)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"\r\n")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST

    for _ in range(5):
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            fetch_within(10, handle)


def test_interim_answers_are_skipped_and_a_length_given_twice_is_one() -> None:
    response, pieces = fetch(answer(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
                                    b"HTTP/1.1 100 Continue\r\n\r\n"
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"))
    assert (response.status_code, response.headers["content-length"], b"".join(pieces)) == (200, "5", b"hello")
    with pytest.raises(httpx.RemoteProtocolError, match="more than 5 interim"):
        fetch(answer(b"HTTP/1.1 100 Continue\r\n\r\n" * 6 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))


def test_transfer_encodings_other_than_chunked_alone_are_refused() -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="unsupported Transfer-Encoding"):
        fetch(answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n",
                     b"1\r\na\r\n0\r\n\r\n"))


def test_a_flood_of_tiny_chunks_is_refused() -> None:
    """Each chunk costs Python steps: more than 4096 of under 256 bytes on average is no way to send a blob."""
    with pytest.raises(httpx.RemoteProtocolError, match="more than 4096 chunks of under 256 bytes"):
        fetch_within(10, answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\nX\r\n" * 5000))


def test_only_requests_without_a_body_are_sent() -> None:
    async def run() -> None:
        async with httpx.AsyncClient(transport=BlobTransport(ssl.create_default_context())) as client:
            await client.post("http://127.0.0.1:9/v2/x/blobs/uploads/", content=b"data")

    with pytest.raises(httpx.UnsupportedProtocol, match="GET and HEAD only, not POST"):
        asyncio.run(run())
