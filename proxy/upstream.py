"""The upstream registry client: manifests by digest, blobs as bounded streams.

Requests ask for ``Accept-Encoding: identity`` so the bytes that arrive are the
bytes the digest names. Upstream answers are never relayed as content when
they are errors: they become pullgate's own error JSON, with the upstream's
status in the message.
"""

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from proxy.auth import AuthFailed
from proxy.errors import RegistryError, unavailable
from proxy.httpclient import MAX_REDIRECTS, describe, host_of

MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
MAX_ACCEPT_VALUES = 32
_MEDIA_TYPE = re.compile(r"(?:\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126})/(?:\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126})"
                         r"(?:\s*;\s*[A-Za-z0-9_.-]{1,64}=[A-Za-z0-9_.\"-]{1,128}){0,4}\Z")


def merged_accept(client_values: Iterable[str]) -> str:
    """The media types the client accepts (over several header lines), plus the four manifest types.

    Only well-formed values are kept, at most 32: a by-digest answer does not
    depend on them, and one client's header must not break the fetch that
    concurrent clients share.
    """
    seen: dict[str, None] = dict.fromkeys(MANIFEST_MEDIA_TYPES)
    for line in client_values:
        for item in line.split(","):
            item = item.strip()
            if len(seen) < MAX_ACCEPT_VALUES + len(MANIFEST_MEDIA_TYPES) and _MEDIA_TYPE.match(item):
                seen.setdefault(item, None)
    return ", ".join(seen)


@dataclass(frozen=True)
class FetchedManifest:
    body: bytes
    content_type: str


class Upstream:
    """One registry, reached over shared clients: ``http`` for manifests and HEADs, ``blob_http`` for blob bodies."""

    def __init__(self, base_url: str, http: httpx.AsyncClient, blob_http: httpx.AsyncClient,
                 timeout: float = 30.0) -> None:
        self.base = base_url.rstrip("/")
        self.host = host_of(base_url)
        self.http = http
        self.blob_http = blob_http
        self.timeout = timeout

    def url(self, name: str, kind: str, reference: str) -> str:
        return f"{self.base}/v2/{name}/{kind}/{reference}"

    async def manifest(self, name: str, digest: str, client_accept: Iterable[str], bound: int) -> FetchedManifest:
        """GET a manifest by digest, reading no more than ``bound`` bytes, within the timeout.

        ``client_accept`` holds the client's Accept header lines, merged here with the manifest types.
        """
        request = self.http.build_request("GET", self.url(name, "manifests", digest),
                                          headers={"Accept": merged_accept(client_accept)})
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._send(self.http, request)
                try:
                    self._check_status(response, "manifest", digest)
                    body = await self._bounded(response, digest, bound)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise unavailable(f"upstream registry {self.host} sent no complete manifest {digest} "
                              f"within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return FetchedManifest(body, response.headers.get("content-type", ""))

    async def _bounded(self, response: httpx.Response, digest: str, bound: int) -> bytes:
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > bound:
                raise RegistryError(
                    502, "MANIFEST_INVALID",
                    f"upstream registry {self.host} sent more than the signed {bound} bytes for manifest {digest}",
                    {"digest": digest},
                )
        return bytes(body)

    async def open_blob(self, name: str, digest: str, method: str) -> httpx.Response:
        """Start a blob download; the caller streams the body and must close the response."""
        http = self.blob_http if method == "GET" else self.http
        try:
            async with asyncio.timeout(self.timeout):  # the answer's head, through redirects and challenges
                response = await self._send(http, http.build_request(method, self.url(name, "blobs", digest)))
        except TimeoutError:
            raise unavailable(f"upstream registry {self.host} did not answer for blob {digest} "
                              f"within {self.timeout:g}s") from None
        try:
            self._check_status(response, "blob", digest)
        except RegistryError:
            await response.aclose()
            raise
        return response

    async def _send(self, http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        try:
            return await http.send(request, stream=True, follow_redirects=True)
        except httpx.TooManyRedirects:
            raise unavailable(f"upstream registry {self.host} redirected more than {MAX_REDIRECTS} times") from None
        except AuthFailed as exc:
            raise unavailable(f"upstream registry {self.host}: authentication failed: {exc}") from None
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def _check_status(self, response: httpx.Response, what: str, digest: str) -> None:
        status = response.status_code
        encoding = response.headers.get("content-encoding", "identity").lower()
        if status == 200 and encoding not in ("identity", ""):
            raise RegistryError(502, "BLOB_UNKNOWN" if what == "blob" else "MANIFEST_INVALID",
                                f"upstream registry {self.host} sent {what} {digest} {encoding}-encoded although "
                                "pullgate asks for the bytes as they are (Accept-Encoding: identity)",
                                {"digest": digest})
        if status == 200:
            return
        if status == 404:
            code = "MANIFEST_UNKNOWN" if what == "manifest" else "BLOB_UNKNOWN"
            raise RegistryError(404, code, f"{what} {digest} is not in the upstream registry {self.host}",
                                {"digest": digest})
        raise unavailable(f"upstream registry {self.host} answered HTTP {status} for {what} {digest}",
                          upstream_status=status)

    def _unreachable(self, exc: httpx.HTTPError) -> RegistryError:
        return unavailable(f"upstream registry {self.host} is unavailable: {describe(exc)}")

