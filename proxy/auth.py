"""Authentication to servers that ask for it: the registry token flow and basic auth.

A server that answers 401 with ``WWW-Authenticate: Bearer realm=…,service=…,
scope=…`` gets a token from its realm (anonymously, or with the configured
credentials as basic auth), and the request is sent again with it. Tokens are
cached per host and repository until they expire, so later requests carry one
from the start. A ``Basic`` challenge is answered with the credentials, if
any. Credentials are only ever sent to the server that asked and to its realm.
"""

import base64
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import httpx

DEFAULT_TOKEN_SECONDS = 60
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


class ChallengeAuth(httpx.Auth):
    """An httpx auth flow answering Bearer and Basic challenges."""

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
        elif scheme == "bearer" and params.get("realm", "").startswith(("http://", "https://")):
            token_response = yield self._token_request(params)
            await token_response.aread()
            token = self._token(token_response)
            if token is None:
                return
            self._tokens[key] = token
            request.headers["Authorization"] = f"Bearer {token[0]}"
            yield request

    def _token_request(self, params: dict[str, str]) -> httpx.Request:
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        return httpx.Request("GET", params["realm"], params=query, headers=headers)

    def _token(self, response: httpx.Response) -> tuple[str, float] | None:
        if response.status_code != 200:
            return None
        try:
            document = response.json()
        except ValueError:
            return None
        token = document.get("token") or document.get("access_token")
        if not isinstance(token, str):
            return None
        lifetime = document.get("expires_in")
        seconds = lifetime if isinstance(lifetime, (int, float)) and lifetime > 0 else DEFAULT_TOKEN_SECONDS
        return token, time.monotonic() + seconds - 5
