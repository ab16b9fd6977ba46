"""The policy: which manifest a tag is, and whether a digest may be served.

A tag is whatever the verified trust data says it is. A manifest digest is
allowed for a repository when it is a signed target there, or is listed by a
manifest list / OCI index that is itself allowed (so a per-platform pull of a
signed multi-arch tag works). A blob is allowed when it is the config or a
layer of an allowed manifest, and its size is the one that manifest gives.
What each manifest references is remembered (bounded); when that memory is
lost, it is rebuilt from the signed targets. Manifest bytes are checked
against the digest and length before anyone sees them, and kept in a memory
cache bounded by bytes.
"""

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from cachetools import LRUCache

from proxy.errors import RegistryError
from proxy.singleflight import SingleFlight
from proxy.trust.errors import DigestNotSigned
from proxy.trust.notary import NotaryClient
from proxy.trust.repository import TrustedRepository
from proxy.upstream import MANIFEST_MEDIA_TYPES, Upstream

log = logging.getLogger("pullgate.gate")

REMEMBERED_MANIFESTS = 65536
EXPAND_CONCURRENCY = 8
MAX_INDEX_DEPTH = 4
MANIFEST_READ_BYTES = 4 << 20  # the manifest size the OCI spec has every registry accept
MANIFEST, BLOB = "manifest", "blob"


@dataclass(frozen=True)
class Manifest:
    """Verified manifest bytes, as the upstream sent them, and what they reference."""

    digest: str
    body: bytes
    content_type: str
    references: "References"


@dataclass(frozen=True)
class References:
    """Digests a manifest names, with their sizes: child manifests (of an index) and blobs."""

    manifests: dict[str, int]
    blobs: dict[str, int]

    def of(self, kind: str) -> dict[str, int]:
        return self.manifests if kind == MANIFEST else self.blobs


class Gate:
    """Decides and fetches for one upstream registry and its trust server.

    ``open_blobs`` names repositories whose blobs are served without the check
    that a signed manifest references them (they are content-addressed and
    still verified against their digest); ``"*"`` means every repository.
    """

    def __init__(self, notary: NotaryClient, upstream: Upstream, gun_prefix: str, cache_bytes: int,
                 open_blobs: frozenset[str] = frozenset()) -> None:
        self.notary = notary
        self.upstream = upstream
        self.gun_prefix = gun_prefix
        self.open_blobs = open_blobs
        self._manifests: LRUCache[tuple[str, str], Manifest] = LRUCache(
            maxsize=max(cache_bytes, 1), getsizeof=lambda m: len(m.body) or 1
        )
        # (repository, manifest) -> what it references; (kind, repository, digest) -> manifests naming it
        self._references: LRUCache[tuple[str, str], References] = LRUCache(maxsize=REMEMBERED_MANIFESTS)
        self._parents: LRUCache[tuple[str, str, str], frozenset[str]] = LRUCache(maxsize=4 * REMEMBERED_MANIFESTS)
        self._fetches: SingleFlight[Manifest] = SingleFlight()

    def gun(self, name: str) -> str:
        return f"{self.gun_prefix}/{name}"

    async def repository(self, name: str) -> TrustedRepository:
        return await self.notary.repository(self.gun(name))

    async def manifest_for_tag(self, name: str, tag: str, client_accept: Sequence[str]) -> Manifest:
        target = (await self.repository(name)).resolve(tag)
        return await self._verified(name, target.digest, frozenset({target.length}), client_accept)

    async def manifest_for_digest(self, name: str, digest: str, client_accept: Sequence[str]) -> Manifest:
        repository = await self.repository(name)
        lengths = await self._allowed(repository, name, digest, MANIFEST, client_accept)
        manifest = await self._by_digest(name, digest, lengths, client_accept)
        if len(manifest.body) not in lengths:  # a size signed wrongly: an index may list the true one
            await self._expand(repository, name, client_accept)
            lengths = self._allowed_lengths(repository, name, digest, MANIFEST)
        return self._checked(name, manifest, lengths)

    async def blob_sizes(self, name: str, digest: str) -> frozenset[int] | None:
        """The sizes signed manifests give the blob; None where blobs are open (size unknown)."""
        if "*" in self.open_blobs or name in self.open_blobs:
            return None
        return await self._allowed(await self.repository(name), name, digest, BLOB, ())

    async def _allowed(self, repository: TrustedRepository, name: str, digest: str, kind: str,
                       client_accept: Sequence[str]) -> frozenset[int]:
        """The signed lengths of ``digest`` for this repository, rebuilding what was forgotten once.

        There is one true length, but two signatures may disagree on it; the bytes decide, so
        a wrongly signed tag spoils only itself, not every other way to the same digest."""
        lengths = self._allowed_lengths(repository, name, digest, kind)
        if not lengths:
            await self._expand(repository, name, client_accept)
            lengths = self._allowed_lengths(repository, name, digest, kind)
        if not lengths:
            raise DigestNotSigned(repository.gun, digest, kind)
        return lengths

    def _allowed_lengths(self, repository: TrustedRepository, name: str, digest: str, kind: str,
                         depth: int = 0) -> frozenset[int]:
        """The lengths an allowed digest is signed with: as a signed target, or as named by an
        allowed manifest; empty when it is not allowed."""
        lengths = repository.digests.get(digest, frozenset()) if kind == MANIFEST else frozenset()
        if depth >= MAX_INDEX_DEPTH:
            return lengths
        for parent in self._parents.get((kind, name, digest), ()):
            references = self._references.get((name, parent))
            if references is not None and digest in references.of(kind) and \
                    self._allowed_lengths(repository, name, parent, MANIFEST, depth + 1):
                lengths |= {references.of(kind)[digest]}
        return lengths

    async def _expand(self, repository: TrustedRepository, name: str, client_accept: Sequence[str]) -> None:
        """Fetch the signed manifests not remembered, and the manifests their indexes list."""
        limit = asyncio.Semaphore(EXPAND_CONCURRENCY)

        async def one(digest: str, lengths: frozenset[int]) -> References:
            async with limit:
                return (await self._verified(name, digest, lengths, client_accept)).references

        level = dict(repository.digests)
        for _ in range(MAX_INDEX_DEPTH):
            # what is remembered is read in place; only the rest costs a task and an upstream fetch
            known = [r for d in level if (r := self._references.get((name, d))) is not None]
            missing = {d: n for d, n in level.items() if (name, d) not in self._references}
            fetched = await asyncio.gather(*(one(d, n) for d, n in missing.items()), return_exceptions=True)
            for digest, outcome in zip(missing, fetched):
                if isinstance(outcome, BaseException):
                    # one unreadable signed manifest must not hide what the others allow
                    log.warning("signed manifest %s of %s could not be read: %s", digest, name, outcome)
            level = {}
            for references in [*known, *fetched]:
                if isinstance(references, References):
                    for child, size in references.manifests.items():
                        level[child] = level.get(child, frozenset()) | {size}
            if not level:
                return

    async def _verified(self, name: str, digest: str, lengths: frozenset[int],
                        client_accept: Sequence[str]) -> Manifest:
        return self._checked(name, await self._by_digest(name, digest, lengths, client_accept), lengths)

    def _checked(self, name: str, manifest: Manifest, lengths: frozenset[int]) -> Manifest:
        """``manifest`` if it has one of the ``lengths`` signed for the way it was asked for: its bytes
        match its digest, but each signature that names it gives a length of its own. Only then
        does what it references count as allowed."""
        if len(manifest.body) not in lengths:
            raise self._mismatch(manifest.digest, lengths, manifest.digest, len(manifest.body))
        if (name, manifest.digest) not in self._references:
            self._remember(name, manifest)
        return manifest

    async def _by_digest(self, name: str, digest: str, lengths: frozenset[int],
                         client_accept: Sequence[str]) -> Manifest:
        """Bytes that match ``digest``, cached or fetched. They are read up to the largest signed
        length or MANIFEST_READ_BYTES, whichever is more, so that a size signed too small is
        still found to be the signature's fault, not the registry's."""
        cached = self._manifests.get((name, digest))
        if cached is not None:
            return cached
        bound = max(*lengths, MANIFEST_READ_BYTES)
        return await self._fetches.run((name, digest, bound),
                                       lambda: self._fetch(name, digest, lengths, bound, client_accept))

    async def _fetch(self, name: str, digest: str, lengths: frozenset[int], bound: int,
                     client_accept: Sequence[str]) -> Manifest:
        fetched = await self.upstream.manifest(name, digest, client_accept, bound=bound)
        actual = "sha256:" + hashlib.sha256(fetched.body).hexdigest()
        if actual != digest:
            raise self._mismatch(digest, lengths, actual, len(fetched.body))
        media_type, references = read_manifest(fetched.body)
        manifest = Manifest(digest=digest, body=fetched.body,
                            content_type=media_type or _content_type(fetched.content_type, references),
                            references=references)
        if len(manifest.body) <= self._manifests.maxsize:
            self._manifests[(name, digest)] = manifest
        return manifest

    def _mismatch(self, digest: str, lengths: frozenset[int], actual: str, actual_length: int) -> RegistryError:
        # the right bytes, of a length the trust data does not give them: the signature is what is wrong
        hint = "; the digest matches, so the tag was signed with a wrong size" if actual == digest else ""
        return RegistryError(
            502, "MANIFEST_INVALID",
            f"upstream registry {self.upstream.host} sent manifest bytes that do not match the signed "
            f"digest and length: expected {digest} ({describe_sizes(lengths)} bytes), got {actual} "
            f"({actual_length} bytes){hint}",
            {"digest": digest},
        )

    def _remember(self, name: str, manifest: Manifest) -> None:
        self._references[(name, manifest.digest)] = manifest.references
        for kind in (MANIFEST, BLOB):
            for child in manifest.references.of(kind):
                key = (kind, name, child)
                self._parents[key] = self._parents.get(key, frozenset()) | {manifest.digest}


def describe_sizes(sizes: frozenset[int]) -> str:
    """``345``, or ``345 or 999`` where signatures disagree."""
    return " or ".join(str(size) for size in sorted(sizes))


def _content_type(upstream: str, references: References) -> str:
    """For a manifest that names no ``mediaType``: the upstream's, if it is a manifest type, else OCI's."""
    if upstream.split(";")[0].strip() in MANIFEST_MEDIA_TYPES:
        return upstream
    return "application/vnd.oci.image.index.v1+json" if references.manifests else \
        "application/vnd.oci.image.manifest.v1+json"


def read_manifest(body: bytes) -> tuple[str | None, References]:
    """The ``mediaType`` a manifest declares, and the digests it names with their sizes."""
    try:
        document = json.loads(body)
    except ValueError:
        return None, References({}, {})
    if not isinstance(document, dict):
        return None, References({}, {})
    media_type = document.get("mediaType")
    blobs = [document.get("config"), *(_list(document.get("layers")))]
    return (media_type if isinstance(media_type, str) else None,
            References(manifests=_sizes(_list(document.get("manifests"))), blobs=_sizes(blobs)))


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _sizes(descriptors: list[object]) -> dict[str, int]:
    return {
        d["digest"]: d["size"]
        for d in descriptors
        if isinstance(d, dict) and isinstance(d.get("digest"), str) and isinstance(d.get("size"), int)
    }
