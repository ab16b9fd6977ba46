"""The outbound HTTP client settings shared by the registry and trust server clients.

Identity encoding (the bytes that arrive are the bytes a digest names),
bounded redirects (for the trust server, never from https to plain http), a
generous connection pool, and one way to say what went wrong with a request.
"""

import ssl
import urllib.request
from urllib.parse import urlsplit

import httpx

MAX_REDIRECTS = 5


class InsecureRedirect(httpx.HTTPError):
    """A redirect from https to plain http: following it would give up knowing who answers
    (a trust server's first root, above all, would come from anyone on the path)."""


async def refuse_downgrade(response: httpx.Response) -> None:
    """Response hook, run before httpx follows a redirect."""
    if response.has_redirect_location and response.url.scheme == "https":
        target = response.url.join(response.headers["location"])
        if target.scheme != "https":
            raise InsecureRedirect(f"redirect from {response.url.host} to plain {target.scheme} "
                                   f"({target.copy_with(query=None)}) refused")


def client(timeout: float, verify: ssl.SSLContext | bool = True, auth: httpx.Auth | None = None,
           transport: httpx.AsyncBaseTransport | None = None, keep_https: bool = False) -> httpx.AsyncClient:
    """``keep_https`` for the trust server, whose answers on first use are trusted as they come;
    a registry's bytes are checked against their digests wherever they come from."""
    return httpx.AsyncClient(
        event_hooks={"response": [refuse_downgrade] if keep_https else []},
        auth=auth,
        transport=transport,
        timeout=httpx.Timeout(timeout),
        headers={"Accept-Encoding": "identity", "User-Agent": "pullgate"},
        max_redirects=MAX_REDIRECTS,
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        verify=verify,
    )


def describe(exc: Exception) -> str:
    """``ConnectError: [Errno 111] Connection refused``; a bare type name gets a plain reading."""
    text = str(exc)
    if not text:
        text = "timed out" if isinstance(exc, (httpx.TimeoutException, TimeoutError)) else "no detail given"
    return f"{type(exc).__name__}: {text}"


def host_of(url: str) -> str:
    """``host[:port]`` of a URL, without any user information, IPv6 in brackets."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else (parts.hostname or "")
    return f"{host}:{parts.port}" if parts.port else host


def through_env_proxy(url: str) -> bool:
    """Whether ``HTTP(S)_PROXY``/``ALL_PROXY`` (less ``NO_PROXY``) send requests for ``url`` through a proxy."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.netloc)  # on Linux: NO_PROXY
