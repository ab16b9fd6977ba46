"""Authentication to servers that ask for it: the registry token flow and basic auth.

A server that answers 401 with ``WWW-Authenticate: Bearer realm=…,service=…,
scope=…`` gets a token from its realm (anonymously, or with the configured
credentials as basic auth), and the request is sent again with it. Tokens are
cached per host and repository until they expire, so later requests carry one
from the start. A ``Basic`` challenge is answered with the credentials, if
any. Credentials are only ever sent to the server that asked and to its realm.
"""

import base64
import json
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import httpx

DEFAULT_TOKEN_SECONDS = 60
MAX_TOKEN_RESPONSE = 64 << 10
_PARAM = re.compile(r'(\w+)="([^"]*)"')
_REPOSITORY_END = re.compile(r"/(?:_trust|manifests|blobs|tags)/")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` → ("bearer", {"realm": …, "service": …})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))


def _cache_key(request: httpx.Request) -> tuple[str, str]:
    """Tokens are scoped to a repository: the path up to ``/manifests/``, ``/_trust/``…"""
    path = request.url.path
    match = _REPOSITORY_END.search(path)
    return request.url.netloc.decode(), path[: match.start()] if match else path


class AuthFailed(Exception):
    """A challenge that could not be answered: no token, or a realm not to be trusted."""


class ChallengeAuth(httpx.Auth):
    """An httpx auth flow answering Bearer and Basic challenges.

    The token endpoint's answer is only ever read as a token: when no token can
    be had, ``AuthFailed`` is raised, so the caller never mistakes that answer
    for the resource it asked for. A realm must be https when the server is,
    and credentials go to a realm only over https or on the server's own host.
    """

    def __init__(self, credentials: Credentials | None = None) -> None:
        self.credentials = credentials
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        key = _cache_key(request)
        cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            request.headers["Authorization"] = f"Bearer {cached[0]}"
        response = yield request
        if response.status_code != 401 or "www-authenticate" not in response.headers:
            return
        scheme, params = parse_challenge(response.headers["www-authenticate"])
        if scheme == "basic" and self.credentials is not None:
            request.headers["Authorization"] = self.credentials.basic()
            yield request
        elif scheme == "bearer":
            token_response = yield self._token_request(request.url, params)
            token = await self._token(token_response, params["realm"])
            self._tokens[key] = token
            request.headers["Authorization"] = f"Bearer {token[0]}"
            yield request

    def _token_request(self, server: httpx.URL, params: dict[str, str]) -> httpx.Request:
        realm = httpx.URL(params.get("realm", ""))
        if realm.scheme not in ("http", "https") or not realm.host:
            raise AuthFailed(f"{server.host} asks for a token from an unusable realm {params.get('realm')!r}")
        if server.scheme == "https" and realm.scheme != "https":
            raise AuthFailed(f"{server.host} is https but names a plain-http token realm {realm}")
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        headers = {}
        if self.credentials is not None and (realm.scheme == "https" or realm.host == server.host):
            headers["Authorization"] = self.credentials.basic()
        return httpx.Request("GET", realm, params=query, headers=headers)

    async def _token(self, response: httpx.Response, realm: str) -> tuple[str, float]:
        """The token and when it expires, read from a bounded answer, or AuthFailed."""
        if response.status_code != 200:
            raise AuthFailed(f"token realm {realm} answered HTTP {response.status_code}")
        # httpx reads an auth flow's intermediate answers whole, so the bound is set by the
        # declared length: HTTP framing reads no further than it.
        declared = response.headers.get("content-length", "")
        if not (declared.isascii() and declared.isdigit()) or int(declared) > MAX_TOKEN_RESPONSE:
            raise AuthFailed(f"token realm {realm} answered without a Content-Length of at most "
                             f"{MAX_TOKEN_RESPONSE} bytes")
        body = await response.aread()
        try:
            document = json.loads(body)
        except ValueError:
            raise AuthFailed(f"token realm {realm} did not answer JSON") from None
        token = (document.get("token") or document.get("access_token")) if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthFailed(f"token realm {realm} gave no token")
        lifetime = document.get("expires_in")
        seconds = lifetime if isinstance(lifetime, (int, float)) and 0 < lifetime < 86400 else DEFAULT_TOKEN_SECONDS
        return token, time.monotonic() + seconds - 5
