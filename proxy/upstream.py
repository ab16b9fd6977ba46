"""The upstream registry client: manifests by digest, blobs as bounded streams.

Requests ask for ``Accept-Encoding: identity`` so the bytes that arrive are the
bytes the digest names. Upstream answers are never relayed as content when
they are errors: they become pullgate's own error JSON, with the upstream's
status in the message.
"""

import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from proxy.errors import RegistryError, unavailable

MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
MAX_REDIRECTS = 5


def merged_accept(client_values: Iterable[str]) -> str:
    """Every media type the client accepts (over several header lines), plus the four manifest types."""
    seen: dict[str, None] = {}
    for line in client_values:
        for item in line.split(","):
            item = item.strip()
            if item:
                seen[item] = None
    for media_type in MANIFEST_MEDIA_TYPES:
        seen.setdefault(media_type, None)
    return ", ".join(seen)


@dataclass(frozen=True)
class FetchedManifest:
    body: bytes
    content_type: str


class Upstream:
    """One registry, reached over a shared ``httpx.AsyncClient``."""

    def __init__(self, base_url: str, http: httpx.AsyncClient) -> None:
        self.base = base_url.rstrip("/")
        self.host = urlsplit(base_url).netloc
        self.http = http

    def url(self, name: str, kind: str, reference: str) -> str:
        return f"{self.base}/v2/{name}/{kind}/{reference}"

    async def manifest(self, name: str, digest: str, accept: str, bound: int) -> FetchedManifest:
        """GET a manifest by digest, reading no more than ``bound`` bytes."""
        request = self.http.build_request("GET", self.url(name, "manifests", digest), headers={"Accept": accept})
        response = await self._send(request)
        try:
            self._check_status(response, "manifest", digest)
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > bound:
                    raise RegistryError(
                        502, "MANIFEST_INVALID",
                        f"upstream registry {self.host} sent more than the signed {bound} bytes for manifest {digest}",
                        {"digest": digest},
                    )
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        finally:
            await response.aclose()
        return FetchedManifest(bytes(body), response.headers.get("content-type", "application/octet-stream"))

    async def open_blob(self, name: str, digest: str, method: str) -> httpx.Response:
        """Start a blob download; the caller streams the body and must close the response."""
        request = self.http.build_request(method, self.url(name, "blobs", digest))
        response = await self._send(request)
        try:
            self._check_status(response, "blob", digest)
        except RegistryError:
            await response.aclose()
            raise
        return response

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self.http.send(request, stream=True, follow_redirects=True)
        except httpx.TooManyRedirects:
            raise unavailable(f"upstream registry {self.host} redirected more than {MAX_REDIRECTS} times") from None
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def _check_status(self, response: httpx.Response, what: str, digest: str) -> None:
        status = response.status_code
        if status == 200:
            return
        if status == 404:
            code = "MANIFEST_UNKNOWN" if what == "manifest" else "BLOB_UNKNOWN"
            raise RegistryError(404, code, f"{what} {digest} is not in the upstream registry {self.host}",
                                {"digest": digest})
        raise unavailable(f"upstream registry {self.host} answered HTTP {status} for {what} {digest}",
                          upstream_status=status)

    def _unreachable(self, exc: httpx.HTTPError) -> RegistryError:
        return unavailable(f"upstream registry {self.host} is unavailable: {type(exc).__name__}: {exc}")


def client(timeout: float, verify: ssl.SSLContext | bool = True, auth: httpx.Auth | None = None) -> httpx.AsyncClient:
    """The shared client: identity encoding, bounded redirects, generous pool."""
    return httpx.AsyncClient(
        auth=auth,
        timeout=httpx.Timeout(timeout),
        headers={"Accept-Encoding": "identity", "User-Agent": "pullgate"},
        max_redirects=MAX_REDIRECTS,
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        verify=verify,
    )
