"""Registry errors: the one place that decides status, code and message.

Every refusal leaves pullgate as the distribution spec's error JSON,
``{"errors": [{"code", "message", "detail"}]}`` with Content-Type
application/json. Trust errors are mapped here so that "not signed" (403) and
"cannot verify" (503) stay different to the client.
"""

import json
from typing import Any

from starlette.responses import Response

from proxy.trust.errors import (
    DigestNotSigned,
    NoTrustData,
    TagNotSigned,
    TrustError,
    TrustServerUnavailable,
    VerificationFailed,
)
from proxy.trust.store import StateError

# carried by every answer, the connection-level refusals too: clients check it on /v2/
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")


class RegistryError(Exception):
    """A refusal with its HTTP status and registry error code."""

    def __init__(self, status: int, code: str, message: str, detail: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail or {}
        self.headers = headers or {}

    def response(self, head: bool = False) -> Response:
        body = json.dumps({"errors": [{"code": self.code, "message": self.message, "detail": self.detail}]})
        encoded = body.encode()
        response = Response(b"" if head else encoded, status_code=self.status, media_type="application/json",
                            headers=self.headers)
        if head:
            response.headers["content-length"] = str(len(encoded))
        return response


def denied(message: str, **detail: Any) -> RegistryError:
    return RegistryError(403, "DENIED", message, detail)


def unavailable(message: str, **detail: Any) -> RegistryError:
    return RegistryError(503, "UNAVAILABLE", message, detail)


def from_trust_error(exc: TrustError) -> RegistryError:
    """Map a typed trust failure to what the client sees."""
    if isinstance(exc, NoTrustData):
        return denied(str(exc), gun=exc.gun)
    if isinstance(exc, TagNotSigned):
        return denied(str(exc), gun=exc.gun, tag=exc.tag)
    if isinstance(exc, DigestNotSigned):
        return denied(str(exc), gun=exc.gun, digest=exc.digest)
    if isinstance(exc, VerificationFailed):
        return denied(str(exc), gun=exc.gun, role=exc.role, check=exc.check)
    if isinstance(exc, TrustServerUnavailable):
        return unavailable(str(exc), gun=exc.gun, trust_server=exc.server)
    if isinstance(exc, StateError):
        return unavailable(str(exc))
    return unavailable(f"cannot verify: {exc}")
