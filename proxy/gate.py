"""The policy: which manifest a tag is, and whether a digest may be served.

A tag is whatever the verified trust data says it is. A manifest digest is
allowed for a repository when it is a signed target there, or is listed by a
manifest list / OCI index that is itself allowed (so a per-platform pull of a
signed multi-arch tag works). Manifest bytes are checked against the digest and
length before anyone sees them, and kept in a memory cache bounded by bytes.
"""

import asyncio
import hashlib
import json
from dataclasses import dataclass

from cachetools import LRUCache

from proxy.errors import RegistryError
from proxy.singleflight import SingleFlight
from proxy.trust.errors import DigestNotSigned
from proxy.trust.notary import NotaryClient
from proxy.trust.repository import TrustedRepository
from proxy.upstream import Upstream

REMEMBERED_MANIFESTS = 65536
EXPAND_CONCURRENCY = 8
MAX_INDEX_DEPTH = 4


@dataclass(frozen=True)
class Manifest:
    """Verified manifest bytes, as the upstream sent them."""

    digest: str
    body: bytes
    content_type: str


class Gate:
    """Decides and fetches for one upstream registry and its trust server."""

    def __init__(self, notary: NotaryClient, upstream: Upstream, gun_prefix: str, cache_bytes: int) -> None:
        self.notary = notary
        self.upstream = upstream
        self.gun_prefix = gun_prefix
        self._manifests: LRUCache[tuple[str, str], Manifest] = LRUCache(
            maxsize=max(cache_bytes, 1), getsizeof=lambda m: len(m.body) or 1
        )
        # (repository, index digest) -> {child digest: size}; child -> the indexes naming it
        self._children: LRUCache[tuple[str, str], dict[str, int]] = LRUCache(maxsize=REMEMBERED_MANIFESTS)
        self._parents: LRUCache[tuple[str, str], frozenset[str]] = LRUCache(maxsize=REMEMBERED_MANIFESTS)
        self._fetches: SingleFlight[Manifest] = SingleFlight()

    def gun(self, name: str) -> str:
        return f"{self.gun_prefix}/{name}"

    async def repository(self, name: str) -> TrustedRepository:
        return await self.notary.repository(self.gun(name))

    async def manifest_for_tag(self, name: str, tag: str, accept: str) -> Manifest:
        target = (await self.repository(name)).resolve(tag)
        return await self._verified(name, target.digest, target.length, accept)

    async def manifest_for_digest(self, name: str, digest: str, accept: str) -> Manifest:
        repository = await self.repository(name)
        length = self._allowed_length(repository, name, digest)
        if length is None:
            await self._expand(repository, name, accept)
            length = self._allowed_length(repository, name, digest)
        if length is None:
            raise DigestNotSigned(repository.gun, digest)
        return await self._verified(name, digest, length, accept)

    def _allowed_length(self, repository: TrustedRepository, name: str, digest: str, depth: int = 0) -> int | None:
        """The signed (or index-listed) length of an allowed digest, else None."""
        if digest in repository.digests:
            return repository.digests[digest]
        if depth >= MAX_INDEX_DEPTH:
            return None
        for parent in self._parents.get((name, digest), ()):
            children = self._children.get((name, parent))
            if children is not None and self._allowed_length(repository, name, parent, depth + 1) is not None:
                return children[digest]
        return None

    async def _expand(self, repository: TrustedRepository, name: str, accept: str) -> None:
        """Rebuild what indexes list, from the signed targets whose manifests are not remembered."""
        pending = [(d, n) for d, n in repository.digests.items() if (name, d) not in self._children]
        limit = asyncio.Semaphore(EXPAND_CONCURRENCY)

        async def one(digest: str, length: int) -> None:
            async with limit:
                await self._verified(name, digest, length, accept)

        await asyncio.gather(*(one(d, n) for d, n in pending))

    async def _verified(self, name: str, digest: str, length: int, accept: str) -> Manifest:
        cached = self._manifests.get((name, digest))
        if cached is not None:
            return cached
        return await self._fetches.run((name, digest), lambda: self._fetch(name, digest, length, accept))

    async def _fetch(self, name: str, digest: str, length: int, accept: str) -> Manifest:
        fetched = await self.upstream.manifest(name, digest, accept, bound=length)
        actual = "sha256:" + hashlib.sha256(fetched.body).hexdigest()
        if actual != digest or len(fetched.body) != length:
            raise RegistryError(
                502, "MANIFEST_INVALID",
                f"upstream registry {self.upstream.host} sent manifest bytes that do not match the signed "
                f"digest and length: expected {digest} ({length} bytes), got {actual} ({len(fetched.body)} bytes)",
                {"digest": digest},
            )
        manifest = Manifest(digest=digest, body=fetched.body, content_type=fetched.content_type)
        self._remember_children(name, manifest)
        if len(manifest.body) <= self._manifests.maxsize:
            self._manifests[(name, digest)] = manifest
        return manifest

    def _remember_children(self, name: str, manifest: Manifest) -> None:
        children = listed_manifests(manifest.body)
        self._children[(name, manifest.digest)] = children
        for child in children:
            self._parents[(name, child)] = self._parents.get((name, child), frozenset()) | {manifest.digest}


def listed_manifests(body: bytes) -> dict[str, int]:
    """The ``manifests`` a manifest list or OCI index names, with their sizes; {} otherwise."""
    try:
        document = json.loads(body)
        entries = document.get("manifests") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            return {}
        return {
            e["digest"]: e["size"]
            for e in entries
            if isinstance(e, dict) and isinstance(e.get("digest"), str) and isinstance(e.get("size"), int)
        }
    except ValueError:
        return {}
