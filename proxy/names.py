"""Parsing of ``/v2/...`` paths into repository name, kind and reference.

Names, tags and digests are validated as the distribution spec defines them.
A path is split at its last ``/manifests/``, ``/blobs/`` or ``/tags/list`` so
that a repository may itself contain those words.
"""

import re
from dataclasses import dataclass

from proxy.errors import RegistryError

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+\Z")
SHA256 = re.compile(r"sha256:[a-f0-9]{64}\Z")
MAX_NAME = 255


@dataclass(frozen=True)
class RegistryPath:
    """``kind`` is "manifests", "blobs" or "tags"; ``reference`` is empty for tags."""

    name: str
    kind: str
    reference: str

    @property
    def is_digest(self) -> bool:
        return ":" in self.reference


def parse_path(path: str) -> RegistryPath | None:
    """Split the part after ``/v2/``; None when it is no known endpoint."""
    if path.endswith("/tags/list"):
        return RegistryPath(_name(path[: -len("/tags/list")]), "tags", "")
    at, kind = max((path.rfind(f"/{kind}/"), kind) for kind in ("manifests", "blobs"))
    if at < 0 or (kind == "blobs" and path[at:].startswith("/blobs/uploads/")):  # uploads: pushes are not offered
        return None
    return RegistryPath(_name(path[:at]), kind, _reference(kind, path[at + len(kind) + 2:]))


def _name(name: str) -> str:
    if not NAME.match(name) or len(name) > MAX_NAME:
        raise RegistryError(400, "NAME_INVALID", f"invalid repository name {name[:300]!r}", {"name": name[:300]})
    return name


def _reference(kind: str, reference: str) -> str:
    if ":" in reference or kind == "blobs":
        check_digest(reference)
        return reference
    if not TAG.match(reference):
        raise RegistryError(400, "MANIFEST_INVALID", f"invalid tag {reference[:300]!r}", {"tag": reference[:300]})
    return reference


def check_digest(digest: str) -> None:
    """Refuse a malformed digest, and any algorithm but sha256."""
    shown = digest[:80]
    if not DIGEST.match(digest):
        raise RegistryError(400, "DIGEST_INVALID", f"invalid digest {shown!r}", {"digest": shown})
    algorithm, _, encoded = digest.partition(":")
    if algorithm != "sha256":
        raise RegistryError(400, "DIGEST_INVALID", f"unsupported digest algorithm {algorithm!r}: only sha256 "
                            "is accepted", {"digest": shown})
    if not SHA256.match(digest):
        raise RegistryError(400, "DIGEST_INVALID", f"invalid sha256 digest {shown!r}: it takes 64 lowercase "
                            f"hex digits, got {len(encoded)} characters", {"digest": shown})
