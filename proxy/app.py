"""The ASGI application: routes of the distribution API, wired to the gate.

Only reads are offered. Every answer carries
``Docker-Distribution-API-Version: registry/2.0``; every refusal is the
registry error JSON built in ``proxy.errors``.
"""

import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.auth import ChallengeAuth
from proxy.config import Config
from proxy.errors import RegistryError, from_trust_error
from proxy.gate import Gate
from proxy.names import RegistryPath, parse_path
from proxy.streaming import VerifiedBlobResponse, parse_range
from proxy.trust.errors import TrustError
from proxy.trust.notary import NotaryClient, NotarySettings
from proxy.trust.store import StateError, TrustStore
from proxy.httpclient import client
from proxy.upstream import Upstream, merged_accept

log = logging.getLogger("pullgate")

API_VERSION = (b"docker-distribution-api-version", b"registry/2.0")
READ_METHODS = ("GET", "HEAD")
DEFAULT_PAGE = 1000
MAX_PAGE = 100_000
PAGE_SIZE = re.compile(r"(?:0|[1-9][0-9]{0,4}|100000)\Z")


class ApiVersionHeader:
    """Pure ASGI middleware (cheap on the hot path) adding the API version header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), API_VERSION]
            await send(message)

        await self.app(scope, receive, send_with_header)


@dataclass
class Services:
    """What a request needs, built once at start-up."""

    gate: Gate
    upstream: Upstream


def build_services(config: Config, notary_http: httpx.AsyncClient, registry_http: httpx.AsyncClient) -> Services:
    upstream_config, trust = config.upstream, config.trust
    upstream = Upstream(upstream_config.registry, registry_http, config.upstream_timeout)
    gun_prefix = upstream_config.gun_prefix
    notary = NotaryClient(
        NotarySettings(
            url=upstream_config.notary,
            refresh_interval=trust.refresh_interval,
            role_order=trust.role_order,
            role_orders={f"{gun_prefix}/{name}": roles for name, roles in trust.repository_roles.items()},
            max_metadata_bytes=trust.max_metadata_bytes,
            grace=trust.grace,
            pinning=upstream_config.pinning,
            download_timeout=config.trust_timeout,
        ),
        TrustStore(config.state_dir),
        notary_http,
    )
    gate = Gate(notary, upstream, gun_prefix, config.manifest_cache_bytes, trust.open_blobs)
    return Services(gate=gate, upstream=upstream)


def verify_with(ca: Path | None) -> ssl.SSLContext | bool:
    """TLS verification: the system's CAs, or the configured CA file."""
    return True if ca is None else ssl.create_default_context(cafile=str(ca))


@contextlib.asynccontextmanager
async def open_services(config: Config) -> AsyncIterator[Services]:
    """The HTTP clients and the gate, closed when the block ends.

    Each server gets its own client and its own credentials: what is
    configured for the registry never reaches the trust server, and nothing a
    client sent pullgate is forwarded to either.
    """
    upstream = config.upstream
    async with client(config.trust_timeout, verify_with(upstream.notary_ca),
                      ChallengeAuth(upstream.notary_auth)) as notary_http, \
            client(config.upstream_timeout, verify_with(upstream.registry_ca),
                   ChallengeAuth(upstream.auth)) as registry_http:
        yield build_services(config, notary_http, registry_http)


def create_app(config: Config) -> ASGIApp:
    """The proxy for one upstream, as an ASGI app."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(config) as services:
            app.state.services = services
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
    return ApiVersionHeader(app)


async def base(request: Request) -> Response:
    """``/v2/``: the API version check every client starts with."""
    return JSONResponse({})


async def dispatch(request: Request) -> Response:
    head = request.method == "HEAD"
    try:
        if request.method not in READ_METHODS:
            raise RegistryError(405, "UNSUPPORTED",
                                f"pullgate is read-only: {request.method} on {request.url.path} is not allowed; "
                                "push to the upstream registry directly", {"method": request.method},
                                headers={"Allow": "GET, HEAD"})
        path = parse_path(request.path_params["rest"])
        if path is None:
            raise RegistryError(404, "UNSUPPORTED", f"pullgate does not offer {request.url.path}",
                                {"path": request.url.path})
        services: Services = request.app.state.services
        if path.kind == "manifests":
            return await manifest(services, request, path, head)
        if path.kind == "blobs":
            return await blob(services, request, path, head)
        return await tags(services, request, path)
    except RegistryError as exc:
        if exc.status >= 500:
            log.warning("failed %s %s: %s", request.method, request.url.path, exc.message)
        return exc.response(head)
    except TrustError as exc:
        error = from_trust_error(exc)
        log.warning("refused %s %s: %s", request.method, request.url.path, error.message)
        return error.response(head)
    except StateError as exc:
        log.error("%s", exc)
        return RegistryError(503, "UNAVAILABLE", str(exc)).response(head)


async def manifest(services: Services, request: Request, path: RegistryPath, head: bool) -> Response:
    accept = merged_accept(request.headers.getlist("accept"))
    gate = services.gate
    if path.is_digest:
        found = await gate.manifest_for_digest(path.name, path.reference, accept)
    else:
        found = await gate.manifest_for_tag(path.name, path.reference, accept)
    headers = {
        "Docker-Content-Digest": found.digest,
        "Content-Length": str(len(found.body)),
        "ETag": f'"{found.digest}"',
    }
    return Response(b"" if head else found.body, media_type=found.content_type, headers=headers)


async def blob(services: Services, request: Request, path: RegistryPath, head: bool) -> VerifiedBlobResponse:
    """A blob a signed manifest names, whole or one range, verified while it streams."""
    name, digest = path.name, path.reference
    signed_size = await services.gate.blob_size(name, digest, merged_accept(()))
    upstream = await services.upstream.open_blob(name, digest, "HEAD" if head else "GET")
    try:
        size = blob_length(upstream, digest, signed_size, services.upstream.host)
        window = None if head else parse_range(request.headers.get("range"), size)
    except RegistryError:
        await upstream.aclose()
        raise
    headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
    return VerifiedBlobResponse(upstream, digest, size, window, headers, head)


def blob_length(upstream: httpx.Response, digest: str, signed_size: int | None, host: str) -> int:
    """The blob's length: the one its signed manifest gives, which the upstream must agree with."""
    announced = upstream.headers.get("content-length")
    length = int(announced) if announced is not None and announced.isascii() and announced.isdigit() else None
    if signed_size is not None and length is not None and length != signed_size:
        raise RegistryError(502, "BLOB_UNKNOWN",
                            f"upstream registry {host} announces {length} bytes for blob {digest}; "
                            f"the signed manifest says {signed_size}", {"digest": digest})
    size = signed_size if signed_size is not None else length
    if size is None:
        raise RegistryError(502, "BLOB_UNKNOWN", f"upstream registry {host} sent blob {digest} without a length",
                            {"digest": digest})
    return size


async def tags(services: Services, request: Request, path: RegistryPath) -> Response:
    """The signed tags only, from trust data, paginated with ``n`` and ``last``."""
    repository = await services.gate.repository(path.name)
    names = sorted(repository.tags)
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
        headers["Link"] = f'</v2/{path.name}/tags/list?n={limit}&last={page[-1]}>; rel="next"'
    return JSONResponse({"name": path.name, "tags": page}, headers=headers)


async def not_found(request: Request, exc: Exception) -> Response:
    return RegistryError(404, "UNSUPPORTED", f"pullgate does not offer {request.url.path}",
                         {"path": request.url.path}).response(request.method == "HEAD")


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return RegistryError(405, "UNSUPPORTED", f"{request.method} is not allowed on {request.url.path}",
                         {"method": request.method}, headers={"Allow": "GET, HEAD"}).response(request.method == "HEAD")


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return RegistryError(500, "UNKNOWN", f"internal error in pullgate: {type(exc).__name__}; see its log",
                         {}).response(request.method == "HEAD")
