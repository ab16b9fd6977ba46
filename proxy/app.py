"""The ASGI application: routes of the distribution API, wired to the gate.

Only reads are offered. Every answer carries
``Docker-Distribution-API-Version: registry/2.0``; every refusal is the
registry error JSON built in ``proxy.errors``.
"""

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.clientauth import ClientAuth
from proxy.config import Config
from proxy.errors import API_VERSION, RegistryError, from_trust_error
from proxy.gate import describe_sizes
from proxy.names import TAG, RegistryPath, parse_path
from proxy.routing import Routed, Router, open_router
from proxy.streaming import VerifiedBlobResponse, requested_window
from proxy.trust.errors import TrustError

log = logging.getLogger("pullgate")

API_VERSION_FIELD = (API_VERSION[0].lower().encode(), API_VERSION[1].encode())
READ_METHODS = ("GET", "HEAD")
DEFAULT_PAGE = 1000
MAX_PAGE = 100_000
PAGE_SIZE = re.compile(r"(?:0|[1-9][0-9]{0,4}|100000)\Z")
EMPTY_DIGEST = "sha256:" + hashlib.sha256(b"").hexdigest()


_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]}


def shown_path(request: Request) -> str:
    """The path the client asked for, percent-decoded, control characters written out: so a
    message or log line names it truly (``request.url`` drops CR, LF and tab) and on one line."""
    return str(request.scope["path"]).translate(_CONTROLS)


STOPPING = RegistryError(503, "UNAVAILABLE", "pullgate is stopping; try again", {})


class OuterLayer:
    """Pure ASGI middleware (cheap on the hot path) around every request: it adds the API
    version header, and ends requests that a stop cuts off (uvicorn cancels them once
    ``timeouts.shutdown`` has passed): one not yet answered gets error JSON; one
    whose answer is under way is left unfinished, so its connection is dropped
    and the client cannot take it as complete. Either way without a traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_header(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), API_VERSION_FIELD]
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_header)
        except asyncio.CancelledError:
            if not started:
                await STOPPING.response(scope["method"] == "HEAD")(scope, receive, send_with_header)


def create_app(config: Config) -> ASGIApp:
    """The proxy for one upstream, as an ASGI app."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_router(config) as router:
            app.state.router = router
            logins = config.client_auth
            app.state.client_auth = ClientAuth.load(logins.htpasswd, logins.realm) if logins else None
            app.state.send_timeout = config.client_send_timeout
            yield

    app = Starlette(
        routes=[
            Route("/v2/", base, methods=["GET", "HEAD"]),
            Route("/v2", base, methods=["GET", "HEAD"]),
            Route("/v2/{rest:path}", dispatch, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed, Exception: internal_error},
        lifespan=lifespan,
    )
    # a path no route takes is error JSON, never a redirect to the same path with a slash more or less
    app.router.redirect_slashes = False
    return OuterLayer(app)


async def base(request: Request) -> Response:
    """``/v2/``: the API version check every client starts with (and where ``docker login`` knocks)."""
    if request.scope["path"] not in ("/v2", "/v2/"):  # the route pattern also takes "/v2/\n"
        return not_offered(request)
    try:
        await authenticate(request)
    except RegistryError as exc:
        return exc.response(request.method == "HEAD")
    return JSONResponse({})


async def authenticate(request: Request) -> None:
    """Refuse a client without valid credentials, where client auth is on."""
    checker: ClientAuth | None = request.app.state.client_auth
    if checker is not None:
        await checker.check(request.headers.get("authorization"))


async def dispatch(request: Request) -> Response:
    head = request.method == "HEAD"
    routed: Routed | None = None
    try:
        await authenticate(request)
        if request.method not in READ_METHODS:
            raise RegistryError(405, "UNSUPPORTED",
                                f"pullgate is read-only: {request.method} on {shown_path(request)} is not allowed; "
                                "push to the upstream registry directly", {"method": request.method},
                                headers={"Allow": "GET, HEAD"})
        path = parse_path(request.scope["path"].removeprefix("/v2/"))
        if path is None:
            raise RegistryError(404, "UNSUPPORTED", f"pullgate does not offer {shown_path(request)}",
                                {"path": shown_path(request)})
        router: Router = request.app.state.router
        routed = router.route(path.name, request.query_params.get("ns"))
        if path.kind == "manifests":
            response: Response = await manifest(routed, request, path, head)
        elif path.kind == "blobs":
            response = await blob(routed, request, path, head)
        else:
            response = await tags(routed, request, path)
    except RegistryError as exc:
        if exc.status >= 500:
            log.warning("failed %s %s: %s", request.method, shown_path(request), exc.message)
        response = exc.response(head)
    except TrustError as exc:
        error = from_trust_error(exc)
        log.warning("refused %s %s: %s", request.method, shown_path(request), error.message)
        response = error.response(head)
    if routed is not None:
        response.headers["OCI-Namespace"] = routed.namespace
    return response


async def manifest(routed: Routed, request: Request, path: RegistryPath, head: bool) -> Response:
    accept = request.headers.getlist("accept")  # merged only if the manifest must be fetched
    gate = routed.services.gate
    if path.is_digest:
        found = await gate.manifest_for_digest(routed.name, path.reference, accept)
    else:
        found = await gate.manifest_for_tag(routed.name, path.reference, accept)
    headers = {
        "Docker-Content-Digest": found.digest,
        "Content-Length": str(len(found.body)),
        "ETag": f'"{found.digest}"',
    }
    return Response(b"" if head else found.body, media_type=found.content_type, headers=headers)


async def blob(routed: Routed, request: Request, path: RegistryPath, head: bool) -> VerifiedBlobResponse:
    """A blob a signed manifest names, whole or one range, verified while it streams."""
    services, name, digest = routed.services, routed.name, path.reference
    signed_sizes = await services.gate.blob_sizes(name, digest)
    upstream = await services.upstream.open_blob(name, digest, "HEAD" if head else "GET")
    try:
        size = blob_length(upstream, digest, signed_sizes, services.upstream.host)
        etag = f'"{digest}"'
        window = None if head else requested_window(request.headers.get("range"), request.headers.get("if-range"),
                                                     etag, size)
    except BaseException:
        await upstream.aclose()  # an open stream left behind would hold a pool connection for good
        raise
    headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest, "ETag": etag}
    return VerifiedBlobResponse(upstream, digest, size, window, headers, head, request.app.state.send_timeout)


def blob_length(upstream: httpx.Response, digest: str, signed_sizes: frozenset[int] | None, host: str) -> int:
    """The blob's length: one its signed manifests give, which the upstream must agree with."""
    announced = upstream.headers.get("content-length")
    length = int(announced) if announced is not None and announced.isascii() and announced.isdigit() else None
    if signed_sizes is not None and length is not None and length not in signed_sizes:
        raise RegistryError(502, "BLOB_UNKNOWN",
                            f"upstream registry {host} announces {length} bytes for blob {digest}; "
                            f"the signed manifest{' says' if len(signed_sizes) == 1 else 's say'} "
                            f"{describe_sizes(signed_sizes)}", {"digest": digest})
    size = length if signed_sizes is None or len(signed_sizes) > 1 else next(iter(signed_sizes))
    if size is None:
        raise RegistryError(502, "BLOB_UNKNOWN", f"upstream registry {host} sent blob {digest} without a length",
                            {"digest": digest})
    if size == 0 and digest != EMPTY_DIGEST:  # no bytes to hold back: the answer would be complete unchecked
        raise RegistryError(502, "BLOB_UNKNOWN", f"upstream registry {host} announces blob {digest} as empty; "
                            f"empty content has digest {EMPTY_DIGEST}", {"digest": digest})
    return size


async def tags(routed: Routed, request: Request, path: RegistryPath) -> Response:
    """The signed tags only, from trust data, paginated with ``n`` and ``last``."""
    repository = await routed.services.gate.repository(routed.name)
    names = sorted(name for name in repository.tags if TAG.match(name))  # a target named "a/b" is no tag
    last = request.query_params.get("last")
    if last:
        names = [n for n in names if n > last]
    page_size = request.query_params.get("n")
    if page_size is None:
        limit = DEFAULT_PAGE
    elif PAGE_SIZE.match(page_size):
        limit = int(page_size)
    else:
        raise RegistryError(400, "PAGINATION_NUMBER_INVALID", f"n must be a whole number up to {MAX_PAGE}",
                            {"n": page_size[:64]})
    page, more = names[:limit], len(names) > limit
    headers = {}
    if more and page:
        query = urlencode({"n": limit, "last": page[-1], **({"ns": ns} if (ns := request.query_params.get("ns")) else {})})
        headers["Link"] = f'</v2/{path.name}/tags/list?{query}>; rel="next"'
    return JSONResponse({"name": path.name, "tags": page}, headers=headers)


def not_offered(request: Request) -> Response:
    return RegistryError(404, "UNSUPPORTED", f"pullgate does not offer {shown_path(request)}",
                         {"path": shown_path(request)}).response(request.method == "HEAD")


async def not_found(request: Request, exc: Exception) -> Response:
    return not_offered(request)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return RegistryError(405, "UNSUPPORTED", f"{request.method} is not allowed on {shown_path(request)}",
                         {"method": request.method}, headers={"Allow": "GET, HEAD"}).response(request.method == "HEAD")


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, shown_path(request), exc_info=exc)
    return RegistryError(500, "UNKNOWN", f"internal error in pullgate: {type(exc).__name__}; see its log",
                         {}).response(request.method == "HEAD")
